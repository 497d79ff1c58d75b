"""What went wrong in a training run, as a status and one line that says what to change."""

from __future__ import annotations

from typing import Any

from ..errors import first_line
from ..fmt import fmt_bytes
from ..state import Run


def is_oom(e: BaseException) -> bool:
    """Out of memory on any device (CUDA's own error, host ``MemoryError``, or the message)."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(e, MemoryError) or (oom_types and isinstance(e, oom_types)):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def oom_advice(args: dict[str, Any]) -> str:
    """What to change after running out of memory, from the run's own settings."""
    batch = args.get("per_device_train_batch_size", 8)
    tips = []
    if batch > 1:
        tips.append(f"batch={max(1, batch // 2)} grad_accum={2 * args.get('gradient_accumulation_steps', 1)}")
    tips.append("a smaller max_len")
    if not args.get("gradient_checkpointing"):
        tips.append("gradient_checkpointing=True")
    tips.append("loading the model in 4-bit (%peft load … --4bit)")
    return ", ".join(tips)


def classify(e: BaseException, run: Run, args: dict[str, Any]) -> tuple[str, str]:
    """(status, one-line message) for an exception raised inside ``trainer.train``."""
    where = f"at step {run.steps_done}/{run.total_steps}"
    if args.get("torch_compile"):
        from .speed.compiling import failure_line

        line = failure_line(e, where)
        if line:
            return "error", line
    if is_oom(e):
        peak = f" (peak {fmt_bytes(run.peak_memory)})" if run.peak_memory else ""
        return "oom", f"out of memory {where}{peak}; the model and adapter are intact — try {oom_advice(args)}"
    return "error", f"training failed {where}: {type(e).__name__}: {first_line(e)}"
