"""Which loss a training run computes — the fused one, which never builds the
``[batch, seq, vocab]`` logits (``peft_magic.fused_loss``), or the model's own — and the
Trainer that computes it.

The ``fused_loss`` setting of ``%peft train``:

* ``auto`` (default): fused for a causal-LM or seq2seq head when one batch's fp32 logits
  would take at least 64 MiB (``fused_loss.worth_it``: SmolLM2 at batch 8 × 512 is 805 MB a
  copy), or 16 MiB when at most half the positions have a target (completion and chat
  data, where the fused path is also faster: it makes no logits for the prompt), the
  model's own loss otherwise — and always for classifiers and other heads;
* ``True`` / ``on``: fused whenever the model allows it; ``chunked`` / ``liger`` / ``cce``:
  fused with that kernel (otherwise the kernel is picked by ``fused_loss.pick``);
* ``False`` / ``off``: the model's own loss, through transformers' ``Trainer`` unchanged.

What cannot be fused falls back to the model's own loss with the reason: a head the fused
path does not reproduce (found before training, or by the probe on the first step), a
method with a loss of its own (CPT), label smoothing (the Trainer's own loss),
``compile=True``, and weights sharded by FSDP / DeepSpeed (the head's weight is gathered
inside the model's forward only). Where the user asked for the fused loss, that reason is
a warning of the run; the run's ``loss_path`` and the display's "loss path" readout say
which loss ran: ``fused (chunked, 25 chunks)``, ``fused (liger)``, ``standard``.

The fused step is the Trainer's own in every other way: the same call of the model (the
hidden states come from a hook), the Trainer's ``num_items_in_batch`` normalisation
(including the prompt methods' count of every real label), the same autocast, and the
same scaling for several processes afterwards — so the loss and every gradient equal the
standard path's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .. import events, fused_loss
from ..peft_methods.behaviour import behaviour

LM_TASKS = fused_loss.LM_TASKS
LABELS = {"chunked": "chunked", "liger": "liger", "cce": "cut-cross-entropy"}
setting = fused_loss.setting  # ``fused_loss=`` as typed → auto / on / off / a kernel, or one line


@dataclass
class LossPath:
    """The loss a run computes; ``label`` is what the display and ``%peft runs`` show."""

    fused: bool
    kernel: str | None = None
    lm: Any = None  # fused_loss.LmHead
    reason: str = ""  # why not fused
    asked: bool = False  # the user asked for the fused loss (a fall-back is a warning)
    reduction: str | None = None  # "sum" / "mean", once the probe has run
    chunks: int | None = None  # chunks of the first fused step (chunked kernel)

    @property
    def label(self) -> str:
        if not self.fused:
            return "standard" + (f" ({self.reason})" if self.reason else "")
        kernel = LABELS.get(self.kernel or "", self.kernel or "")
        if self.kernel == "chunked" and self.chunks:
            kernel += f", {self.chunks} chunk{'s' * (self.chunks != 1)}"
        return f"fused ({kernel})"

    @property
    def warning(self) -> str:
        if self.fused or not self.asked:
            return ""
        return f"fused loss not used: {self.reason}; this run computes the model's own loss"


def choose(peft_model: Any, task: str, peft_type: str, args: dict[str, Any], examples: Any, device: str,
           training_args: Any = None) -> LossPath:
    """The loss a run with these settings computes (see the module docstring)."""
    want = setting(args.get("fused_loss", "auto"))
    if want == "off":
        return LossPath(False, reason="fused_loss=False")
    asked = want != "auto"

    def standard(reason: str) -> LossPath:
        return LossPath(False, reason=reason, asked=asked)

    if args.get("objective") is not None:
        return standard(f"TRL's {getattr(args['objective'], 'name', 'preference').upper()} loss")
    if task not in LM_TASKS:
        return standard(f"a {task} head has no vocabulary-sized logits" if asked else "")
    if behaviour(peft_type).token_types:
        return standard(f"{peft_type.lower()} computes a loss of its own")
    if args.get("label_smoothing_factor"):
        return standard("label smoothing is computed by the Trainer from the full logits")
    if args.get("torch_compile"):
        return standard("compile=True compiles the model's own loss")
    if training_args is not None and (getattr(training_args, "fsdp", None) or getattr(training_args, "deepspeed", None)):
        return standard("FSDP / DeepSpeed gather the head's weight only inside the model's forward")
    try:
        lm = fused_loss.locate(peft_model)
    except fused_loss.NotFusable as e:
        return standard(str(e))
    if want == "auto":
        batch = int(args.get("per_device_train_batch_size") or 8)
        rows = getattr(examples, "rows", ())
        longest = max((len(r["input_ids"]) for r in rows), default=0)
        # the rows' targets are counted only where they decide it (a causal LM under 64 MiB)
        if not fused_loss.worth_it(lm.vocab, batch, longest) and (
                lm.seq2seq or not fused_loss.worth_it(lm.vocab, batch, longest, _targets(rows))):
            # the usual case for a small run: its label stays "standard" (the display's readout
            # and %peft runs are not the place to explain a non-event)
            return LossPath(False)
    kernel = fused_loss.pick(lm, device, want if want in fused_loss.KERNELS else None)
    if kernel != "chunked":
        if not fused_loss.available(kernel):
            return standard(f"{LABELS[kernel]} is not installed (pip install "
                            f"{'liger-kernel' if kernel == 'liger' else 'cut-cross-entropy'})")
        if not device.startswith("cuda"):
            return standard(f"{LABELS[kernel]} runs on CUDA GPUs only (fused_loss=chunked runs anywhere)")
        if not lm.plain_linear:
            return standard(f"{LABELS[kernel]} takes a plain linear head; this one has an adapter or a "
                            "logit scale (fused_loss=chunked handles it)")
    return LossPath(True, kernel, lm, asked=asked)


def _targets(rows: Any, sample: int = 1000) -> float:
    """The share of a causal LM's positions that have a target (1.0 when the rows do not say),
    from the first ``sample`` rows: it is a property of the data's shape (completion, chat,
    text), and a large dataset need not be read whole before its first step."""
    positions = targets = 0
    for r in itertools.islice(rows, sample):
        labels = r.get("labels") if isinstance(r, dict) else None
        if not isinstance(labels, list):
            return 1.0
        positions += len(labels)
        targets += len(labels) - labels.count(fused_loss.IGNORE)
    return targets / positions if positions else 1.0


class FusedLoss:
    """Mixed into transformers' ``Trainer`` (see :func:`trainer_class`): ``compute_loss``
    without the logits for training steps; evaluation and everything else is the Trainer's."""

    loss_path: LossPath
    run: Any

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        path = self.loss_path
        if (return_outputs or not path.fused or not model.training or "labels" not in inputs
                or self.label_smoother is not None or self.compute_loss_func is not None):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,  # type: ignore[misc]
                                        num_items_in_batch=num_items_in_batch)
        given = num_items_in_batch if self.model_accepts_loss_kwargs else None
        with self.accelerator.autocast():
            if path.reduction is None:
                verdict = fused_loss.probe(model, inputs, path.lm, path.kernel, given is not None)
                if verdict.reduction is None:
                    self._fall_back(verdict.reason)
                    return super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]
                path.reduction = verdict.reduction
            denominator = given if path.reduction == "sum" else None
            loss, n = fused_loss.loss(model, inputs, path.lm, path.kernel, denominator)
        if path.chunks is None:
            path.chunks = max(1, -(-n // fused_loss.chunk_rows(path.lm.vocab, n))) if path.kernel == "chunked" else 0
            self._announce()
        # as Trainer.compute_loss scales a loss normalised by num_items_in_batch over several processes
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss_scale = self.accelerator.num_processes // self.get_tp_size()
            loss = loss * (loss_scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss

    def _fall_back(self, reason: str) -> None:
        path = self.loss_path
        path.fused, path.reason = False, f"fused refused: {reason}"
        self.run.warnings.append(f"fused loss refused: {reason}; this run computes the model's own loss")
        self._announce()

    def _announce(self) -> None:
        self.run.loss_path = self.loss_path.label
        events.emit("speed", run_id=self.run.run_id, loss_path=self.loss_path.label)


def trainer_class(job: Any, training_args: Any) -> type:
    """transformers' ``Trainer``, or — for a run whose loss is fused — a subclass whose
    ``compute_loss`` never builds the logits. Records the choice on the job's run."""
    from transformers import Trainer

    from ..memory import device_of

    path = choose(job.peft_model, job.task, job.peft_type, job.args, job.examples, device_of(job.peft_model),
                  training_args)
    run = job.run
    run.loss_path = path.label if job.task in LM_TASKS else None  # a classifier has no logits to speak of
    if path.warning and path.warning not in run.warnings:
        run.warnings.append(path.warning)
    if not path.fused:
        return Trainer
    return type("FusedLossTrainer", (FusedLoss, Trainer), {"loss_path": path, "run": run})
