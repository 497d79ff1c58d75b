"""What a ``--profile`` says: the :class:`Profile` (the run record's ``profile``), its text
view, and the plain-language hints drawn from its numbers.

The recorder that measures it is ``training/profiling.py``; the HTML is
``display/profile_html.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...fmt import fmt_bytes
from ...rendering import HtmlRepr

#: (key, label) of the phases, in table order ("evaluation" only when it ran)
PHASES = (("data", "data loading / collation"), ("forward", "forward"), ("backward", "backward"),
          ("optimizer", "optimizer step"), ("callbacks", "our callbacks + display"), ("evaluation", "evaluation"),
          ("other", "other (Trainer bookkeeping)"))
DEFAULT_STEPS = 5


@dataclass
class ProfileRequest:
    """What to profile: ``steps`` steps after ``warmup`` unprofiled ones; a trace to ``trace``."""

    steps: int = DEFAULT_STEPS
    warmup: int = 1
    trace: str | None = None


@dataclass
class PhaseTime:
    """One row of the phase table: mean ms per step, share of the step, peak memory."""

    name: str
    label: str
    ms: float
    share: float
    peak: int | None = None  # the phase's peak (CUDA allocator / process RSS)
    rise: int | None = None  # the most that peak rose above the phase's start
    #: the phase's ms in each profiled step: one slow step (the OS took the core) shows as one
    ms_each: list[float] = field(default_factory=list)


@dataclass
class OpTime:
    """One operator: self time per step (ms), share of the step, calls per step."""

    name: str
    self_ms: float
    share: float
    calls: float


@dataclass
class Profile(HtmlRepr):
    """Where the profiled steps' time went (``run.profile``; ``%peft profile`` returns it)."""

    steps: int
    warmup: int
    step_ms: float  # mean measured step
    phases: list[PhaseTime]
    ops: list[OpTime]
    hints: list[str]
    device: str
    memory_kind: str  # "CUDA" | "RAM"
    step_ms_each: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None  # real tokens/s over the profiled steps
    attention_share: float | None = None  # attention operators / forward
    trace: str | None = None  # the Chrome / Perfetto trace, with --trace
    notes: list[str] = field(default_factory=list)
    overhead_ms: float = 0.0  # the profiler's own bookkeeping per step, left out of step_ms
    overhead_ms_each: list[float] = field(default_factory=list)  # … in each profiled step

    def phase(self, name: str) -> PhaseTime:
        return next(p for p in self.phases if p.name == name)

    @property
    def total_ms(self) -> float:
        """The rows' sum: the measured step time."""
        return sum(p.ms for p in self.phases)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def headline(self) -> str:
        rate = f" · {self.tokens_per_s:,.0f} tokens/s" if self.tokens_per_s else ""
        return (f"profile of {self.steps} step{'s' * (self.steps != 1)} after {self.warmup} warm-up "
                f"({self.device}): {self.step_ms:.1f} ms a step{rate}")

    def __repr__(self) -> str:
        from ...fmt import text_table

        mem = "peak CUDA" if self.memory_kind == "CUDA" else "peak RAM"
        rows = [[p.label, f"{p.ms:.2f}", f"{p.share:.1%}", fmt_bytes(p.peak) if p.peak else "–",
                 f"+{fmt_bytes(p.rise)}" if p.rise is not None else "–"] for p in self.phases]
        rows.append(["total (measured step)", f"{self.total_ms:.2f}", "100.0%", "", ""])
        out = [self.headline, text_table(["phase", "ms/step", "%", mem, "rise in phase"], rows)]
        if self.ops:
            out.append("top operators by self time")
            out.append(text_table(["operator", "ms/step", "% of step", "calls/step"],
                                  [[o.name, f"{o.self_ms:.2f}", f"{o.share:.1%}", f"{o.calls:g}"] for o in self.ops]))
        out += [f"hint: {h}" for h in self.hints] + [f"note: {n}" for n in self.notes]
        if self.overhead_ms:
            out.append(f"the profiler's own bookkeeping ({self.overhead_ms:.2f} ms a step) is left out of the step")
        if self.trace:
            out.append(f"trace: {self.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
        return "\n".join(out)


# ----------------------------------------------------------------------------- hints


def hints(p: Profile, facts: dict[str, Any]) -> list[str]:
    """Plain-language advice drawn from the numbers (``facts``: what the run was set up with:
    optim, trainable, tensors, attn, checkpointing, compiled, workers)."""
    out: list[str] = []
    share = {row.name: row.share for row in p.phases}
    if share.get("data", 0) > 0.10:
        out.append(f"data loading takes {share['data']:.0%} of each step: dataloader_num_workers=2 (or more) "
                   "prepares the next batches while the model computes")
    attn = p.attention_share
    if attn is not None and attn > 0.40:
        impl = facts.get("attn") or "?"
        better = "sdpa" if impl == "eager" else ("flash_attention_2" if p.device.startswith("cuda") else None)
        what = (f"load the model with attn_implementation='{better}' (now '{impl}')" if better else
                "shorter sequences (max_len) make it cheaper: its cost grows with the square of the length")
        out.append(f"attention is {attn:.0%} of the forward pass: {what}")
    opt = share.get("optimizer", 0)
    optim = str(facts.get("optim") or "")
    if opt > 0.10 and "fused" not in optim:
        size = f" for {facts['trainable']:,} trainable parameters" if facts.get("trainable") else ""
        tensors = f" in {facts['tensors']:,} tensors" if facts.get("tensors") else ""
        out.append(f"the optimizer step takes {opt:.0%} of each step{size}{tensors}: optim=adamw_torch_fused updates "
                   "them all in one fused kernel instead of one small update per tensor")
    if share.get("callbacks", 0) > 0.05:
        out.append(f"our callbacks and display take {share['callbacks']:.0%} of each step: display='none' or "
                   "logging_steps=10 makes them cheaper")
    if facts.get("checkpointing") and share.get("backward", 0) > 2.5 * max(share.get("forward", 0), 1e-9):
        out.append("the backward pass recomputes the forward (gradient checkpointing): turn it off when memory "
                   "allows, it costs about one extra forward per step")
    if share.get("other", 0) > 0.20:
        out.append(f"{share['other']:.0%} of each step is Trainer bookkeeping between the phases (logging every "
                   "step, FLOP counting): logging_steps=10 reduces it")
    return out
