"""A language model's training loss without its ``[batch, seq, vocab]`` logits.

Why: with a large vocabulary the logits are most of a fine-tune's activation memory. For
SmolLM2 (49,152 tokens) at batch 8 × 512 they are 805 MB per fp32 copy, and the usual loss
holds several copies at once (the logits, their fp32 upcast, the log-softmax, its
gradient); for a 128k-vocabulary model it is gigabytes. The loss only needs, per position,
the log-sum-exp over the vocabulary and the target's logit, so it can be computed a chunk
of tokens at a time and the full logits never exist.

The pieces:

* :mod:`.head` — the hidden states the head reads (a hook on the decoder; the model itself
  computes logits for one position only), the head's own module called on chunks (so
  LoRA / ``modules_to_save`` on the head train), and the scaling / soft-capping some
  architectures apply;
* :mod:`.kernels` — linear + cross-entropy a chunk at a time: Liger-Kernel or
  cut-cross-entropy on CUDA where installed, else an autograd function of our own;
* :mod:`.probe` — once per run, the fused loss and logits against the model's own on a
  small slice of the first batch: anything the fused path does not reproduce is refused
  (one line) and the run uses the model's own loss.

``training/loss_path.py`` decides per run which loss a run uses and puts it into the
Trainer; ``planning`` traces the same code on the meta device, so ``%peft plan`` counts
what a fused step really holds.
"""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError
from .head import IGNORE, LmHead, NotFusable, locate
from .kernels import CHUNK_BYTES, KERNELS, available, chunk_rows, pick, run
from .probe import Verdict, probe

__all__ = ["IGNORE", "LmHead", "NotFusable", "locate", "loss", "planned_loss", "worth_it", "logits_bytes", "chunk_rows",
           "pick", "run", "available", "probe", "Verdict", "KERNELS", "CHUNK_BYTES", "MIN_LOGITS_BYTES", "MIN_MASKED_LOGITS_BYTES", "MASKED_SHARE", "setting",
           "LM_TASKS", "planned"]

#: the heads whose logits are vocabulary-sized
LM_TASKS = ("CAUSAL_LM", "SEQ_2_SEQ_LM")
#: ``fused_loss=`` as a user may write it → ``auto`` / ``on`` / ``off`` / a kernel
VALUES = {"auto": "auto", "true": "on", "on": "on", "yes": "on", "1": "on", "false": "off", "off": "off",
          "no": "off", "0": "off", "none": "off", **{k: k for k in KERNELS}}

#: ``fused_loss="auto"`` fuses when one batch's fp32 logits would take at least this much
#: (see ``worth_it``)
MIN_LOGITS_BYTES = 64 * 2**20
#: … or at least this much when at most :data:`MASKED_SHARE` of the positions have a target
#: (completion and chat data: the prompt's positions need no logits, and the fused path makes
#: none for them, so it is the faster one too — SmolLM2 + LoRA on prompt/completion rows of
#: ~48 tokens, one thread, ``bench/bench_speed.py completion``: 0.86–0.88× the run's time at
#: batch 4 (38 MB of logits), 0.93–0.96× at batch 2 (19 MB), the same losses)
MIN_MASKED_LOGITS_BYTES = 16 * 2**20
MASKED_SHARE = 0.5


def setting(value: Any) -> str:
    """``fused_loss=`` as typed → ``auto`` / ``on`` / ``off`` / a kernel name, or one line."""
    key = str(value).strip().lower()
    if key not in VALUES:
        raise PeftMagicError(f"fused_loss={value!r} is not a setting",
                             "fused_loss= auto (default), True, False, chunked, liger or cce")
    return VALUES[key]


def planned(value: Any, task: str | None, vocab: int, batch: int, seq: int) -> bool:
    """Whether a run with ``fused_loss=value`` fuses, as far as the planner can tell from the
    task and the shapes (the run itself may still refuse an architecture; see ``probe``; and
    it also fuses smaller logits when most positions have no target, which the planner's
    shapes do not say: its figure is then the larger one)."""
    want = setting(value)
    if want == "off" or task not in LM_TASKS:
        return False
    return want != "auto" or worth_it(vocab, batch, seq)


def logits_bytes(vocab: int, batch: int, seq: int) -> int:
    """Bytes of one batch's logits in fp32 (one copy; the plain loss holds several)."""
    return 4 * int(vocab) * int(batch) * int(seq)


def worth_it(vocab: int, batch: int, seq: int, targets: float = 1.0) -> bool:
    """Whether ``fused_loss="auto"`` fuses: one fp32 copy of the batch's logits is at least
    :data:`MIN_LOGITS_BYTES` (64 MiB), or at least :data:`MIN_MASKED_LOGITS_BYTES` (16 MiB)
    when ``targets`` — the share of positions with a target — is at most half. Below that
    the logits are a small part of the step and the fused path has only its first-step
    probe to add; above it the saving grows with batch × seq × vocabulary (SmolLM2 at
    batch 8 × 512: 805 MB a copy), and with the positions it skips."""
    size = logits_bytes(vocab, batch, seq)
    return size >= MIN_LOGITS_BYTES or (targets <= MASKED_SHARE and size >= MIN_MASKED_LOGITS_BYTES)


def loss(model: Any, inputs: dict[str, Any], lm: LmHead, kernel: str = "chunked",
         denominator: Any = None) -> tuple[Any, int]:
    """The model's loss on ``inputs`` (with ``labels``) computed without its logits, and the
    number of targets. ``denominator``: the Trainer's ``num_items_in_batch`` for a model that
    normalises by it; ``None`` divides by the count of targets (a mean)."""
    hidden = lm.hidden_states(model, inputs)
    h, y = lm.flat(hidden, inputs["labels"])
    n = int(y.shape[0])
    return run(kernel, lm, h, y, n if denominator is None else denominator), n


def planned_loss(model: Any, inputs: dict[str, Any]) -> Any:
    """The fused loss of one planner step (meta device) or measured step: chunked, a mean."""
    return loss(model, inputs, locate(model))[0]
