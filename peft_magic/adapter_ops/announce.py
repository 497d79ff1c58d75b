"""Telling the faces (the panel, the status bar) that an adapter changed, with its counts.

One function, so every adapter operation announces the same event with the same fields.
"""

from __future__ import annotations

from typing import Any

from .. import events, peft_view
from ..model.properties import count_params
from ..state import ModelState, is_peft_model


def emit_adapter(st: ModelState, model: Any, name: str | None, method: str | None, action: str,
                 counts: tuple[int, int] | None = None) -> None:
    """Tell the faces (panel, status bar) that an adapter changed, with the new counts
    (``counts``: (trainable, total) when the caller has them already)."""
    trainable, total = counts or (None, None)
    try:
        if counts is not None:
            pass
        elif is_peft_model(model):
            trainable, total = peft_view.trainable_counts(model)
        else:
            total, trainable = count_params(model), count_params(model, trainable_only=True)
    except Exception:
        pass
    events.emit("adapter", model_id=st.model_id, adapter=name, method=method, action=action,
                trainable=trainable, total=total)
