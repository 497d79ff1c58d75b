"""Named GPUs for ``%peft plan --gpu``: memory, and what decides the training recipe.

Why a table: "will it fit on a T4?" is asked before anyone has a T4 in the kernel. A
plan needs the card's memory as the CUDA driver reports it (nvidia-smi's total, which is
what ``torch.cuda.mem_get_info`` returns — not the marketing figure), whether it has
bfloat16 (Ampere and newer; older cards train in float16), and whether torch's flash
attention runs on it (compute capability 8.0+; older cards use the memory-efficient
kernel, which stores as little for backward).

A size works too: ``24GB``, ``24G``, ``24GiB``, ``16`` — GPU memory comes in binary
sizes, so ``24GB`` is read as 24 GiB, the way nvidia-smi counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PeftMagicError, did_you_mean

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model (or a plain size): what a plan checks against."""

    name: str
    memory: int  # bytes, as the driver reports the total
    bf16: bool = True  # bfloat16 support (compute capability ≥ 8.0)
    flash: bool = True  # torch's flash-attention kernel runs (≥ 8.0)
    named: bool = True  # False for a plain size such as "24GB"

    @property
    def dtype(self) -> str:
        """The 16-bit training dtype this card would use."""
        return "bfloat16" if self.bf16 else "float16"

    @property
    def label(self) -> str:
        from ..memory import fmt_bytes

        return f"{self.name} ({fmt_bytes(self.memory)})" if self.named else f"a {fmt_bytes(self.memory)} GPU"


def _g(name: str, mib: int, ampere: bool) -> GpuSpec:
    return GpuSpec(name, mib * MIB, bf16=ampere, flash=ampere)


#: name → spec; memory in MiB as nvidia-smi reports the total.
GPUS: dict[str, GpuSpec] = {g.name.lower(): g for g in [
    _g("K80", 11441, False),
    _g("P100", 16280, False),
    _g("T4", 15360, False),
    _g("V100-16GB", 16384, False),
    _g("V100-32GB", 32768, False),
    _g("RTX-2080-Ti", 11264, False),
    _g("RTX-3060", 12288, True),
    _g("RTX-3080", 10240, True),
    _g("RTX-3090", 24576, True),
    _g("RTX-4070", 12282, True),
    _g("RTX-4080", 16376, True),
    _g("RTX-4090", 24564, True),
    _g("RTX-5090", 32607, True),
    _g("A10", 23028, True),
    _g("A10G", 23028, True),
    _g("A4000", 16376, True),
    _g("A5000", 24564, True),
    _g("A6000", 49140, True),
    _g("L4", 23034, True),
    _g("L40S", 46068, True),
    _g("A100-40GB", 40960, True),
    _g("A100-80GB", 81920, True),
    _g("H100", 81559, True),
    _g("H100-NVL", 95830, True),
    _g("H200", 143771, True),
    _g("B200", 183359, True),
]}

ALIASES: dict[str, str] = {
    "v100": "v100-16gb",
    "a100": "a100-40gb",
    "a100-40g": "a100-40gb",
    "a100-80g": "a100-80gb",
    "a100-40": "a100-40gb",
    "a100-80": "a100-80gb",
    "h100-80gb": "h100",
    "h100-sxm": "h100",
    "h100-pcie": "h100",
    "rtx-a6000": "a6000",
    "rtx-a5000": "a5000",
    "rtx-a4000": "a4000",
    "3090": "rtx-3090",
    "4090": "rtx-4090",
    "5090": "rtx-5090",
    "3060": "rtx-3060",
    "3080": "rtx-3080",
    "4070": "rtx-4070",
    "4080": "rtx-4080",
    "2080ti": "rtx-2080-ti",
    "rtx-2080ti": "rtx-2080-ti",
    "tesla-t4": "t4",
    "colab": "t4",
}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(g|gb|gib|gi)?$", re.I)


def _key(name: str) -> str:
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    key = key.replace("nvidia-", "").replace("geforce-", "")
    key = re.sub(r"^rtx(\d)", r"rtx-\1", key)
    return key


def gpu_spec(name: str | int | float) -> GpuSpec:
    """The :class:`GpuSpec` for a GPU name (``T4``, ``A100-80GB``, ``rtx 4090``) or a size
    (``24GB``, ``24``). Raises :class:`PeftMagicError` naming the known GPUs otherwise."""
    if isinstance(name, (int, float)):
        name = str(name)
    text = str(name).strip()
    m = _SIZE.match(text)
    if m:
        size = float(m.group(1))
        if size <= 0:
            raise PeftMagicError(f"GPU memory must be positive, got '{text}'")
        return GpuSpec(f"{size:g} GB", int(size * GIB), named=False)
    key = _key(text)
    key = ALIASES.get(key, key)
    spec = GPUS.get(key)
    if spec is None:
        hint = did_you_mean(key, list(GPUS) + list(ALIASES))
        raise PeftMagicError(f"unknown GPU '{text}'" + (f": {hint}" if hint else ""),
                             "give a size such as 24GB, or one of: " + ", ".join(g.name for g in GPUS.values()))
    return spec


