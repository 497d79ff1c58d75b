"""``%peft profile``: a few real training steps, profiled, that leave no trace.

Where ``%peft train … --profile`` profiles a window of a real run, this runs only
``warmup + steps`` steps (default 1 + 5; 2 warm-up steps with ``compile=True``) through
the very same ``training.run.train`` — same data handling, collator, Trainer, callbacks,
so the numbers are those of the real run — and then puts the adapter back as it was:
its tensors are restored, the run is not kept in ``%peft runs`` (nor in model cards, nor
resumable) and its checkpoints folder is removed. What comes back is the
:class:`~peft_magic.training.speed.profile_report.Profile`.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from ... import peft_view, stack
from ...errors import PeftMagicError
from ...state import is_peft_model, peft_model_for
from ..args import normalize_args
from ..run import train
from . import compiling
from .profiler import DEFAULT_STEPS, ProfileRequest


def profile(model: Any, data: Any = None, *, tokenizer: Any = None, steps: int = DEFAULT_STEPS,
            warmup: int | None = None, trace: str | None = None, adapter: str | None = None,
            **settings: Any) -> Any:
    """Profile ``steps`` training steps of the active adapter after ``warmup`` unprofiled ones;
    the model is left exactly as it was. ``settings`` as for ``train`` (``batch``, ``max_len``,
    ``compile=True``, ``checkpointing=True``, any ``TrainingArguments`` field)."""
    stack.ensure()
    steps = int(steps)
    if steps < 1:
        raise PeftMagicError(f"steps must be ≥ 1, got {steps}")
    if warmup is None:
        warmup = 2 if compiling.requested(normalize_args(settings)) else 1
    if int(warmup) < 0:
        raise PeftMagicError(f"warmup must be ≥ 0, got {warmup}")
    pm = model if is_peft_model(model) else peft_model_for(model)
    if pm is None:
        raise PeftMagicError("the model has no adapter to profile", "attach one first, e.g. %peft lora r=8")
    for key in ("steps", "max_steps", "total_steps", "epochs", "num_train_epochs", "save_to", "save_every", "keep"):
        settings.pop(key, None)
    name = adapter or peft_view.active_adapter(pm)
    saved = peft_view.adapter_state(pm, name) if name in pm.peft_config else None
    folder = tempfile.mkdtemp(prefix="peft_magic-profile-")
    try:
        run = train(pm, data, tokenizer=tokenizer, adapter=adapter, save_to=folder, autosave=False, keep_run=False,
                    profile=ProfileRequest(steps=steps, warmup=int(warmup), trace=trace),
                    steps=int(warmup) + steps, **settings)
    finally:
        if saved is not None:
            peft_view.set_adapter_state(pm, saved, name)
        shutil.rmtree(folder, ignore_errors=True)
    if run.profile is None:
        raise PeftMagicError(f"no step was profiled ({run.steps_done} ran)", "give more data or fewer warm-up steps")
    return run.profile
