"""Will training the model *as it is now* fit — the quick question ``%peft train`` asks first.

Fast (meta-device traces of the live model's own setup: its adapters, dtypes, 4-bit
layers), and it never raises for ordinary models: what it cannot estimate comes back as
"unknown" with the reason.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .. import stack
from ..errors import PeftMagicError, first_line
from ..fmt import fmt_bytes
from ..memory import device_of
from ..state import is_peft_model, state_for
from .device import resolve_target
from .estimate import Estimator, parts_of
from .results import FitVerdict, Parts, Target
from .search import largest
from .sketch import resolve_optimizer, tensor_accounting
from .subject import subject_of


def positive(name: str, value: Any) -> int:
    """A whole number ≥ 1 (batch, seq, grad_accum), or one line saying what was wrong."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise PeftMagicError(f"{name} must be a whole number, got {value!r}") from None
    if v < 1 or v != value:
        raise PeftMagicError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return v


def live_estimate(model: Any, batch: int, seq: int, checkpointing: bool, optim: str,
                  target: Target | None = None, fused: bool = False) -> tuple[Parts, Target, Estimator, Any]:
    """Parts for training ``model`` exactly as it is now (its adapters, dtype, quantization);
    ``fused``: with the loss computed without the logits, as a fused run computes it."""
    opt = resolve_optimizer(optim)
    subject = subject_of(model, None)
    target = target or resolve_target(None, None, model)
    est = Estimator(subject, None, target, checkpointing, None, fused)
    account = tensor_accounting(model, cuda=target.cuda)
    parts = parts_of(account, est.step(batch, seq), opt, target, is_full(model))
    return parts, target, est, account  # est.step(batch, seq) is cached


def is_full(model: Any) -> bool:
    """A model without adapters trains its own weights (full fine-tuning)."""
    st = state_for(model)
    return not is_peft_model(model) and not (st is not None and st.peft_model is not None)


def resident_bytes(model: Any, target: Target) -> int:
    """Bytes of the model already on the target device (part of the estimate, not of free)."""
    if target.named:
        return 0
    dev = device_of(model)
    if dev.split(":")[0] != target.kind:
        return 0
    return tensor_accounting(model, cuda=target.cuda).total


def check_fit(model: Any, *, batch: int, seq: int, grad_accum: int = 1, gradient_checkpointing: bool = False,
              optim: str = "adamw", fused_loss: bool = False) -> FitVerdict:
    """Will training ``model`` as it is now fit on its device at ``batch`` × ``seq``
    (``fused_loss``: with the run's loss computed without the logits)?

    Fast (meta-device traces, no real forward) and never raises for ordinary models:
    anything it cannot estimate comes back as ``fits=None`` with the reason in
    ``message``. ``message`` is one line, ready to print as a warning.
    """
    try:
        stack.ensure()
        batch, seq = positive("batch", batch), positive("seq", seq)
        parts, target, est, account = live_estimate(model, batch, seq, gradient_checkpointing, optim,
                                                    fused=fused_loss)
    except Exception as e:
        msg = e.message if isinstance(e, PeftMagicError) else first_line(e)
        return FitVerdict(None, 0, None, f"could not estimate the memory of this run: {msg}")
    resident = resident_bytes(model, target)
    available = None if target.available is None else target.available + resident
    total = parts.total
    where = target.device if target.kind != "cpu" else "this machine's RAM"
    run = f"batch {batch} × seq {seq}" + (f", ×{grad_accum} accumulation" if grad_accum > 1 else "")
    if available is None:
        return FitVerdict(None, total, None, f"estimated {fmt_bytes(total)} for this run ({run}); "
                          f"free memory on {where} is unknown", parts, target.device)
    fits = total <= available
    free_text = (f"{fmt_bytes(available)} for it (the model's {fmt_bytes(resident)} plus "
                 f"{fmt_bytes(target.available)} free)" if resident else f"{fmt_bytes(available)} free")
    if fits:
        msg = f"estimated {fmt_bytes(total)} for this run ({run}); {where} has {free_text}"
        return FitVerdict(True, total, available, msg, parts, target.device)
    hints = fit_hints(est, account, optim, target, resident, batch, seq, gradient_checkpointing)
    msg = (f"estimated {fmt_bytes(total)} for this run ({run}) but {where} has {free_text}"
           + (f" — try {' or '.join(hints)}" if hints else ""))
    return FitVerdict(False, total, available, msg, parts, target.device)


def fit_hints(est: Estimator, account: Any, optim: str, target: Target, resident: int, batch: int, seq: int,
               checkpointing: bool) -> list[str]:
    opt = resolve_optimizer(optim)
    full = is_full(est.subject.live)
    room = Target(target.kind, target.label, (target.available or 0) + resident, target.dtype, target.kernel,
                  0, target.device, target.named)
    hints: list[str] = []
    with contextlib.suppress(Exception):
        def fits(b: int, s: int) -> bool:
            return parts_of(account, est.step(b, s), opt, room, full).total <= (room.available or 0)

        if batch > 1:
            b = largest(lambda x: fits(x, seq), 1, batch - 1)
            if b:
                hints.append(f"batch={b}" + (f" with grad_accum={-(-batch // b)}" if b < batch else ""))
        if not checkpointing and not est.checkpointing:
            hints.append("gradient checkpointing")
        if not hints and seq > 64:
            s = largest(lambda x: fits(batch, x), 64, seq - 1)
            if s:
                hints.append(f"seq={s}")
        if account.quantized_layers == 0:
            hints.append("QLoRA (load with --4bit)")
    return hints
