"""Undo a failed change to a model: what an attach may alter, recorded and put back.

Why: peft modifies the user's model in place, and an attach that fails halfway (a method
without 4-bit support, a layer type it cannot wrap) leaves wrapped layers, changed
``requires_grad`` flags and dtypes behind. A snapshot taken before, restored on failure,
keeps the promise that a failed command changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .. import _heavy, peft_view
from ..model.facts import is_checkpointing, is_quantized_param
from ..model.quantized import disable_cpu_4bit_repacking
from ..state import ModelState


def snapshot(base: Any) -> dict[str, Any]:
    """What a failed attach might change on the base model, to put back."""
    return {
        "requires_grad": {n: p.requires_grad for n, p in base.named_parameters()},
        "dtype": {n: p.dtype for n, p in base.named_parameters()},
        "had_peft_config": "peft_config" in base.__dict__,
        "peft_config": base.__dict__.get("peft_config"),
        "gc": is_checkpointing(base),
    }


def restore_grads(base: Any, snap: dict[str, Any]) -> None:
    """Put the ``requires_grad`` flags back as they were."""
    for n, p in base.named_parameters():
        if n in snap["requires_grad"]:
            p.requires_grad_(snap["requires_grad"][n])


def restore(base: Any, snap: dict[str, Any]) -> None:
    """Take every peft wrapper off ``base`` and put flags, dtypes and checkpointing back."""
    peft_view.strip_tuner_layers(base)
    for n, p in base.named_parameters():
        if n in snap["dtype"] and p.dtype != snap["dtype"][n] and not is_quantized_param(p):
            p.data = p.data.to(snap["dtype"][n])
    restore_grads(base, snap)
    if snap["had_peft_config"]:
        base.__dict__["peft_config"] = snap["peft_config"]
    else:
        base.__dict__.pop("peft_config", None)
    if not snap["gc"] and is_checkpointing(base):
        with contextlib.suppress(Exception):
            base.gradient_checkpointing_disable()
    with contextlib.suppress(Exception):
        if hasattr(base, "disable_input_require_grads") and not snap["gc"]:
            base.disable_input_require_grads()


def prepare_kbit(base: Any, st: ModelState) -> bool:
    """peft's k-bit preparation (once per model); True when it ran now."""
    from peft import prepare_model_for_kbit_training

    if st.kbit_prepared:
        return False
    disable_cpu_4bit_repacking(base)
    with _heavy.quiet():
        prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                         gradient_checkpointing_kwargs={"use_reentrant": False})
    st.kbit_prepared = True
    return True
