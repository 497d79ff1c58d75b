"""What an export will take on disk, and whether it fits — said before anything is written.

Why before: notebook disks are small (Colab's and Kaggle's fill up with one 7B model in
two formats), and a converter that dies at 90% with "No space left on device" has cost
minutes and left a half-written file. A GGUF export needs room for two copies at once:
the merged weights the converter reads (deleted when it is done) and the GGUF file.

The free space is read with ``shutil.disk_usage`` on the nearest existing folder of the
target. :func:`check` takes ``free_bytes`` instead of that reading when given (the
``free_bytes=`` argument of ``peft_magic.export``): a dry run on a disk you will mount
later, and the tests of the refusal.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import PeftMagicError
from ..fmt import fmt_bytes

#: GGUF bytes per weight of the converter's output types (q8_0: blocks of 32 int8 + one f16 scale)
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
#: configs, card, Modelfile, loss curve
SMALL_FILES = 256 * 2**10
_TOKENIZER_BYTES: dict[int, int] = {}


@dataclass(frozen=True)
class DiskNeeds:
    """Bytes an export leaves at its path, and the most it holds on disk at one moment."""

    final: int
    peak: int
    where: Path  # the folder whose file system is checked
    free: int | None = None  # bytes free there (None: unknown)

    @property
    def fits(self) -> bool:
        return self.free is None or self.peak <= self.free

    def line(self) -> str:
        """``writes about 270 MB (810 MB while converting) · 12.3 GB free on /content``."""
        text = f"writes about {fmt_bytes(self.final)}"
        if self.peak > self.final:
            text += f" ({fmt_bytes(self.peak)} while converting)"
        if self.free is not None:
            text += f" · {fmt_bytes(self.free)} free on {self.where}"
        return text


def existing_folder(target: Path) -> Path:
    """The nearest folder of ``target`` that exists (where the new folder will be made)."""
    p = Path(target).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


def free_space(target: Path) -> int | None:
    try:
        return int(shutil.disk_usage(existing_folder(target)).free)
    except OSError:
        return None


def tokenizer_bytes(tokenizer: object) -> int:
    """About what the tokenizer's files take (its JSON form; 16 MB where it has none)."""
    key = id(tokenizer)
    if key not in _TOKENIZER_BYTES:
        try:
            _TOKENIZER_BYTES[key] = len(tokenizer.backend_tokenizer.to_str()) + SMALL_FILES  # type: ignore[attr-defined]
        except Exception:
            _TOKENIZER_BYTES[key] = 16 * 2**20
    return _TOKENIZER_BYTES[key]


def needs(fmt: str, full_bytes: int, weights: int, quant: str | None, target: Path,
          free_bytes: int | None = None, tokenizer: object = None) -> DiskNeeds:
    """What exporting a model of ``weights`` weights (``full_bytes`` merged) in ``fmt`` takes."""
    where = existing_folder(target)
    free = free_space(target) if free_bytes is None else int(free_bytes)
    tok = tokenizer_bytes(tokenizer) if tokenizer is not None else 16 * 2**20
    if fmt == "merged":
        final = full_bytes + tok
        return DiskNeeds(final, final, where, free)
    gguf = int(weights * BYTES_PER_WEIGHT.get(quant or "f16", 2.0)) + tok // 2  # the vocabulary goes in too
    final = gguf + SMALL_FILES
    return DiskNeeds(final, final + full_bytes + tok, where, free)


def check(n: DiskNeeds, what: str) -> None:
    """One line, before anything is written, when ``n`` does not fit."""
    if n.fits:
        return
    during = f" ({fmt_bytes(n.peak - n.final)} of merged weights while converting, then the "\
             f"{fmt_bytes(n.final)} it keeps)" if n.peak > n.final else ""
    raise PeftMagicError(f"exporting {what} needs about {fmt_bytes(n.peak)} on {n.where}{during} and only "
                         f"{fmt_bytes(n.free)} is free: nothing was written",
                         "free space (old checkpoints and exports), or export to a folder on a disk with room")
