"""GGUF: llama.cpp's converter run on the merged folder, in a subprocess, with its progress.

Why a subprocess with this venv's Python: the converter imports its own copy of gguf-py
(it puts ``gguf-py/`` first on its path), which must match the converter's code — the
``gguf`` package installed for transformers' GGUF loader may be another version. In a
child process the two can never mix, a converter crash cannot take the kernel down,
and Ctrl-C stops it cleanly (the child is terminated, the half-written file goes with
the export's temporary folder).

Progress: the converter logs each tensor and the total size, then draws a ``Writing``
bar on stderr; both are read line by line (``\\r`` counts as a line end) and turned
into ``export`` events, throttled once here. What it reports setting — the chat
template, the special tokens — is read from the same log and shown in the result.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PeftMagicError
from .converter import Converter

#: output types of llama.cpp's converter that make sense for a fine-tuned model
#: (``tq1_0`` / ``tq2_0`` are for ternary models only), with what each is for
QUANTS = {
    "f16": "16-bit floats: the reference for llama.cpp, no loss",
    "bf16": "bfloat16: no loss for models trained in bf16; needs a llama.cpp build with bf16",
    "q8_0": "8-bit blocks: half the size of f16, nearly lossless",
    "f32": "32-bit floats: twice f16, for checking only",
}
DEFAULT_QUANT = "f16"

_SIZE = re.compile(r"n_tensors = (\d+), total_size = ([\d.]+)([KMGT]?)")
_PERCENT = re.compile(r"Writing:\s+(\d+)%")
_SPECIAL = re.compile(r"Setting special token type (\w+) to (\d+)")
_ADD = re.compile(r"Setting add_(\w+)_token to (\w+)")
_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def check_quant(quant: str | None) -> str:
    q = (quant or DEFAULT_QUANT).lower()
    if q not in QUANTS:
        raise PeftMagicError(f"unknown GGUF type '{quant}'", "use one of " + ", ".join(QUANTS))
    return q


def check_requirements() -> None:
    """The converter's own imports that are not peft_magic's dependencies, checked before writing."""
    import importlib.util

    for module, package in (("sentencepiece", "sentencepiece"), ("numpy", "numpy")):
        if importlib.util.find_spec(module) is None:
            raise PeftMagicError(f"llama.cpp's converter needs {package}, which is not installed: nothing was written",
                                 f"pip install {package} (or pip install peft_magic[gguf])")


def check_architecture(conv: Converter, architecture: str) -> None:
    """One line, before anything is written, for an architecture the converter does not know."""
    known = conv.architectures()
    if known and architecture not in known:
        raise PeftMagicError(f"llama.cpp's converter ({conv.origin}) cannot convert the {architecture} "
                             "architecture to GGUF: nothing was written",
                             "export it as a merged model (format merged) for transformers, or use a llama.cpp "
                             f"that knows {architecture} (PEFT_MAGIC_LLAMA_CPP)")


@dataclass
class ConvertLog:
    """What the converter said it did."""

    architecture: str | None = None
    chat_template: bool = False
    special: dict[str, int] = field(default_factory=dict)  # bos / eos / pad / unk → token id
    add: dict[str, bool] = field(default_factory=dict)  # add_bos / add_eos
    total_bytes: int | None = None
    lines: list[str] = field(default_factory=list)

    def read(self, line: str) -> float | None:
        """Take one line of the converter's output; the written fraction when it says one."""
        if "Model architecture:" in line:
            self.architecture = line.rsplit(":", 1)[1].strip()
        if "Setting chat_template to" in line:
            self.chat_template = True
        m = _SPECIAL.search(line)
        if m:
            self.special[m.group(1)] = int(m.group(2))
        m = _ADD.search(line)
        if m:
            self.add[m.group(1)] = m.group(2) == "True"
        m = _SIZE.search(line)
        if m:
            self.total_bytes = int(float(m.group(2)) * _UNITS[m.group(3)])
        m = _PERCENT.search(line)
        if m:
            return int(m.group(1)) / 100
        if line.strip() and not line.startswith("Writing:"):
            self.lines = (self.lines + [line.strip()])[-40:]
        return None

    def failure(self) -> str:
        """The converter's own words for why it stopped (its error line, else its last line)."""
        for line in reversed(self.lines):
            if line.startswith(("ERROR:", "NotImplementedError", "ValueError", "KeyError", "RuntimeError",
                                "ModuleNotFoundError", "ImportError", "AssertionError", "TypeError")):
                return line.split(":", 1)[1].strip() if line.startswith("ERROR:") else line
        return self.lines[-1] if self.lines else "it stopped without saying why"


def convert(conv: Converter, src: Path, out: Path, quant: str, *, model_name: str | None = None,
            on_progress: Callable[[float], None] | None = None) -> ConvertLog:
    """Convert the transformers folder ``src`` into the GGUF file ``out``."""
    cmd = [sys.executable, str(conv.script), str(src), "--outfile", str(out), "--outtype", quant]
    if model_name:
        cmd += ["--model-name", model_name]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, always
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    log = ConvertLog()

    def sink(line: str) -> None:
        frac = log.read(line)
        if frac is not None and on_progress is not None:
            on_progress(frac)

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            errors="replace", env=env, cwd=str(conv.root))
    try:  # read here, in the caller's thread: progress events and Ctrl-C arrive where they belong
        buf = ""
        for chunk in iter(lambda: proc.stdout.read(256), ""):  # type: ignore[union-attr]
            parts = re.split(r"[\r\n]", buf + chunk)
            buf = parts.pop()
            for part in parts:
                sink(part)
        if buf:
            sink(buf)
        rc = proc.wait()
    except BaseException:  # Ctrl-C (KeyboardInterrupt) or anything else: the child goes too
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if rc != 0 or not out.is_file():
        raise PeftMagicError(f"llama.cpp's converter failed: {log.failure()}; nothing was written",
                             "the export's temporary folder was removed; a merged export (format merged) "
                             "does not need the converter")
    return log
