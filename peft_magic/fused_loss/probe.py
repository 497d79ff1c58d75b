"""Before the first fused step trains: does the fused loss equal this model's own loss?

Architectures differ in what they do between the decoder and the loss (scaling, soft-
capping, auxiliary losses, how the loss is normalised), and a new one may do something
:mod:`head` does not know. So once per run, on one row of the first batch (a window of at
most 64 label positions), the model computes its own logits and loss and the fused path
computes its own, in eval mode (no dropout), without gradients, with the random state put
back as it was (the run's dropout masks are the standard path's). The probe answers:

* whether the logits the fused path makes from the hidden states are the model's own
  (elementwise, to 2e-5 of their largest value in fp32; 2e-2 in 16-bit), and
* how the model normalises its loss: ``"sum"`` — the sum divided by the Trainer's
  ``num_items_in_batch`` (transformers' causal-LM loss), or ``"mean"`` — divided by its own
  count of targets (T5's loss, which ignores ``num_items_in_batch``). The probe passes a
  deliberately wrong ``num_items_in_batch`` to tell the two apart.

Anything else is a refusal with the reason, and the run trains with the model's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .head import IGNORE, NotFusable
from .kernels import run

#: label positions the probe looks at (from a little before the first target)
WINDOW = 64


@dataclass
class Verdict:
    """The probe's answer: how to normalise (``None``: do not fuse, and why)."""

    reduction: str | None  # "sum" (÷ num_items_in_batch) | "mean" (÷ the count of targets)
    reason: str = ""


def sub_batch(inputs: dict[str, Any], window: int = WINDOW) -> dict[str, Any] | None:
    """One row of the batch (the one with the most targets), cut to ``window`` label
    positions around its first target; ``None`` when no row has a target."""
    import torch

    labels = inputs["labels"]
    rows, length = labels.shape[0], labels.shape[-1]
    valid = labels != IGNORE
    counts = valid.reshape(rows, -1).sum(-1)
    r = int(counts.argmax())
    if int(counts[r]) == 0:
        return None
    first = int(valid[r].nonzero()[0][0]) if valid.dim() > 1 else 0
    a = max(0, first - 8)
    b = min(length, a + window)
    out: dict[str, Any] = {}
    for k, v in inputs.items():
        if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == rows:
            v = v[r:r + 1]
            if v.dim() >= 2 and v.shape[1] == length:
                v = v[:, a:b]
        out[k] = v
    return out


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def probe(model: Any, inputs: dict[str, Any], lm: Any, kernel: str, pass_num_items: bool) -> Verdict:
    """Compare the fused loss with ``model``'s own on a small part of ``inputs`` (see the module
    docstring); ``pass_num_items``: the Trainer gives this model ``num_items_in_batch``."""
    import torch

    sub = sub_batch(inputs)
    if sub is None:
        return Verdict(None, "no row of the first batch has a label to predict")
    was_training = model.training
    device = inputs["labels"].device
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            model.eval()
            hidden = lm.hidden_states(model, sub)
            h, y = lm.flat(hidden, sub["labels"])
            n = int(y.shape[0])
            if n == 0:
                return Verdict(None, "the probe's row has no target after the label shift")
            ours = float(run(kernel, lm, h, y, 1.0))
            wrong = n + 7  # a count no normalisation would use by accident
            extra = {"num_items_in_batch": torch.tensor(wrong, device=device)} if pass_num_items else {}
            out = model(**sub, **extra)
            reference = getattr(out, "logits", None)
            half = reference is not None and reference.dtype in (torch.float16, torch.bfloat16)
            tol_logits, tol_loss = (2e-2, 2e-2) if half else (2e-5, 1e-4)
            if reference is not None and reference.shape[:-1] == hidden.shape[:-1]:
                mine = lm.logits(hidden)
                if mine.shape == reference.shape:
                    diff = float((mine.float() - reference.float()).abs().max())
                    scale = float(reference.float().abs().max())
                    if diff > tol_logits * max(scale, 1.0):
                        return Verdict(None, f"{type(lm.base).__name__} does something to its logits that the fused "
                                             f"loss does not reproduce (they differ by {diff:.3g})")
            own = getattr(out, "loss", None)
            if own is None:
                return Verdict(None, "the model computed no loss of its own to compare with")
            own = float(own)
    except NotFusable as e:
        return Verdict(None, str(e))
    finally:
        model.train(was_training)
    candidates = ([("sum", ours / wrong)] if pass_num_items else []) + [("mean", ours / n)]
    for reduction, value in candidates:
        if _close(own, value, tol_loss):
            return Verdict(reduction)
    return Verdict(None, f"{type(lm.base).__name__}'s own loss is {own:.6g} where the fused loss gives "
                         f"{ours / n:.6g}")
