"""Where llama.cpp's converter comes from: what is kept of the sdist, the order it is looked
for in, and the architectures read from its source."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.exporting import converter


def _sdist(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_keeps_the_converter_its_package_gguf_py_and_licence_only(tmp_path):
    top = f"llama_cpp_python-{converter.LLAMA_CPP_PYTHON}/"
    sdist = _sdist(tmp_path / "s.tar.gz", {
        top + "vendor/llama.cpp/convert_hf_to_gguf.py": "print('convert')",
        top + "vendor/llama.cpp/conversion/__init__.py": "",
        top + "vendor/llama.cpp/conversion/llama.py": "@ModelBase.register(\"LlamaForCausalLM\", 'MistralForCausalLM')",
        top + "vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        top + "vendor/llama.cpp/gguf-py/tests/test_x.py": "",
        top + "vendor/llama.cpp/LICENSE": "MIT",
        top + "vendor/llama.cpp/src/llama.cpp": "// C++",
        top + "llama_cpp/llama.py": "",
        top + "vendor/llama.cpp/conversion/../../../../evil.py": "",
    })
    dest = converter.extract(sdist, tmp_path / "conv")
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["LICENSE", "PROVENANCE.txt", "conversion/__init__.py", "conversion/llama.py",
                    "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert not (tmp_path / "evil.py").exists()
    assert f"llama-cpp-python {converter.LLAMA_CPP_PYTHON}" in (dest / "PROVENANCE.txt").read_text()
    conv = converter.find(dest)
    assert conv.architectures() == {"LlamaForCausalLM", "MistralForCausalLM"}


def test_found_in_order_argument_then_environment_then_cache(tmp_path, monkeypatch):
    def fake(root: Path) -> Path:
        (root / "gguf-py" / "gguf").mkdir(parents=True)
        (root / converter.SCRIPT).write_text("")
        return root

    monkeypatch.setenv("PEFT_MAGIC_CACHE", str(tmp_path / "cache" / "models"))
    monkeypatch.delenv(converter.ENV, raising=False)
    assert converter.find() is None
    with pytest.raises(PeftMagicError, match=r"run `python -m peft_magic.exporting.converter` once"):
        converter.require()
    cached = fake(converter.cache_folder())
    assert converter.find().root == cached and converter.find().origin.startswith("llama-cpp-python")
    checkout = fake(tmp_path / "llama.cpp")
    monkeypatch.setenv(converter.ENV, str(checkout))
    assert converter.find().root == checkout
    other = fake(tmp_path / "other")
    assert converter.find(other).root == other
    monkeypatch.setenv(converter.ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(PeftMagicError, match="PEFT_MAGIC_LLAMA_CPP=.* holds no llama.cpp converter"):
        converter.find()


def test_the_pinned_converter_knows_llama_and_not_opt():
    conv = converter.require()  # `make gguf-converter` (part of make test) fetched it
    known = conv.architectures()
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Gemma2ForCausalLM", "Phi3ForCausalLM",
            "Qwen2ForCausalLM", "GPT2LMHeadModel"} <= known
    assert "OPTForCausalLM" not in known and len(known) > 200
