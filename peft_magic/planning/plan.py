"""``%peft plan``: will it fit, and with which method — before loading a single weight.

Why: every notebook fine-tune starts with "will this fit on my GPU?", and people find out
by loading for minutes and hitting an out-of-memory error. Estimators that treat every
parameter as trainable and ignore activations are useless for PEFT, where activations
are usually the largest part. This module answers from the model's config alone:

* the model is built on the meta device (no weights read, no memory) in the training
  dtype, prepared as the method needs (QLoRA's 4-bit layers and k-bit preparation,
  gradient checkpointing) and the method is attached by **peft itself** — so frozen
  weights, adapter parameters, gradients and optimizer states are the tensors a real run
  creates, counted to the byte (``planning_sketch``);
* activations come from running one forward / backward of that meta model under a
  counter of live tensor bytes (``planning_trace``) — the installed transformers and
  peft code itself, with the attention kernel the target device would use, so batch,
  sequence length, layers, hidden size, heads, the attention implementation and
  gradient checkpointing all enter exactly as they do in a real step;
* a runtime overhead (CUDA context, allocator fragmentation, optimizer-step temporaries)
  completes the total, which is checked against the device the kernel sees or a named
  GPU (``gpu="T4"``, ``"A100-80GB"``, ``"24GB"``).

``plan`` returns a :class:`Plan` (a table with bars in a notebook, plain text in a
terminal, data for code) with a recommendation that follows the classic guidance and the
largest batch and sequence length that fit. ``check_fit`` is the quick question for the
model as it is now (``%peft train`` asks it before starting); ``measure`` runs real
training steps and compares.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .. import _heavy
from ..errors import PeftMagicError, first_line
from ..memory import fmt_bytes

PART_NAMES = ("weights", "adapter", "gradients", "optimizer", "activations", "overhead")
MIB = 1024**2
#: the CUDA context and kernel images live outside torch's allocator; ~0.3–0.6 GB in practice
CUDA_CONTEXT = 512 * MIB
#: the caching allocator's fragmentation on top of the tensors it holds
CUDA_SLACK = 0.05
#: "tight" above this share of the available memory
TIGHT = 0.9
#: LoRA counts as having "memory to spare" below this share
SPARE = 0.8
#: the largest batch a plan searches up to
BATCH_CAP = 4096

PLAN_KEYS = ("batch", "seq", "grad_accum", "optim", "dtype", "attn", "goal", "task", "gpu", "checkpointing",
             "measure")
DEFAULT_METHODS = ("full", "lora", "qlora", "prompt", "prefix", "bottleneck")
GOALS = {
    "auto": "pick by memory: LoRA when there is room to spare, else QLoRA",
    "quality": "memory to spare and maximum quality: LoRA in 16-bit",
    "memory": "minimum memory and a fast start: QLoRA",
    "prompts": "adapt the prompts rather than the model: prompt or prefix tuning",
    "reuse": "reuse the layers across tasks: bottleneck adapters",
}
GOAL_ALIASES = {"speed": "memory", "small": "memory", "low-memory": "memory", "prompt": "prompts",
                "multitask": "reuse", "multi-task": "reuse", "adapters": "reuse", "best": "quality"}


# ----------------------------------------------------------------------------- data objects


@dataclass
class Parts:
    """Bytes by part of one training setup; ``total`` is their sum."""

    weights: int = 0
    adapter: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, p) for p in PART_NAMES)

    def as_dict(self) -> dict[str, int]:
        return {p: getattr(self, p) for p in PART_NAMES} | {"total": self.total}


@dataclass
class Target:
    """Where the run would happen: the device the kernel sees, or a named GPU."""

    kind: str  # "cuda" | "cpu" | "mps"
    label: str  # "T4 (15.0 GB)", "cuda:0", "CPU RAM"
    available: int | None  # bytes this run may use
    dtype: str  # the training dtype there ("bfloat16", "float16", "float32")
    kernel: str  # attention kernel: flash / efficient / flash_cpu / math
    context: int = 0  # runtime bytes outside torch's allocator still to be created
    device: str = "cpu"  # "cuda:0" when it is a local device
    named: bool = False
    detail: str = ""  # how ``available`` was read

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"


@dataclass
class MethodPlan:
    """One row of a plan: a method, its memory by part, and the verdict."""

    method: str  # as requested: "full", "lora", "qlora", "prompt", …
    label: str  # "LoRA r=8 (bf16)"
    parts: Parts | None
    trainable: int = 0
    total_params: int = 0
    checkpointing: bool = False
    available: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    overlap: int = 0  # how much the sum of parts overstates the joint peak of gradients and activations
    other: Parts | None = None  # the same with gradient checkpointing switched the other way (None: not optional)

    @property
    def other_fits(self) -> bool | None:
        if self.other is None or self.available is None:
            return None
        return self.other.total <= self.available

    @property
    def total(self) -> int:
        return self.parts.total if self.parts else 0

    @property
    def fits(self) -> bool | None:
        if self.parts is None or self.available is None:
            return None
        return self.total <= self.available

    @property
    def tight(self) -> bool:
        return bool(self.fits and self.available and self.total > TIGHT * self.available)

    @property
    def verdict(self) -> str:
        if self.error:
            return "cannot estimate"
        if self.fits is None:
            return "unknown"
        if not self.fits:
            return "does not fit"
        return "tight" if self.tight else "fits"

    @property
    def spare(self) -> float | None:
        """Share of the available memory left over (negative when it does not fit)."""
        if self.parts is None or not self.available:
            return None
        return 1.0 - self.total / self.available


@dataclass
class Recommendation:
    """Which method to use, why, and how far batch and sequence length can go with it."""

    method: str | None
    reason: str
    goal: str = "auto"
    batch: int | None = None  # largest batch at the plan's seq
    seq: int | None = None  # largest seq at the plan's batch
    seq_cap: int | None = None  # the model's maximum positions, when seq hit it
    checkpointing: bool = False
    hints: list[str] = field(default_factory=list)

    def line(self, plan_batch: int, plan_seq: int) -> str:
        if self.method is None:
            return f"no recommendation: {self.reason}"
        out = f"recommended: {self.method} — {self.reason}"
        limits = []
        if self.batch is not None:
            more = " or more" if self.batch >= BATCH_CAP else ""
            limits.append(f"largest batch at seq {plan_seq}: {self.batch:,}{more}" if self.batch
                          else f"does not fit at seq {plan_seq} even with batch 1")
        if self.seq is not None:
            cap = " (the model's maximum)" if self.seq_cap and self.seq >= self.seq_cap else ""
            limits.append(f"largest seq at batch {plan_batch}: {self.seq:,}{cap}" if self.seq
                          else f"batch {plan_batch} does not fit at any seq")
        if limits:
            out += " · " + " · ".join(limits)
        if self.checkpointing:
            out += " (with gradient checkpointing)"
        return out


@dataclass
class Measurement:
    """A real training step on the live model next to the estimate for the same step."""

    batch: int
    seq: int
    device: str
    how: str  # "torch.cuda peak allocated" | "live tensor bytes"
    measured: Parts
    estimated: Parts
    measured_peak: int = 0  # the step's joint peak of activations and gradients
    estimated_peak: int = 0
    steps: int = 2
    seconds: float = 0.0
    extrapolated: Parts | None = None  # at the plan's batch and seq
    target_batch: int | None = None
    target_seq: int | None = None

    @property
    def error(self) -> float:
        """Relative error of the estimated step peak (activations and gradients) against the measured one."""
        m = self.measured_peak
        return (self.estimated_peak - m) / m if m else 0.0

    def line(self) -> str:
        out = (f"measured ({self.how}, {self.steps} real steps at batch {self.batch} × seq {self.seq} on "
               f"{self.device}): step peak {fmt_bytes(self.measured_peak)} vs estimated "
               f"{fmt_bytes(self.estimated_peak)} ({self.error:+.1%}); with weights and optimizer states "
               f"{fmt_bytes(self.measured.total)} vs {fmt_bytes(self.estimated.total)}")
        if self.extrapolated is not None:
            out += (f" · extrapolated to batch {self.target_batch} × seq {self.target_seq}: "
                    f"{fmt_bytes(self.extrapolated.total)}")
        return out


@dataclass
class Plan:
    """Memory by part for each method, a verdict against the target, and a recommendation.

    ``plan["lora"]`` is a :class:`MethodPlan`; ``rows`` holds them all in order.
    """

    model: str
    model_type: str
    params: int
    layers: int | None
    batch: int
    seq: int
    grad_accum: int
    optim: str
    dtype: str
    target: Target
    rows: list[MethodPlan]
    recommendation: Recommendation
    checkpointing: bool = False
    measurement: Measurement | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, method: str) -> MethodPlan:
        key = method.lower()
        for r in self.rows:
            if r.method == key:
                return r
        raise KeyError(f"no method '{method}' in this plan (it has: {', '.join(r.method for r in self.rows)})")

    def __contains__(self, method: object) -> bool:
        return any(r.method == str(method).lower() for r in self.rows)

    @property
    def available(self) -> int | None:
        return self.target.available

    def headline(self) -> str:
        layers = f", {self.layers} layers" if self.layers else ""
        ck = " · gradient checkpointing" if self.checkpointing else ""
        ga = f" (×{self.grad_accum} accumulation = {self.batch * self.grad_accum})" if self.grad_accum > 1 else ""
        return (f"Memory plan for {self.model} ({self.model_type}, {_fmt_params(self.params)} params{layers}) · "
                f"batch {self.batch}{ga} × seq {self.seq} · {self.optim} · {_short_dtype(self.dtype)}{ck} · "
                f"on {self.target.label}")

    def lines(self) -> list[str]:
        out = [self.headline()]
        other = "ckpt off" if self.checkpointing else "ckpt on"
        header = ["method", *PART_NAMES, "total", other, "verdict"]
        table = [header]
        for r in self.rows:
            if r.parts is None:
                table.append([r.label, *["–"] * (len(PART_NAMES) + 2), f"✗ {r.error}"])
                continue
            cells = [fmt_bytes(getattr(r.parts, p)) if getattr(r.parts, p) else "–" for p in PART_NAMES]
            mark = {"fits": "✓", "tight": "!", "does not fit": "✗"}.get(r.verdict, "?")
            verdict = f"{mark} {r.verdict}"
            if r.spare is not None and r.fits:
                verdict += f" ({r.spare:.0%} spare)"
            alt = "–" if r.other is None else fmt_bytes(r.other.total) + {True: " ✓", False: " ✗"}.get(r.other_fits, "")
            table.append([r.label + (" ¹" if r.checkpointing and not self.checkpointing else ""), *cells,
                          fmt_bytes(r.total), alt, verdict])
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for j, row in enumerate(table):
            out.append("  ".join(str(c).rjust(w) if 0 < i < len(header) - 1 else str(c).ljust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if any(r.checkpointing and not self.checkpointing for r in self.rows):
            out.append("¹ with gradient checkpointing (%peft qlora turns it on)")
        out.append(f"{other}: the total with gradient checkpointing {'off' if self.checkpointing else 'on'}")
        if self.target.available is not None:
            out.append(f"available: {fmt_bytes(self.target.available)} on {self.target.label}"
                       + (f" ({self.target.detail})" if self.target.detail else ""))
        out.append(self.recommendation.line(self.batch, self.seq))
        out += [f"  {h}" for h in self.recommendation.hints]
        if self.measurement is not None:
            out.append(self.measurement.line())
        out += [f"note: {n}" for n in self.notes]
        for r in self.rows:
            out += [f"note ({r.method}): {n}" for n in r.notes]
        out.append(f"planned on the meta device in {self.seconds:.1f} s (no weights read)")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        from ..display.plan_html import plan_html

        return plan_html(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "params": self.params, "batch": self.batch, "seq": self.seq,
            "grad_accum": self.grad_accum, "optim": self.optim, "dtype": self.dtype, "target": self.target.label,
            "available": self.target.available,
            "methods": {r.method: {"label": r.label, "verdict": r.verdict, "trainable": r.trainable,
                                   **(r.parts.as_dict() if r.parts else {"error": r.error})} for r in self.rows},
            "recommendation": {"method": self.recommendation.method, "reason": self.recommendation.reason,
                               "batch": self.recommendation.batch, "seq": self.recommendation.seq},
        }


@dataclass
class FitVerdict:
    """``check_fit``'s answer: ``fits`` is ``None`` when it cannot tell."""

    fits: bool | None
    estimate_bytes: int
    available_bytes: int | None
    message: str
    parts: Parts | None = None
    device: str = "cpu"

    def __repr__(self) -> str:
        return self.message

    def __bool__(self) -> bool:  # "if check_fit(...):" reads as "if it fits (or we cannot tell)"
        return self.fits is not False


def _fmt_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def _short_dtype(dtype: str) -> str:
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)


# ----------------------------------------------------------------------------- the subject


@dataclass
class _Subject:
    name: str
    config: Any
    task: str
    model_cls: Any = None
    live: Any = None  # the model in the kernel (a PeftModel or a base model), if any

    @property
    def base(self) -> Any:
        from ..state import unwrap

        return unwrap(self.live) if self.live is not None else None


def _subject(source: Any, task: str | None) -> _Subject:
    """What to plan for: a live model, a transformers config (or dict), or a name / path."""
    import torch

    from ..model.load import infer_task
    from ..peft_methods.discovery import normalize_task
    from ..state import unwrap

    task_type = normalize_task(task) if task else None
    if isinstance(source, torch.nn.Module):
        base = unwrap(source)
        config = getattr(base, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise PeftMagicError(f"cannot plan for a {type(base).__name__}: it has no transformers config")
        name = getattr(config, "_name_or_path", "") or type(base).__name__
        return _Subject(name, config, task_type or infer_task(source) or "CAUSAL_LM", type(base), source)
    if isinstance(source, dict):
        from transformers import AutoConfig

        d = dict(source)
        model_type = d.pop("model_type", None)
        if not model_type:
            raise PeftMagicError("a config dict needs a 'model_type' (e.g. 'llama')")
        try:
            config = AutoConfig.for_model(model_type, **d)
        except Exception as e:
            raise PeftMagicError(f"cannot build a {model_type} config: {first_line(e)}") from None
        return _Subject(d.get("name", model_type), config, task_type or _default_task(config))
    if hasattr(source, "to_dict") and hasattr(source, "model_type"):
        name = getattr(source, "_name_or_path", "") or getattr(source, "model_type", "model")
        return _Subject(name, source, task_type or _default_task(source))
    if isinstance(source, str):
        return _subject_from_name(source, task_type)
    raise PeftMagicError(f"cannot plan for a {type(source).__name__}",
                         "give a model, a transformers config, a folder, a hub id or a built-in name")


def _subject_from_name(source: str, task_type: str | None) -> _Subject:
    """Read only the config of a built-in, a folder or a hub id (never the weights)."""
    from pathlib import Path

    from transformers import AutoConfig

    from ..model import builtins as builtin_models
    from ..model.load import _looks_local
    from ..peft_methods.discovery import normalize_task

    builtin = builtin_models.resolve_builtin(source)
    if builtin is not None:
        path = str(builtin_models.materialize(builtin.name))
        default_task = normalize_task(builtin.task)
    else:
        expanded = Path(source).expanduser()
        if not expanded.exists() and _looks_local(source):
            raise PeftMagicError(f"no such folder: {source}",
                                 "give a folder with a config.json, a hub id, or a built-in: "
                                 + ", ".join(builtin_models.BUILTINS))
        path = str(expanded) if expanded.exists() else source
        default_task = None
    try:
        with _heavy.no_hf_progress():
            config = AutoConfig.from_pretrained(path)
    except Exception as e:
        if builtin is None and not Path(path).exists():
            raise PeftMagicError(f"could not read the config of '{source}': it is not a local folder and the "
                                 f"Hugging Face Hub is not reachable ({first_line(e)[:100]})",
                                 "pass a folder with a config.json, or a built-in: "
                                 + ", ".join(builtin_models.BUILTINS)) from None
        raise PeftMagicError(f"could not read the config of '{source}': {first_line(e)}") from None
    return _Subject(source, config, task_type or default_task or _default_task(config))


def _default_task(config: Any) -> str:
    """The task a config's architecture implies; sequence-to-sequence for encoder-decoders."""
    from ..model.load import _task_from_config

    return _task_from_config(config) or ("SEQ_2_SEQ_LM" if getattr(config, "is_encoder_decoder", False)
                                         else "CAUSAL_LM")


# ----------------------------------------------------------------------------- the target


def _dtype_name(dtype: Any) -> str:
    from ..model.load import _DTYPES

    if dtype is None:
        return ""
    text = str(dtype).replace("torch.", "").lower()
    if text not in _DTYPES:
        raise PeftMagicError(f"unknown dtype '{dtype}'", "use bf16, fp16 or fp32")
    return _DTYPES[text]


def _live_dtype(model: Any) -> str:
    """The dtype a live model trains in: its 4-bit layers' compute dtype, else the dtype
    most of its floating-point weights have."""
    for m in model.modules():
        compute = getattr(m, "compute_dtype", None)
        if compute is not None and type(m).__name__ == "Linear4bit":
            return str(compute).replace("torch.", "")
    counts = Counter(p.dtype for p in model.parameters() if p.dtype.is_floating_point)
    if not counts:
        return "float32"
    return str(max(counts, key=counts.get)).replace("torch.", "")


def resolve_target(gpu: str | None = None, dtype: str | None = None, live: Any = None,
                   attn: str | None = None) -> Target:
    """The device a plan checks against: a named GPU, else the one the kernel (or the live
    model) uses — CUDA free memory, Apple MPS, or available RAM."""
    import torch

    from .gpus import gpu_spec
    from ..memory import device_of
    from .trace import attention_kernel

    want = _dtype_name(dtype) if dtype else ""
    if gpu:
        spec = gpu_spec(gpu)
        d = want or (_live_dtype(live) if live is not None and _live_dtype(live) != "float32" else spec.dtype)
        if d == "bfloat16" and not spec.bf16:
            d = "float16"
        kernel = "eager" if attn == "eager" else ("flash" if spec.flash and d != "float32" else "efficient")
        return Target("cuda", spec.label, spec.memory, d, kernel, context=CUDA_CONTEXT, named=True,
                      device="cuda", detail="card total as the driver reports it")
    dev = device_of(live) if live is not None else None
    if (dev or "").startswith("cuda") or (dev is None and torch.cuda.is_available()):
        idx = int(dev.split(":")[1]) if dev and ":" in dev else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(idx)
        cached = torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx)
        d = want or (_live_dtype(live) if live is not None else
                     ("bfloat16" if torch.cuda.is_bf16_supported() else "float16"))
        major = torch.cuda.get_device_capability(idx)[0]
        kernel = "eager" if attn == "eager" else ("flash" if major >= 8 and d != "float32" else "efficient")
        return Target("cuda", f"cuda:{idx} ({fmt_bytes(total)})", free + cached, d, kernel, device=f"cuda:{idx}",
                      detail=f"free now of {fmt_bytes(total)}")
    if (dev or "").startswith("mps") or (dev is None and getattr(torch.backends, "mps", None) is not None
                                          and torch.backends.mps.is_available()):
        try:
            cap = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        except Exception:
            cap = None
        d = want or (_live_dtype(live) if live is not None else "float32")
        return Target("mps", "Apple MPS", cap, d, "eager" if attn == "eager" else "math", device="mps",
                      detail="recommended maximum minus what is allocated")
    import psutil

    d = want or (_live_dtype(live) if live is not None else "float32")
    kernel = attention_kernel("cpu", None, attn)
    return Target("cpu", "CPU RAM", int(psutil.virtual_memory().available), d, kernel, device="cpu",
                  detail="available RAM now")


# ----------------------------------------------------------------------------- methods


@dataclass
class _Request:
    method: str  # as given, lower case
    spec: Any = None  # MethodSpec; None for full fine-tuning
    settings: dict[str, Any] = field(default_factory=dict)
    quantized: bool = False


def _resolve_requests(methods: list[str], settings: dict[str, Any], explicit: bool) -> list[_Request]:
    """Method names → requests, with each setting given to the methods that have it."""
    from ..peft_methods.discovery import normalize_settings, resolve_key, resolve_method

    out: list[_Request] = []
    for name in methods:
        key = name.strip().lower()
        if key in ("full", "full-ft", "full_ft", "finetune", "full-finetune"):
            out.append(_Request("full"))
            continue
        try:
            spec = resolve_method(key)
        except PeftMagicError:
            if not explicit:
                continue  # e.g. bottleneck adapters not available in this install: skip quietly
            raise
        out.append(_Request(key, spec, quantized=bool(spec.needs_quantized)))
    used: set[str] = set()
    for req in out:
        if req.spec is None:
            continue
        mine = {}
        for k, v in settings.items():
            try:
                resolve_key(req.spec.requested, req.spec.info.fields, k)
            except PeftMagicError:
                continue
            mine[k] = v
            used.add(k)
        req.settings = normalize_settings(req.spec, mine)
    unused = [k for k in settings if k not in used]
    if unused:
        from ..errors import did_you_mean
        from ..peft_methods.discovery import KEY_ALIASES

        names = ", ".join(r.method for r in out if r.spec is not None) or "full fine-tuning"
        known = {f for r in out if r.spec is not None for f in r.spec.info.fields} | set(KEY_ALIASES) | set(PLAN_KEYS)
        hint = did_you_mean(unused[0], known)
        raise PeftMagicError(f"'{unused[0]}' is not a setting of {names}" + (f": {hint}" if hint else ""),
                             None if hint else "plan settings are batch=, seq=, grad_accum=, optim=, dtype=, attn=, "
                                               "goal=; other keys go to the methods (r=, alpha=, tokens=, target=, …)")
    return out


def _label(req: _Request, peft_config: Any, dtype: str) -> str:
    d = _short_dtype(dtype)
    if req.spec is None:
        return f"full fine-tuning ({d})"
    pt = req.spec.info.peft_type
    cfg = peft_config
    if pt == "LORA":
        r = getattr(cfg, "r", None)
        extra = " DoRA" if getattr(cfg, "use_dora", False) else ""
        if req.quantized:
            return f"QLoRA r={r}{extra} (4-bit NF4)"
        return f"LoRA r={r}{extra} ({d})"
    tokens = getattr(cfg, "num_virtual_tokens", None)
    if req.spec.info.is_prompt_learning and tokens:
        kind = {"PROMPT_TUNING": "prompt tuning", "PREFIX_TUNING": "prefix tuning",
                "P_TUNING": "p-tuning"}.get(pt, req.method)
        return f"{kind} ({tokens} tokens, {d})"
    if pt == "BOTTLENECK":
        size = getattr(cfg, "bottleneck_size", None) or getattr(cfg, "reduction_factor", None)
        return f"bottleneck adapters{f' ({size})' if size else ''} ({d})"
    return f"{req.method} ({d})"


class _Base:
    """Stands in for a model in ``build_config`` (which reads only ``.config``)."""

    def __init__(self, config: Any) -> None:
        self.config = config


# ----------------------------------------------------------------------------- estimating one method


class _Estimator:
    """One method on one subject: its sketches at two depths, accounting and activations.

    Activations at a (batch, seq) cost two meta traces (milliseconds to a fraction of a
    second for a 7B config); results are cached, which keeps the largest-batch and
    largest-seq searches cheap.
    """

    def __init__(self, subject: _Subject, req: _Request | None, target: Target, checkpointing: bool,
                 attn: str | None) -> None:
        import torch

        from .sketch import layer_count, reduced_depths

        self.subject = subject
        self.req = req
        self.target = target
        self.dtype = getattr(torch, target.dtype)
        self.checkpointing = checkpointing or bool(req and req.quantized)
        self.attn = "eager" if (attn == "eager" or target.kernel == "eager") else None
        self.layers = layer_count(subject.config)
        self.peft_config = None
        if req is not None and req.spec is not None:
            from ..adapter_ops.attach import build_config

            self.peft_config = build_config(req.spec, req.settings, subject.task, _Base(subject.config))
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
        from .sketch import Sketch, account_sketch, attach_method, build_skeleton, config_at_depth, enable_checkpointing, prepare_kbit, quantize_skeleton

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
        from ..adapter_ops.attach import _checkpointing
        from .sketch import Sketch, account_sketch, add_adapters, attach_method, build_skeleton, enable_checkpointing, layer_count, quantize_skeleton
        from ..state import is_peft_model, state_for

        live = self.subject.live
        base = self.subject.base
        peft_model = live if is_peft_model(live) else getattr(state_for(base), "peft_model", None)
        skel = build_skeleton(cfg, self.dtype, model_cls=type(base),
                              attn=self.attn or getattr(base.config, "_attn_implementation", None))

        def clean(name: str) -> str:
            for part in (".base_layer", ".original_module"):
                name = name.replace(part, "")
            return name

        dtypes = {clean(n): p.dtype for n, p in base.named_parameters() if p.dtype.is_floating_point}
        grads = {clean(n): p.requires_grad for n, p in base.named_parameters()}
        quant = {clean(n): getattr(m, "compute_dtype", None) for n, m in base.named_modules()
                 if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}
        existing = {n for n, _ in skel.named_modules()}
        names = [n for n in quant if n in existing]
        compute = next((c for c in quant.values() if c is not None), self.dtype)
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
        if self.checkpointing or _checkpointing(base):
            self.checkpointing = True
            enable_checkpointing(skel)
        model = skel
        if peft_model is not None and getattr(peft_model, "peft_config", None):
            configs = {n: copy.deepcopy(c) for n, c in peft_model.peft_config.items()}
            for c in configs.values():  # prompt methods recorded the full depth: match the sketch's
                if getattr(c, "is_prompt_learning", False) and getattr(c, "num_layers", None):
                    c.num_layers = layer_count(cfg) or c.num_layers
            active = peft_model.active_adapter
            first = active if isinstance(active, str) and active in configs else next(iter(configs))
            model = attach_method(skel, configs[first], first)
            add_adapters(model, {n: c for n, c in configs.items() if n != first}, active)
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
        from .sketch import TensorAccount

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

        from .trace import StepMemory, trace_step

        key = (batch, seq)
        if key not in self._cache:
            with torch.random.fork_rng(devices=[]):
                runs = [trace_step(s.model, batch, seq, s.task, s.kernel) for s in self.sketches]
            self._cache[key] = StepMemory(peak=int(round(self._line([r.peak for r in runs]))),
                                          grads=int(round(self._line([r.grads for r in runs]))),
                                          activations=int(round(self._line([r.activations for r in runs]))),
                                          ops=sum(r.ops for r in runs), device="meta")
        return self._cache[key]


def _parts(account: Any, step: Any, opt: Any, target: Target, full: bool) -> Parts:
    """Assemble the parts of one setup from its accounting and one traced step."""
    from .sketch import optimizer_bytes, optimizer_step_temporary

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


# ----------------------------------------------------------------------------- searching limits


def _largest(ok: Any, unit: int, cap: int, guess: int | None = None) -> int:
    """The largest multiple of ``unit`` up to ``cap`` for which ``ok`` holds (0 if none),
    assuming ``ok`` is monotone; starts from ``guess`` when there is one."""
    cap = max(unit, cap // unit * unit)
    if not ok(unit):
        return 0
    lo, hi = unit, None
    if guess:
        g = min(cap, max(unit, int(guess) // unit * unit))
        if ok(g):
            lo = g
            if g == cap or not ok(g + unit):
                return g
            lo = g + unit
        else:
            hi = g
    while hi is None:
        nxt = min(cap, lo * 2)
        if nxt == lo:
            return lo
        if ok(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > unit:
        mid = (lo + hi) // 2 // unit * unit
        if mid <= lo:
            break
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _limits(est: _Estimator, account: Any, opt: Any, target: Target, full: bool, batch: int,
            seq: int) -> tuple[int, int, int | None]:
    """Largest batch at ``seq`` and largest seq at ``batch`` that fit ``target``.

    Activations grow exactly linearly with the batch and at most quadratically with the
    sequence length, so three traces give a curve to solve; two more traces check the
    answer (and a traced search takes over in the rare case the curve was off).
    """
    from .trace import StepMemory

    avail = target.available or 0
    max_pos = getattr(est.subject.config, "max_position_embeddings", None) or getattr(
        est.subject.config, "n_positions", None)
    seq_cap = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else 131072

    def total(step: Any) -> int:
        return _parts(account, step, opt, target, full).total

    def predicted(points: list[tuple[int, Any]], x: int) -> StepMemory:
        xs = [p for p, _ in points]
        out = {}
        for attr in ("activations", "grads", "peak"):
            ys = [getattr(m, attr) for _, m in points]
            if len(xs) == 2:
                out[attr] = ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
            else:  # Lagrange through three points: exact for a quadratic
                out[attr] = sum(ys[i] * math.prod((x - xs[j]) / (xs[i] - xs[j]) for j in range(3) if j != i)
                                for i in range(3))
        return StepMemory(peak=int(out["peak"]), grads=int(out["grads"]), activations=int(out["activations"]))

    def solve(xs: list[int], unit: int, cap: int, step_at: Any) -> int:
        """Predict from the curve, check by tracing, refit with the checked point (the peak
        can move from one phase of the step to another as sizes grow), then search."""
        points = [(x, step_at(x)) for x in xs]
        guess = 0
        for _ in range(4):
            guess = _largest(lambda x: total(predicted(points, x)) <= avail, unit, cap)
            if not guess:
                break
            if total(step_at(guess)) > avail:
                new = guess
            elif guess >= cap or total(step_at(guess + unit)) > avail:
                return guess
            else:
                new = guess + unit
            far = max(range(len(points)), key=lambda i: abs(points[i][0] - new))
            points = sorted(points[:far] + points[far + 1:] + [(new, step_at(new))], key=lambda p: p[0])
        return _largest(lambda x: total(step_at(x)) <= avail, unit, cap, guess or None)

    max_batch = solve([1, 2], 1, BATCH_CAP, lambda b: est.step(b, seq))
    unit = 64 if seq_cap >= 256 else 8
    s0 = max(unit, min(seq, 512) // unit * unit)
    max_seq = solve([s0, 2 * s0, 4 * s0], unit, seq_cap, lambda s: est.step(batch, s))
    return max_batch, max_seq, seq_cap


# ----------------------------------------------------------------------------- the recommendation


def _recommend(rows: list[MethodPlan], goal: str, available: int | None) -> tuple[str | None, str]:
    by = {r.method: r for r in rows if r.parts is not None}
    lora = by.get("lora") or next((r for r in rows if r.label.startswith("LoRA") and r.parts), None)
    qlora = by.get("qlora")
    prompt = by.get("prompt") or by.get("prefix") or by.get("p-tuning")
    adapters = by.get("bottleneck") or by.get("adapter") or by.get("houlsby") or by.get("pfeiffer")

    def ok(r: MethodPlan | None) -> bool:
        return r is not None and r.fits is not False

    if goal == "quality":
        if ok(lora):
            return lora.method, "maximum quality: LoRA on the 16-bit model (" + GOALS["quality"].split(":")[0] + ")"
        if ok(qlora):
            return qlora.method, "LoRA in 16-bit does not fit here; QLoRA is the closest in quality"
    if goal == "prompts" and prompt is not None:
        if ok(prompt):
            return prompt.method, "adapt the prompts rather than the model: soft prompts, the base untouched"
    if goal == "reuse":
        if ok(adapters):
            return adapters.method, "reuse the layers across tasks: one small bottleneck adapter per task"
        if ok(lora):
            return lora.method, "bottleneck adapters are not available; LoRA adapters also swap per task"
    if goal == "memory" and ok(qlora):
        return qlora.method, "minimum memory and a fast start: QLoRA (4-bit base, LoRA adapters)"
    if available is None:
        if lora is not None:
            return lora.method, "no memory limit known; LoRA in 16-bit for maximum quality"
        return (rows[0].method if rows else None), "no memory limit known"
    if lora is not None and lora.fits and (lora.spare or 0) >= 1 - SPARE:
        return lora.method, (f"memory to spare ({lora.spare:.0%} left) and maximum quality: LoRA on the "
                             f"16-bit model")
    if qlora is not None and qlora.fits:
        why = "LoRA in 16-bit would be tight" if lora is not None and lora.fits else (
            "LoRA in 16-bit does not fit" if lora is not None else "least memory")
        return qlora.method, f"minimum memory and a fast start: QLoRA ({why})"
    if lora is not None and lora.fits:
        return lora.method, "LoRA fits (tightly); QLoRA would leave more room"
    fitting = [r for r in rows if r.fits]
    if fitting:
        best = min(fitting, key=lambda r: r.total)
        return best.method, f"the only setups that fit are the smallest: {best.label}"
    smallest = qlora or (min((r for r in rows if r.parts), key=lambda r: r.total) if by else None)
    if smallest is None:
        return None, "no method could be estimated"
    return smallest.method, "nothing fits at this batch and seq; QLoRA needs the least — see the limits"


# ----------------------------------------------------------------------------- public API


def plan(model: Any = None, methods: str | list[str] | tuple[str, ...] | None = None, *, batch: int = 4,
         seq: int = 512, grad_accum: int = 1, gpu: str | None = None, checkpointing: bool = False,
         optim: str = "adamw", dtype: str | None = None, task: str | None = None, attn: str | None = None,
         goal: str = "auto", measure: bool = False, limits: bool = True, **settings: Any) -> Plan:
    """Memory needed to train ``model`` with each method, a verdict and a recommendation.

    ``model`` is a model in the kernel, a transformers config (or a dict with
    ``model_type``), a folder, a hub id or a built-in name — only the config is read.
    ``methods`` defaults to full fine-tuning, LoRA, QLoRA, prompt and prefix tuning and
    bottleneck adapters; other keyword arguments are method settings (``r=16``,
    ``tokens=20``). ``gpu`` names a GPU or a size (``"T4"``, ``"24GB"``); otherwise the
    device the kernel (or ``model``) uses. ``measure`` runs two real training steps on a
    live model and compares. ``limits=False`` skips what costs extra traces: the largest
    batch and seq that fit, and each method's total with checkpointing the other way.
    """
    t0 = time.perf_counter()
    _heavy.ensure()
    batch, seq, grad_accum = _positive("batch", batch), _positive("seq", seq), _positive("grad_accum", grad_accum)
    goal_key = GOAL_ALIASES.get(str(goal).lower(), str(goal).lower())
    if goal_key not in GOALS:
        raise PeftMagicError(f"unknown goal '{goal}'", "goal= one of " + ", ".join(GOALS))
    if attn not in (None, "sdpa", "eager", "flash_attention_2", "flash"):
        raise PeftMagicError(f"unknown attention implementation '{attn}'", "attn= sdpa, eager or flash_attention_2")
    from .sketch import layer_count, resolve_optimizer

    opt = resolve_optimizer(optim)
    if model is None:
        raise PeftMagicError("which model?", "e.g. plan('smollm2'), a folder, a hub id, or a model in the kernel")
    subject = _subject(model, task)
    if measure and subject.live is None:
        raise PeftMagicError("--measure needs a model in the kernel", "load one first: %peft load smollm2")
    if isinstance(methods, str):
        methods = [methods]
    explicit = bool(methods)
    requests = _resolve_requests(list(methods or DEFAULT_METHODS), settings, explicit)
    target = resolve_target(gpu, dtype, subject.live, attn)

    notes: list[str] = []
    rows: list[MethodPlan] = []
    estimators: dict[str, tuple[_Estimator, Any]] = {}
    params = 0
    if subject.live is not None:
        resident = _resident(subject.live, target)
        if resident and target.available is not None:
            target.available += resident
            target.detail += f", plus {fmt_bytes(resident)} the model already holds"
        current = _current_row(subject, target, batch, seq, checkpointing, opt)
        if current is not None:
            rows.append(current)
    for req in requests:
        label = req.method
        try:
            est = _Estimator(subject, req, target, checkpointing, attn)
            label = _label(req, est.peft_config, target.dtype)
            account = est.account()
            step = est.step(batch, seq)
            parts = _parts(account, step, opt, target, req.spec is None)
        except PeftMagicError as e:
            rows.append(MethodPlan(req.method, label, None, error=e.message))
            continue
        except Exception as e:  # an architecture the meta device cannot run: say so in the row
            if os.environ.get("PEFT_MAGIC_DEBUG"):
                raise
            rows.append(MethodPlan(req.method, label, None, error=f"cannot trace: {first_line(e)[:120]}"))
            continue
        params = params or (account.total_params - (account.trainable_params if req.spec is not None else 0))
        row = MethodPlan(req.method, label, parts, trainable=account.trainable_params,
                         total_params=account.total_params, checkpointing=est.checkpointing,
                         available=target.available, settings=dict(req.settings), overlap=step.overlap)
        if step.overlap > 0.05 * parts.total:
            row.notes.append(f"gradients and activations peak at different moments: the real peak can be up to "
                             f"{fmt_bytes(step.overlap)} below this total (the plan adds them, to be safe)")
        if req.spec is None and target.dtype != "float32":
            row.notes.append(f"full fine-tuning keeps Adam's states in {target.dtype} here; the usual mixed-"
                             "precision recipe (fp32 master weights) needs about twice as much: dtype=fp32")
        if opt.paged:
            row.notes.append("paged optimizer states can spill to CPU RAM when the GPU runs short")
        if req.spec is not None and req.spec.info.is_prompt_learning and getattr(est.peft_config,
                                                                                  "num_virtual_tokens", None):
            row.notes.append(f"the model sees seq + {est.peft_config.num_virtual_tokens} virtual tokens")
        if limits and not req.quantized:
            with contextlib.suppress(Exception):
                flipped = _Estimator(subject, req, target, not checkpointing, attn)
                row.other = _parts(account, flipped.step(batch, seq), opt, target, req.spec is None)
        rows.append(row)
        estimators[req.method] = (est, account)

    params = params or _count_params(subject)
    method, reason = _recommend([r for r in rows if r.method != "current"], goal_key, target.available)
    rec = Recommendation(method, reason, goal=goal_key)
    if method and limits and target.available and method in estimators:
        est, account = estimators[method]
        full = est.req is not None and est.req.spec is None
        with contextlib.suppress(Exception):
            rec.batch, rec.seq, rec.seq_cap = _limits(est, account, opt, target, full, batch, seq)
            rec.checkpointing = est.checkpointing
            row = next(r for r in rows if r.method == method)
            if not row.fits and not est.checkpointing:
                rec.hints.append("gradient checkpointing (checkpointing=True / --checkpointing) cuts activations "
                                 "to about one layer's worth")
            if not rec.batch and not rec.seq:
                least = _parts(account, est.step(1, 64), opt, target, full).total
                rec.hints.append(f"even batch 1 × seq 64 needs {fmt_bytes(least)} with {method}: a GPU with more "
                                 "memory, or a smaller model")
    if target.kind == "cpu" and subject.live is None and not gpu:
        notes.append("no GPU in this kernel: planned for CPU RAM in fp32 (pass gpu='T4', '24GB', … to plan for a GPU)")
    plan_obj = Plan(
        model=subject.name, model_type=getattr(subject.config, "model_type", "?"), params=params,
        layers=layer_count(subject.config), batch=batch, seq=seq, grad_accum=grad_accum, optim=opt.name,
        dtype=target.dtype, target=target, rows=rows, recommendation=rec, checkpointing=checkpointing,
        notes=notes,
    )
    if measure:
        plan_obj.measurement = _measure(subject.live, batch=min(batch, 2), seq=min(seq, 64), target_batch=batch,
                                        target_seq=seq, optim=opt.name)
    plan_obj.seconds = time.perf_counter() - t0
    return plan_obj


def _current_row(subject: _Subject, target: Target, batch: int, seq: int, checkpointing: bool,
                 opt: Any) -> MethodPlan | None:
    """The live model's own setup (its adapters as attached), when it has any."""
    from .sketch import tensor_accounting
    from ..state import is_peft_model, state_for

    live = subject.live
    st = state_for(live)
    peft_model = live if is_peft_model(live) else (st.peft_model if st else None)
    if peft_model is None or not getattr(peft_model, "peft_config", None):
        return None
    described = []
    for name, cfg in peft_model.peft_config.items():
        rec = st.adapters.get(name) if st else None
        method = rec.method if rec else str(getattr(cfg.peft_type, "value", cfg.peft_type)).lower()
        settings = ", ".join(f"{k}={v}" for k, v in (rec.settings if rec else {}).items())
        described.append(f"{method} '{name}'" + (f" ({settings})" if settings else ""))
    label = "as attached now: " + "; ".join(described)
    try:
        est = _Estimator(subject, None, target, checkpointing, None)
        account = tensor_accounting(peft_model, cuda=target.cuda)
        step = est.step(batch, seq)
    except Exception as e:
        msg = e.message if isinstance(e, PeftMagicError) else f"cannot trace: {first_line(e)[:120]}"
        return MethodPlan("current", label, None, error=msg)
    parts = _parts(account, step, opt, target, False)
    return MethodPlan("current", label, parts, trainable=account.trainable_params, total_params=account.total_params,
                      checkpointing=est.checkpointing, available=target.available, overlap=step.overlap)


def _positive(name: str, value: Any) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise PeftMagicError(f"{name} must be a whole number, got {value!r}") from None
    if v < 1 or v != value:
        raise PeftMagicError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return v


def _count_params(subject: _Subject) -> int:
    if subject.base is not None:
        return sum(p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1) for p in subject.base.parameters())
    return 0


# ----------------------------------------------------------------------------- the model as it is


def _live_estimate(model: Any, batch: int, seq: int, checkpointing: bool, optim: str,
                   target: Target | None = None) -> tuple[Parts, Target, _Estimator, Any]:
    """Parts for training ``model`` exactly as it is now (its adapters, dtype, quantization)."""
    from .sketch import resolve_optimizer, tensor_accounting

    opt = resolve_optimizer(optim)
    subject = _subject(model, None)
    target = target or resolve_target(None, None, model)
    est = _Estimator(subject, None, target, checkpointing, None)
    account = tensor_accounting(model, cuda=target.cuda)
    parts = _parts(account, est.step(batch, seq), opt, target, _is_full(model))
    return parts, target, est, account  # est.step(batch, seq) is cached


def _is_full(model: Any) -> bool:
    """A model without adapters trains its own weights (full fine-tuning)."""
    from ..state import is_peft_model, state_for

    st = state_for(model)
    return not is_peft_model(model) and not (st is not None and st.peft_model is not None)


def _resident(model: Any, target: Target) -> int:
    """Bytes of the model already on the target device (part of the estimate, not of free)."""
    from ..memory import device_of
    from .sketch import tensor_accounting

    if target.named:
        return 0
    dev = device_of(model)
    if dev.split(":")[0] != target.kind:
        return 0
    return tensor_accounting(model, cuda=target.cuda).total


def check_fit(model: Any, *, batch: int, seq: int, grad_accum: int = 1, gradient_checkpointing: bool = False,
              optim: str = "adamw") -> FitVerdict:
    """Will training ``model`` as it is now fit on its device at ``batch`` × ``seq``?

    Fast (meta-device traces, no real forward) and never raises for ordinary models:
    anything it cannot estimate comes back as ``fits=None`` with the reason in
    ``message``. ``message`` is one line, ready to print as a warning.
    """
    try:
        _heavy.ensure()
        batch, seq = _positive("batch", batch), _positive("seq", seq)
        parts, target, est, account = _live_estimate(model, batch, seq, gradient_checkpointing, optim)
    except Exception as e:
        msg = e.message if isinstance(e, PeftMagicError) else first_line(e)
        return FitVerdict(None, 0, None, f"could not estimate the memory of this run: {msg}")
    resident = _resident(model, target)
    available = None if target.available is None else target.available + resident
    total = parts.total
    where = target.device if target.kind != "cpu" else "this machine's RAM"
    run = f"batch {batch} × seq {seq}" + (f", ×{grad_accum} accumulation" if grad_accum > 1 else "")
    if available is None:
        return FitVerdict(None, total, None, f"estimated {fmt_bytes(total)} for this run ({run}); "
                          f"free memory on {where} is unknown", parts, target.device)
    fits = total <= available
    free_text = (f"{fmt_bytes(available)} for it (the model's {fmt_bytes(resident)} plus "
                 f"{fmt_bytes(target.available)} free)" if resident else f"{fmt_bytes(available)} free")
    if fits:
        msg = f"estimated {fmt_bytes(total)} for this run ({run}); {where} has {free_text}"
        return FitVerdict(True, total, available, msg, parts, target.device)
    hints = _fit_hints(est, account, optim, target, resident, batch, seq, gradient_checkpointing)
    msg = (f"estimated {fmt_bytes(total)} for this run ({run}) but {where} has {free_text}"
           + (f" — try {' or '.join(hints)}" if hints else ""))
    return FitVerdict(False, total, available, msg, parts, target.device)


def _fit_hints(est: _Estimator, account: Any, optim: str, target: Target, resident: int, batch: int, seq: int,
               checkpointing: bool) -> list[str]:
    from .sketch import resolve_optimizer

    opt = resolve_optimizer(optim)
    full = _is_full(est.subject.live)
    room = Target(target.kind, target.label, (target.available or 0) + resident, target.dtype, target.kernel,
                  0, target.device, target.named)
    hints: list[str] = []
    with contextlib.suppress(Exception):
        def fits(b: int, s: int) -> bool:
            return _parts(account, est.step(b, s), opt, room, full).total <= (room.available or 0)

        if batch > 1:
            b = _largest(lambda x: fits(x, seq), 1, batch - 1)
            if b:
                hints.append(f"batch={b}" + (f" with grad_accum={-(-batch // b)}" if b < batch else ""))
        if not checkpointing and not est.checkpointing:
            hints.append("gradient checkpointing")
        if not hints and seq > 64:
            s = _largest(lambda x: fits(batch, x), 64, seq - 1)
            if s:
                hints.append(f"seq={s}")
        if account.quantized_layers == 0:
            hints.append("QLoRA (load with --4bit)")
    return hints


def measure(model: Any, *, batch: int = 2, seq: int = 64, optim: str = "adamw", steps: int = 2,
            target_batch: int | None = None, target_seq: int | None = None) -> Measurement:
    """Run ``steps`` real training steps on ``model`` and compare memory with the estimate.

    The steps use a plain torch forward / backward / AdamW step on random token ids of
    the model's vocabulary, with a learning rate of 0 so that no weight changes, and the
    random-number state restored: the model is exactly as it was afterwards. Peak memory
    comes from the CUDA allocator where the model is on a GPU, and from counting live
    tensor bytes on CPU.
    """
    import torch

    from ..memory import device_of
    from .sketch import tensor_accounting
    from .trace import forward_backward, grad_bytes, measure_step, step_inputs

    _heavy.ensure()
    batch, seq, steps = _positive("batch", batch), _positive("seq", seq), max(2, int(steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PeftMagicError("this model has nothing to train, so there is no training step to measure",
                             "attach an adapter first, e.g. %peft lora r=8")
    dev = device_of(model)
    cuda = dev.startswith("cuda")
    from ..model.load import infer_task

    task = infer_task(model)
    t0 = time.perf_counter()
    was_training = model.training
    devices = [torch.device(dev).index or 0] if cuda else []
    opt = torch.optim.AdamW(trainable, lr=0.0) if optim.startswith("adam") else torch.optim.SGD(trainable, lr=0.0)
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            for _ in range(steps - 1):  # warm-up: creates the optimizer states
                model.zero_grad(set_to_none=True)
                forward_backward(model, step_inputs(model, batch, seq, task, dev))
                opt.step()
            model.zero_grad(set_to_none=True)
            inputs = step_inputs(model, batch, seq, task, dev)
            if cuda:
                torch.cuda.synchronize(dev)
                before = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                forward_backward(model, inputs)
                torch.cuda.synchronize(dev)
                grads = grad_bytes(model)
                # the allocator keeps only the joint peak: activations are what it held
                # beyond the gradients (the estimate is read the same way below)
                peak = torch.cuda.max_memory_allocated(dev) - before
                activations = max(0, peak - grads)
                how = "torch.cuda peak allocated"
            else:
                m = measure_step(model, inputs)
                grads, activations, peak = m.grads, m.activations, m.peak
                how = "live tensor bytes"
            opt_bytes = 0
            seen: set[int] = set()
            for state in opt.state.values():
                for v in state.values():
                    if isinstance(v, torch.Tensor) and id(v.untyped_storage()) not in seen:
                        seen.add(id(v.untyped_storage()))
                        opt_bytes += int(v.untyped_storage().nbytes())
    finally:
        model.zero_grad(set_to_none=True)
        opt.state.clear()
        del opt
        model.train(was_training)
    account = tensor_accounting(model, cuda=cuda)
    full = _is_full(model)
    measured = Parts(weights=account.frozen + (account.trainable if full else 0),
                     adapter=0 if full else account.trainable, gradients=grads, optimizer=opt_bytes,
                     activations=activations)
    est_parts, target, est, acc = _live_estimate(model, batch, seq, False, optim)
    est_parts.overhead = 0
    est_step = est.step(batch, seq)
    if cuda:
        est_parts.activations = max(0, est_step.peak - est_step.grads)
    result = Measurement(batch, seq, dev, how, measured, est_parts, measured_peak=peak, estimated_peak=est_step.peak,
                         steps=steps, seconds=time.perf_counter() - t0)
    if target_batch and target_seq and (target_batch, target_seq) != (batch, seq):
        from .sketch import resolve_optimizer

        far = _parts(acc, est.step(target_batch, target_seq), resolve_optimizer(optim), target, full)
        ratio = measured.activations / est_parts.activations if est_parts.activations else 1.0
        far.activations = int(far.activations * ratio)
        result.extrapolated = far
        result.target_batch, result.target_seq = target_batch, target_seq
    return result


_measure = measure  # plan() takes a ``measure`` flag, which shadows the function inside it
