"""Estimating one method on one model: sketches at two depths, accounting, activations.

An :class:`Estimator` builds the method's sketches (``sketch``), reads their parameter
bytes, and traces steps (``trace``) at any batch × seq, extended along the depth line to
the full model; :func:`parts_of` assembles the parts of a plan row from them.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from ..errors import PeftMagicError, first_line
from ..model.properties import is_checkpointing
from ..peft_methods.config import build_config
from ..state import is_peft_model, state_for
from .requests import ConfigHolder, Request
from .results import Parts, Target
from .sketch import (
    Sketch,
    TensorAccount,
    account_sketch,
    add_adapters,
    attach_method,
    build_skeleton,
    config_at_depth,
    enable_checkpointing,
    layer_count,
    optimizer_bytes,
    optimizer_step_temporary,
    prepare_kbit,
    quantize_skeleton,
    reduced_depths,
)
from .subject import Subject
from .trace import StepMemory, trace_logits, trace_step

#: the caching allocator's fragmentation on top of the tensors it holds
CUDA_SLACK = 0.05


class Estimator:
    """One method on one subject: its sketches at two depths, accounting and activations.

    Activations at a (batch, seq) cost two meta traces (milliseconds to a fraction of a
    second for a 7B config); results are cached, which keeps the largest-batch and
    largest-seq searches cheap.
    """

    def __init__(self, subject: Subject, req: Request | None, target: Target, checkpointing: bool,
                 attn: str | None, fused: bool = False) -> None:
        import torch

        self.subject = subject
        # fused: the loss computed without the logits (``fused_loss``), as a fused run computes it
        self.fused = fused and subject.task in ("CAUSAL_LM", "SEQ_2_SEQ_LM")
        self.req = req
        self.target = target
        self.dtype = getattr(torch, target.dtype)
        self.checkpointing = checkpointing or bool(req and req.quantized)
        self.attn = "eager" if (attn == "eager" or target.kernel == "eager") else None
        self.layers = layer_count(subject.config)
        self.peft_config = None
        if req is not None and req.spec is not None:
            self.peft_config = build_config(req.spec, req.settings, subject.task, ConfigHolder(subject.config))
        self.depths = reduced_depths(subject.config) if self.layers else (0,)
        self._cache: dict[tuple[int, int], Any] = {}
        # Building and tracing on the meta device draws random numbers (weight init, dropout
        # masks): keep the notebook's random state exactly as it was.
        with torch.random.fork_rng(devices=[]):
            try:
                self.sketches = [self._sketch(d) for d in self.depths]
            except PeftMagicError:
                if len(self.depths) == 1:
                    raise
                self.depths = (self.layers,)
                self.sketches = [self._sketch(self.layers)]

    # -- building

    def _sketch(self, depth: int) -> Any:
        cfg = config_at_depth(self.subject.config, depth) if depth else copy.deepcopy(self.subject.config)
        if self.subject.live is not None and self.req is None:
            return self._live_sketch(cfg, depth)
        try:
            skel = build_skeleton(cfg, self.dtype, model_cls=self.subject.model_cls, task=self.subject.task,
                                  attn=self.attn)
        except Exception as e:
            raise PeftMagicError(f"cannot build {self.subject.name} on the meta device: {first_line(e)}") from None
        quantized: list[str] = []
        if self.req is not None and self.req.quantized:
            quantized = quantize_skeleton(skel, self.dtype)  # compute dtype = the training dtype
            prepare_kbit(skel)
        elif self.checkpointing:
            enable_checkpointing(skel)
        model = skel
        if self.peft_config is not None:
            model = attach_method(skel, self.peft_config)
        model.train()
        return Sketch(model, depth, account_sketch(model, self.target.cuda), quantized, self.checkpointing,
                      self.target.kernel, self.subject.task)

    def _live_sketch(self, cfg: Any, depth: int) -> Any:
        """A sketch of the live model as it is: its dtypes, 4-bit layers, checkpointing
        and attached adapters (peft configs copied, never the weights)."""
        base = self.subject.base
        skel = build_skeleton(cfg, self.dtype, model_cls=type(base),
                              attn=self.attn or getattr(base.config, "_attn_implementation", None))
        swapped = _mirror_layout(skel, base, self.dtype)
        if self.checkpointing or is_checkpointing(base):
            self.checkpointing = True
            enable_checkpointing(skel)
        model = _mirror_adapters(skel, self.subject.live, cfg)
        model.train()
        return Sketch(model, depth, account_sketch(model, self.target.cuda), swapped, self.checkpointing,
                      self.target.kernel, self.subject.task)

    # -- figures

    def _line(self, values: list[float]) -> float:
        """The value at full depth on the line through the sketched depths."""
        if len(values) == 1 or not self.layers:
            return values[0]
        (d1, d2), (v1, v2) = self.depths, values
        return v1 + (self.layers - d1) * (v2 - v1) / (d2 - d1)

    def account(self) -> Any:
        accs = [s.account for s in self.sketches]
        if len(accs) == 1:
            return accs[0]
        k = (self.layers - self.depths[0]) / (self.depths[1] - self.depths[0])
        per_layer = Counter(accs[1].trainable_tensors) - Counter(accs[0].trainable_tensors)
        tensors = list(accs[0].trainable_tensors)
        for t, n in per_layer.items():
            tensors += [t] * int(round(n * k))
        return TensorAccount(
            frozen=int(round(self._line([a.frozen for a in accs]))),
            trainable=int(round(self._line([a.trainable for a in accs]))),
            trainable_tensors=tensors,
            trainable_params=int(round(self._line([a.trainable_params for a in accs]))),
            total_params=int(round(self._line([a.total_params for a in accs]))),
            quantized_layers=int(round(self._line([a.quantized_layers for a in accs]))),
        )

    def step(self, batch: int, seq: int) -> Any:
        """Activations and gradients of one step at ``batch`` × ``seq`` (traced, cached)."""
        import torch

        from ..fused_loss import NotFusable, planned_loss

        key = (batch, seq)
        if key not in self._cache:
            with torch.random.fork_rng(devices=[]):
                try:
                    runs = [trace_step(s.model, batch, seq, s.task, s.kernel, planned_loss if self.fused else None)
                            for s in self.sketches]
                except NotFusable:  # a model the fused loss cannot take: a run computes the model's own
                    self.fused = False
                    runs = [trace_step(s.model, batch, seq, s.task, s.kernel) for s in self.sketches]
            self._cache[key] = StepMemory(peak=int(round(self._line([r.peak for r in runs]))),
                                          grads=int(round(self._line([r.grads for r in runs]))),
                                          activations=int(round(self._line([r.activations for r in runs]))),
                                          ops=sum(r.ops for r in runs), device="meta")
        return self._cache[key]

    def logits(self, batch: int, seq: int) -> tuple[int, int]:
        """The loss's own peak (head, cross-entropy, backward) the model's way and fused."""
        import torch

        with torch.random.fork_rng(devices=[]):
            return trace_logits(self.sketches[0].model, batch, seq, self.subject.task)



def _clean(name: str) -> str:
    """A parameter's name without peft's wrapper path components."""
    for part in (".base_layer", ".original_module"):
        name = name.replace(part, "")
    return name


def _mirror_layout(skel: Any, base: Any, dtype: Any) -> list[str]:
    """Give the skeleton the live model's dtypes, trainable flags and 4-bit layers; returns
    the names of the layers swapped for 4-bit stand-ins."""
    dtypes = {_clean(n): p.dtype for n, p in base.named_parameters() if p.dtype.is_floating_point}
    grads = {_clean(n): p.requires_grad for n, p in base.named_parameters()}
    quant = {_clean(n): getattr(m, "compute_dtype", None) for n, m in base.named_modules()
             if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}
    existing = {n for n, _ in skel.named_modules()}
    names = [n for n in quant if n in existing]
    compute = next((c for c in quant.values() if c is not None), dtype)
    for n, p in skel.named_parameters():
        if n in dtypes and p.dtype != dtypes[n]:
            p.data = p.data.to(dtypes[n])
    swapped = quantize_skeleton(skel, compute, names=names) if names else []
    for n, p in skel.named_parameters():
        p.requires_grad_(grads.get(n, p.requires_grad) and p.dtype.is_floating_point)
    if swapped:
        emb = skel.get_input_embeddings()
        if emb is not None:
            emb.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    return swapped


def _mirror_adapters(skel: Any, live: Any, cfg: Any) -> Any:
    """Attach the live model's adapters (copies of their configs) to the skeleton."""
    peft_model = live if is_peft_model(live) else getattr(state_for(live), "peft_model", None)
    if peft_model is None or not getattr(peft_model, "peft_config", None):
        return skel
    configs = {n: copy.deepcopy(c) for n, c in peft_model.peft_config.items()}
    for c in configs.values():  # prompt methods recorded the full depth: match the sketch's
        if getattr(c, "is_prompt_learning", False) and getattr(c, "num_layers", None):
            c.num_layers = layer_count(cfg) or c.num_layers
    active = peft_model.active_adapter
    first = active if isinstance(active, str) and active in configs else next(iter(configs))
    model = attach_method(skel, configs[first], first)
    add_adapters(model, {n: c for n, c in configs.items() if n != first}, active)
    return model


def parts_of(account: Any, step: Any, opt: Any, target: Target, full: bool) -> Parts:
    """Assemble the parts of one setup from its accounting and one traced step."""
    tensors = account.trainable_tensors
    activations = step.activations
    temporary = optimizer_step_temporary(opt, tensors, target.cuda)
    p = Parts(
        weights=account.frozen + (account.trainable if full else 0),
        adapter=0 if full else account.trainable,
        gradients=account.trainable,
        optimizer=optimizer_bytes(opt, tensors, target.cuda),
        activations=activations,
    )
    overhead = max(0, temporary - activations)
    if target.cuda:
        overhead += target.context + int(CUDA_SLACK * (p.total + overhead))
    p.overhead = overhead
    return p
