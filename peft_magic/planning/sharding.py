"""``%peft plan --gpus N --strategy ddp|fsdp|deepspeed``: the memory *each* GPU needs.

A plan row counts one process training alone. With N GPUs each process holds:

=============  =========================================================  ==========================
strategy       sharded by N                                                added per GPU
=============  =========================================================  ==========================
ddp            nothing: the full model on every GPU                        DDP's gradient buckets (a
                                                                           copy of the gradients)
deepspeed      ZeRO-2: gradients and optimizer states (and the optimizer  –
 ``--zero 2``  step's temporaries)
fsdp,          ZeRO-3 / FULL_SHARD: weights, adapter, gradients, optimizer  the gathered full weights of
deepspeed 3    states (and the optimizer step's temporaries)              two blocks (the one computing
                                                                           and the one prefetched)
=============  =========================================================  ==========================

Activations are per GPU already (``batch`` is per process), so they do not change; the
global batch is batch × N × grad_accum. On CUDA the runtime part (context, a fragmentation
margin on the total) is recomputed for the smaller per-GPU total.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PeftMagicError, did_you_mean
from .estimate import CUDA_SLACK
from .results import Parts, Target

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
_ALIASES = {"deepspeed": "zero2", "ds": "zero2", "zero-2": "zero2", "zero-3": "zero3", "zero_2": "zero2",
            "zero_3": "zero3", "full_shard": "fsdp", "fsdp2": "fsdp"}
LABELS = {"ddp": "DDP", "fsdp": "FSDP FULL_SHARD", "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3"}


def resolve(gpus: Any, strategy: str | None, zero: Any = None) -> tuple[int, str]:
    """(GPU count, strategy key) from ``--gpus N|all`` / ``--strategy`` / ``--zero``."""
    if isinstance(gpus, str) and gpus.strip().lower() == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise PeftMagicError("--gpus all: this machine has no CUDA GPU", "give a count: --gpus 4")
    else:
        try:
            n = int(gpus)
        except (TypeError, ValueError):
            raise PeftMagicError(f"--gpus must be a count or all, got {gpus!r}") from None
        if n < 1:
            raise PeftMagicError(f"--gpus must be ≥ 1, got {n}")
    key = (strategy or "ddp").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in STRATEGIES:
        hint = did_you_mean(key, ("ddp", "fsdp", "deepspeed"))
        raise PeftMagicError(f"unknown strategy '{strategy}'" + (f": {hint}" if hint else ""),
                             "--strategy ddp, fsdp or deepspeed (with --zero 2 or 3)")
    if zero is not None:
        if key not in ("zero2", "zero3"):
            raise PeftMagicError("--zero is DeepSpeed's stage", "use it with --strategy deepspeed")
        if str(zero) not in ("2", "3"):
            raise PeftMagicError(f"--zero {zero}: ZeRO stage 2 or 3")
        key = f"zero{zero}"
    return n, key


def _runtime(target: Target, parts_total: int, extra: int) -> int:
    """The CUDA context and the fragmentation margin ``estimate.parts_of`` adds, for a total."""
    if not target.cuda:
        return 0
    return target.context + int(CUDA_SLACK * (parts_total + extra))


def per_gpu(parts: Parts, gpus: int, strategy: str, layers: int | None, target: Target) -> Parts:
    """One GPU's share of a single-process plan row under ``strategy`` on ``gpus`` GPUs."""
    pre = parts.total - parts.overhead
    # the optimizer-step temporaries above the activations: what parts_of put in overhead before the runtime part
    temporary = parts.overhead
    if target.cuda:
        temporary = max(0, round((parts.overhead - target.context - CUDA_SLACK * pre) / (1 + CUDA_SLACK)))
    n = gpus

    def shard(x: int) -> int:
        return math.ceil(x / n)

    out = replace(parts)
    extra = 0
    if strategy == "ddp":
        extra = parts.gradients if n > 1 else 0
    elif strategy == "zero2":
        out.gradients, out.optimizer, temporary = shard(parts.gradients), shard(parts.optimizer), shard(temporary)
    else:  # fsdp / zero3: everything the model holds is sharded; two blocks are gathered at a time
        out.weights, out.adapter = shard(parts.weights), shard(parts.adapter)
        out.gradients, out.optimizer, temporary = shard(parts.gradients), shard(parts.optimizer), shard(temporary)
        block = (parts.weights + parts.adapter) / max(1, layers or 1)
        extra = int(2 * block * (n - 1) / n)  # the rest of two blocks beyond this GPU's own shard
    out.overhead = 0
    body = out.total
    out.overhead = temporary + extra + _runtime(target, body, temporary + extra)
    return out


def shard_rows(rows: list[Any], gpus: int, strategy: str, layers: int | None, target: Target) -> list[str]:
    """Replace every row's parts with one GPU's share (in place); returns the plan's notes."""
    for row in rows:
        if row.parts is not None:
            row.parts = per_gpu(row.parts, gpus, strategy, layers, target)
        if row.other is not None:
            row.other = per_gpu(row.other, gpus, strategy, layers, target)
    what = {"ddp": "the full model on every GPU; overhead includes DDP's gradient buckets",
            "zero2": "gradients and optimizer states sharded",
            "fsdp": "weights, gradients and optimizer states sharded; overhead includes two gathered blocks",
            "zero3": "weights, gradients and optimizer states sharded; overhead includes two gathered blocks"}[strategy]
    notes = [f"per GPU with {gpus} GPUs and {LABELS[strategy]}: {what}; activations are per GPU "
             f"(batch is per process, so the global batch is batch × {gpus} × grad_accum)"]
    if strategy != "ddp":
        notes.append("the largest batch / seq are searched without sharding (conservative)")
    if not target.cuda:
        notes.append("no GPU named: per-device figures against this machine's memory (pass --gpu NAME to plan "
                     "for a GPU)")
    return notes
