"""What attaching would give — computed on a skeleton, the user's model untouched.

The panel's live "trainable parameters" readout recomputes this on every change of a
setting, so it must cost milliseconds and no memory: it runs peft itself on a
meta-device skeleton of the model's architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import peft_view, stack
from ..errors import PeftMagicError
from ..fmt import strip_peft_prefix
from ..model.properties import infer_task, require_model
from ..model.skeleton import attach_on_skeleton, can_skeleton, skeleton_of
from ..peft_methods.coerce import normalize_settings
from ..peft_methods.config import attach_error, build_config
from ..peft_methods.discovery import resolve_method
from ..state import unwrap
from ..tasks.names import normalize_task


@dataclass
class Preview:
    """What attaching would give, computed on a meta-device skeleton (the model is not touched)."""

    trainable: int
    total: int
    targets: list[str]

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def preview(model: Any, method: str, *, name: str = "default", task: str | None = None,
            **settings: Any) -> Preview:
    """Trainable / total parameters and targeted modules that ``attach`` would produce.

    Raises :class:`PeftMagicError` for settings that would not attach.
    """
    stack.ensure()
    require_model(model)
    spec = resolve_method(method)
    norm = normalize_settings(spec, settings)
    base = unwrap(model)
    if not can_skeleton(base):
        raise PeftMagicError(f"cannot preview on a {type(base).__name__}: not a transformers model")
    task_type = normalize_task(task) if task else infer_task(base)
    config = build_config(spec, norm, task_type, base)
    try:
        pm = attach_on_skeleton(skeleton_of(base), config, name)
    except Exception as e:
        raise attach_error(spec, e, False) from None
    trainable, total = peft_view.trainable_counts(pm)
    return Preview(trainable, total, [strip_peft_prefix(t) for t, _ in peft_view.tuner_layers(pm)])
