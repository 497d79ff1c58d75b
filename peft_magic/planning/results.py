"""What ``%peft plan`` and ``check_fit`` return: memory by part, verdicts, recommendations.

Data objects with text views (``lines()`` / ``repr``); the notebook's table with bars
is drawn by ``display/plan_html.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fmt import fmt_bytes, fmt_params, short_dtype
from ..rendering import HtmlRepr

PART_NAMES = ("weights", "adapter", "gradients", "optimizer", "activations", "overhead")
#: "tight" above this share of the available memory
TIGHT = 0.9
#: the largest batch a plan searches up to
BATCH_CAP = 4096


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
class Plan(HtmlRepr):
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
    sharding: str | None = None  # "per GPU of 4 with FSDP FULL_SHARD" (%peft plan --gpus N --strategy S)
    fused_loss: bool = False  # the totals count the loss computed without the logits (fused_loss)
    logits: tuple[int, int] | None = None  # the loss's own peak: the model's way, fused

    def logits_line(self) -> str:
        """``logits 2.4 GB → fused 0.1 GB`` (which one the totals count), or ``""``."""
        if self.logits is None:
            return ""
        standard, fused = self.logits
        if self.fused_loss:
            return (f"logits {fmt_bytes(standard)} → fused {fmt_bytes(fused)}: the totals count the loss computed "
                    "a chunk of tokens at a time, as %peft train does (fused_loss=False for the model's own loss)")
        return (f"logits {fmt_bytes(standard)} (counted in the totals) → fused {fmt_bytes(fused)} with "
                "fused_loss=True")

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
        return (f"Memory plan for {self.model} ({self.model_type}, {fmt_params(self.params)} params{layers}) · "
                f"batch {self.batch}{ga} × seq {self.seq} · {self.optim} · {short_dtype(self.dtype)}{ck} · "
                f"on {self.target.label}" + (f" · {self.sharding}" if self.sharding else ""))

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
        if self.logits_line():
            out.append(self.logits_line())
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "params": self.params, "batch": self.batch, "seq": self.seq,
            "grad_accum": self.grad_accum, "optim": self.optim, "dtype": self.dtype, "target": self.target.label,
            "available": self.target.available, "sharding": self.sharding, "fused_loss": self.fused_loss,
            "logits": dict(zip(("standard", "fused"), self.logits)) if self.logits else None,
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
