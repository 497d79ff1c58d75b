"""The language-model head seen from its input: the hidden states it reads, and the logits
the model would make of them — without the model making them.

How the hidden states are had without the logits, for any decoder-only or encoder-decoder
model: a forward hook on the module whose output the head reads (``get_decoder()``, the
final norm already applied) keeps that output and hands the rest of the model only its
last position, so the model's own head, scaling and soft-capping run on one position
(``[batch, 1, vocab]``) instead of all of them, and the model computes no loss (it is
called without labels). The loss then calls the **head module itself** on chunks of the
kept hidden states, so a LoRA-wrapped or ``modules_to_save`` head trains exactly as in the
model's own forward.

What some architectures do to the logits is reproduced here, op for op (see
:meth:`LmHead.logits`): T5's ``scale_decoder_outputs`` (the decoder output times
``d_model ** -0.5`` before a tied head), Gemma-2-style ``final_logit_softcapping``,
Cohere's ``logit_scale`` and Granite's ``logits_scaling``. Anything else an architecture
does to its logits is caught by the probe (``probe.py``) before the first step trains, and
the run falls back to the model's own loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

IGNORE = -100


class NotFusable(Exception):
    """Why this model's loss cannot be computed without its logits (one line for the user)."""


def _base_of(model: Any) -> Any:
    """The transformers model under a PeftModel (or DDP / accelerate wrappers around either)."""
    inner = getattr(model, "module", None)
    if inner is not None and hasattr(inner, "forward") and not hasattr(model, "config"):
        model = inner  # DistributedDataParallel
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


@dataclass
class LmHead:
    """Where a language model's head reads its input, and what it does to its output."""

    base: Any  # the transformers model (PeftModel.get_base_model())
    decoder: Any  # the module whose output[0] the head reads
    head: Any  # the output-embedding module (possibly wrapped by peft)
    seq2seq: bool  # encoder-decoder: labels are not shifted
    vocab: int
    hidden: int
    pre_scale: float | None = None  # T5: the decoder output × d_model ** -0.5 before the head
    softcap: float | None = None  # logits / cap → tanh → × cap
    logit_scale: float | None = None  # logits × scale (Cohere)
    logits_divisor: float | None = None  # logits / divisor (Granite)

    # -- the head

    def logits(self, hidden: Any) -> Any:
        """The logits the model computes from ``hidden``, with the same ops in the same order."""
        import torch

        if self.pre_scale is not None:
            hidden = hidden * self.pre_scale
        out = self.head(hidden)
        if self.softcap is not None:
            out = out / self.softcap
            out = torch.tanh(out)
            out = out * self.softcap
        if self.logit_scale is not None:
            out = out * self.logit_scale
        if self.logits_divisor is not None:
            out = out / self.logits_divisor
        return out

    @property
    def plain_linear(self) -> bool:
        """The head is a bare ``nn.Linear`` (no adapter on it) with at most soft-capping after it:
        what the library kernels (Liger, cut-cross-entropy) take as a weight matrix."""
        import torch

        return type(self.head) is torch.nn.Linear and self.logit_scale is None and self.logits_divisor is None

    def trainable(self) -> list[Any]:
        """The head's parameters that train (LoRA on the head, ``modules_to_save``, full fine-tuning)."""
        return [p for p in self.head.parameters() if p.requires_grad]

    def transforms(self) -> str:
        """What is reproduced besides the head, for messages (``"soft-capping 30"``)."""
        out = []
        if self.pre_scale is not None:
            out.append("T5's output scaling")
        if self.softcap is not None:
            out.append(f"soft-capping {self.softcap:g}")
        if self.logit_scale is not None:
            out.append(f"logit scale {self.logit_scale:g}")
        if self.logits_divisor is not None:
            out.append(f"logits ÷ {self.logits_divisor:g}")
        return ", ".join(out)

    # -- the forward without the logits

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, Any]]:
        """While active, the decoder's output is kept in ``box["hidden"]`` and the rest of
        the model sees only its last position (so the model's head makes ``[batch, 1, vocab]``)."""
        box: dict[str, Any] = {}

        def hook(_module: Any, _args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                box["hidden"] = output[0]
                return (output[0][:, -1:], *output[1:])
            box["hidden"] = output[0]
            output["last_hidden_state"] = output[0][:, -1:]  # a ModelOutput: key and attribute both
            return output

        handle = self.decoder.register_forward_hook(hook)
        try:
            yield box
        finally:
            handle.remove()

    def call_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The model's inputs without the labels (so it computes no loss); an encoder-decoder
        gets the decoder inputs it would have derived from them."""
        call = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")}
        if self.seq2seq and "decoder_input_ids" not in call and "decoder_inputs_embeds" not in call:
            call["decoder_input_ids"] = self.base.prepare_decoder_input_ids_from_labels(labels=inputs["labels"])
        return call

    def hidden_states(self, model: Any, inputs: dict[str, Any]) -> Any:
        """Run ``model`` (the PeftModel, as the trainer calls it) and return the head's input."""
        with self.capture() as box:
            model(**self.call_inputs(inputs))
        if "hidden" not in box:
            raise NotFusable("the model's decoder never ran")
        return box["hidden"]

    def targets(self, labels: Any, length: int) -> Any:
        """The label each hidden position predicts, as the model's loss pairs them.

        Virtual tokens that a prompt method puts in front of the sequence have no label
        (``-100``, as peft gives them); a causal LM's position *i* predicts label *i + 1*
        (the last predicts nothing), an encoder-decoder's position *i* predicts label *i*.
        """
        import torch.nn.functional as F

        extra = length - labels.shape[-1]
        if extra < 0:
            raise NotFusable(f"the labels ({labels.shape[-1]}) are longer than the decoder's output ({length})")
        if extra:
            labels = F.pad(labels, (extra, 0), value=IGNORE)
        if not self.seq2seq:
            labels = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]
        return labels

    def flat(self, hidden: Any, labels: Any) -> tuple[Any, Any]:
        """Hidden states and targets of the positions that count, as ``[n, hidden]`` and ``[n]``.

        Positions without a target (prompts of completion data, padding, chat turns that
        are not the assistant's) need no logits at all, so they are left out before the
        head runs. On the meta device (the planner) every position is kept: the planner's
        inputs have no masked labels, and the copy is the same size.
        """
        import torch

        y = self.targets(labels.to(hidden.device), hidden.shape[1]).reshape(-1)
        h = hidden.reshape(-1, hidden.shape[-1])
        if h.device.type == "meta":
            idx = torch.arange(y.shape[0], device=h.device)
        else:
            idx = (y != IGNORE).nonzero().squeeze(1)
        return h.index_select(0, idx), y.index_select(0, idx)


def _number(cfg: Any, name: str) -> float | None:
    v = getattr(cfg, name, None)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v else None


def locate(model: Any) -> LmHead:
    """The :class:`LmHead` of a causal-LM or seq2seq model (a PeftModel or a transformers model).

    Raises :class:`NotFusable` with the reason when the model has no head to read, or adds
    something to its loss that the fused loss does not compute.
    """
    base = _base_of(model)
    cfg = getattr(base, "config", None)
    if cfg is None:
        raise NotFusable("the model has no config")
    get_head, get_decoder = getattr(base, "get_output_embeddings", None), getattr(base, "get_decoder", None)
    head = get_head() if callable(get_head) else None
    try:
        decoder = get_decoder() if callable(get_decoder) else None
    except Exception:  # noqa: BLE001 — some models raise instead of returning None
        decoder = None
    if head is None or decoder is None or decoder is base:
        raise NotFusable(f"{type(base).__name__} has no separate decoder and output head to read")
    if getattr(cfg, "output_router_logits", False):
        raise NotFusable("the model adds its router's auxiliary loss to the language-model loss")
    seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
    if seq2seq and not callable(getattr(base, "prepare_decoder_input_ids_from_labels", None)):
        raise NotFusable(f"{type(base).__name__} does not say how it derives decoder inputs from labels")
    weight = getattr(head, "weight", None)
    vocab = int(getattr(cfg, "vocab_size", 0) or (weight.shape[0] if weight is not None else 0))
    hidden = int(weight.shape[-1]) if weight is not None else int(getattr(cfg, "hidden_size", 0) or 0)
    lm = LmHead(base, decoder, head, seq2seq, vocab, hidden)
    if seq2seq and getattr(cfg, "scale_decoder_outputs", False) and getattr(cfg, "d_model", None):
        lm.pre_scale = cfg.d_model ** -0.5
    lm.softcap = _number(cfg, "final_logit_softcapping")
    lm.logit_scale = _number(cfg, "logit_scale")
    lm.logits_divisor = _number(cfg, "logits_scaling")
    if lm.logits_divisor == 1.0:
        lm.logits_divisor = None  # Granite's default: the division changes nothing
    return lm
