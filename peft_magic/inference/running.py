"""Running a model over many inputs without changing it: eval mode, no gradients, batches.

Shared by generation, evaluation and prediction: each puts the model in eval mode for
the call (dropout off) and puts every module's own mode back afterwards, runs without
gradients, and pads its rows with the task's collator in batches on the model's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from .. import peft_view
from ..peft_methods.behaviour import behaviour
from ..state import peft_model_for
from ..tasks.families import BatchNeeds


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off while running; each module's own mode is put back afterwards. The stack's
    own notices are off too (peft's prompt methods pass ``past_key_values``, which
    transformers now calls deprecated on every forward: nothing a user can act on)."""
    from ..stack import stack_warnings_off

    training = [m for m in model.modules() if m.training]
    model.eval()
    try:
        with stack_warnings_off():
            yield
    finally:
        for m in training:
            m.training = True


def batches(rows: Sequence[dict[str, Any]], collator: Any, size: int, device: Any) -> Iterator[tuple[int, dict]]:
    """(offset, padded batch on ``device``) for consecutive slices of ``rows``."""
    for lo in range(0, len(rows), size):
        batch = collator(list(rows[lo:lo + size]))
        yield lo, {k: v.to(device) for k, v in batch.items()}


def batch_needs(model: Any) -> BatchNeeds:
    """What the model's active adapter needs in every batch besides the task's inputs
    (``task_ids``; CPT's token types)."""
    pm = peft_model_for(model)
    if pm is None or not peft_view.configs(pm):
        return BatchNeeds()
    config = pm.active_peft_config
    q = behaviour(peft_view.peft_type(config))
    offset = max(getattr(config, "cpt_tokens_type_mask", None) or [1]) if q.token_types else None
    return BatchNeeds(task_ids=q.task_ids, cpt_offset=offset)
