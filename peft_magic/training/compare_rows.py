"""The rows of a ``%peft compare`` and how they read: each candidate's record, the table
(with spreads when runs were repeated), the order, and the one-line reading that names a
winner only when the gap is larger than the spreads."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError
from ..fmt import fmt_bytes, fmt_metric, fmt_params
from ..rendering import HtmlRepr
from ..tasks.families import family

#: the metric a comparison is sorted by, per task, and whether higher is better
MAIN_METRIC = {"CAUSAL_LM": ("perplexity", False), "SEQ_CLS": ("f1", True), "TOKEN_CLS": ("f1", True),
               "QUESTION_ANS": ("f1", True), "SEQ_2_SEQ_LM": ("rougeL", True)}
FINAL_LOSS_WINDOW = 5  # the final loss is the mean of the last few logged losses (one step is noisy)
UNDER_TRAINED = 0.05  # a loss that fell by less than this share of its start did not really train


@dataclass
class Candidate:
    """One row of a comparison."""

    label: str  # "lora r=16"
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = "waiting"  # waiting | training | done | failed | stopped
    reason: str | None = None
    trainable: int | None = None
    steps: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    peak_memory: int | None = None
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: int | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    kept: str | None = None  # where --keep put it: an adapter name, or a folder
    lr: float | None = None  # the learning rate of its run (chosen by the search with lr=auto)
    search: Any = None  # lr_search.Search with lr=auto
    spreads: dict[str, float] = field(default_factory=dict)  # repeats > 1: standard deviation per metric
    repeats: int = 1
    adapter_bytes: int | None = None  # what its adapter file holds (the trainable tensors)
    flags: list[str] = field(default_factory=list)  # "under-trained at this budget: …"

    def value(self, metric: str) -> float | None:
        return self.loss if metric == "loss" else self.metrics.get(metric)

    def spread(self, metric: str) -> float:
        return self.spreads.get(metric, 0.0)

    def as_event(self, index: int) -> dict[str, Any]:
        return {"index": index, "label": self.label, "status": self.status, "reason": self.reason,
                "trainable": self.trainable, "loss": self.loss, "metrics": dict(self.metrics),
                "peak_memory": self.peak_memory, "seconds": self.seconds, "run_id": self.run_id, "lr": self.lr}


@dataclass
class Comparison(HtmlRepr):
    """The finished comparison: ``rows`` sorted best first; ``model`` is the model to use
    afterwards (a new PeftModel only when ``keep`` put adapters on a plain model)."""

    task: str
    rows: list[Candidate]
    steps: int
    metric: str  # what the rows are sorted by: a metric name or "loss"
    higher_is_better: bool
    reading: str = ""
    seconds: float = 0.0
    model: Any = None
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, label: str) -> Candidate:
        """The row with this label (``"lora r=16"``), else the first row of this method."""
        for r in self.rows:
            if r.label == label:
                return r
        for r in self.rows:
            if r.method == label:
                return r
        raise KeyError(label)

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for r in self.rows:
            names += [m for m in r.metrics if m not in names]
        return names

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and text cells (the HTML view marks the best per column)."""
        headers = ["method", "status", "lr", "trainable", "adapter size", "steps", "final loss", *self.metric_names,
                   "tokens/s", "peak memory", "time"]
        rows = []
        for r in self.rows:
            status = r.status if not r.reason else f"{r.status}: {r.reason}"
            rows.append([r.label, "; ".join([status] + r.flags), f"{r.lr:.1e}" if r.lr else "–",
                         fmt_params(r.trainable) if r.trainable else "–",
                         fmt_bytes(r.adapter_bytes) if r.adapter_bytes else "–",
                         f"{r.steps}/{r.total_steps or self.steps}", self._cell(r, "loss"),
                         *[self._cell(r, m) for m in self.metric_names],
                         f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "–",
                         fmt_bytes(r.peak_memory) if r.peak_memory else "–", f"{r.seconds:.1f} s"])
        return headers, rows

    @staticmethod
    def _cell(r: Candidate, metric: str) -> str:
        value = r.value(metric)
        if value is None:
            return "–"
        text = f"{value:.4f}" if metric == "loss" else fmt_metric(metric, value)
        if r.repeats > 1 and metric in r.spreads:
            spread = r.spread(metric)
            text += f" ± {spread:.4f}" if metric == "loss" else f" ± {fmt_metric(metric, spread)}"
        return text

    def searches(self) -> list[str]:
        """One line per candidate whose rate was searched: every probe, the rate chosen."""
        return [f"{r.label}: {r.search}" for r in self.rows if r.search is not None]

    def __repr__(self) -> str:
        from ..fmt import text_table

        headers, rows = self.table()
        head = (f"compare · {family(self.task).title} · {self.steps} steps each · sorted by {self.metric} "
                f"({'higher' if self.higher_is_better else 'lower'} is better)")
        search = ["learning rates (lr=auto):"] + [f"  {line}" for line in self.searches()] if self.searches() else []
        return "\n".join([head, text_table(headers, rows)] + ([self.reading] if self.reading else [])
                         + search + [f"note: {n}" for n in self.notes])


# ----------------------------------------------------------------------------- candidates


def _label(method: str, settings: dict[str, Any]) -> str:
    return " ".join([method] + [f"{k}={v}" for k, v in settings.items()])


def parse_candidates(methods: Any) -> list[Candidate]:
    """``["lora", "ia3"]``, ``[("lora", {"r": 16}), "ia3"]`` or ``{"lora": {"r": 16}}`` → rows."""
    if isinstance(methods, str):
        methods = [m for m in re.split(r"[,\s]+", methods) if m]
    if isinstance(methods, dict):
        methods = list(methods.items())
    out = []
    for m in methods or []:
        method, settings = (m, {}) if isinstance(m, str) else (m[0], dict(m[1] or {}))
        out.append(Candidate(_label(method, settings), method, settings))
    if len(out) < 2:
        raise PeftMagicError("compare needs at least two methods", "e.g. %peft compare lora,ia3 data=texts steps=50")
    labels = [c.label for c in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise PeftMagicError(f"{dup[0]} is in the list twice", "give each candidate once (or with other settings)")
    return out


# ----------------------------------------------------------------------------- the table


def sort_key(metric: str, higher: bool) -> Any:
    def key(c: Candidate) -> tuple[int, float]:
        value = c.metrics.get(metric) if metric != "loss" else c.loss
        if c.status != "done" or value is None or not math.isfinite(value):
            return (1, 0.0)
        return (0, -value if higher else value)

    return key


def _clear_gap(a: Candidate, b: Candidate, metric: str) -> bool:
    """Whether ``a`` and ``b`` differ by more than their spreads (always, without repeats)."""
    va, vb = a.value(metric), b.value(metric)
    if va is None or vb is None:
        return True
    if a.repeats < 2 and b.repeats < 2:
        return True
    return abs(va - vb) > a.spread(metric) + b.spread(metric)


def reading(rows: list[Candidate], metric: str, higher: bool) -> str:
    """One line: the winner (only when its gap is larger than the spreads), and what the
    smallest good candidate gave up against the best."""
    done = [r for r in rows if r.status == "done"]
    if not done:
        return "no candidate finished"
    best = done[0]
    if len(done) == 1:
        return f"only {best.label} finished"
    runner = done[1]
    if not _clear_gap(best, runner, metric):
        fmt = (lambda c: f"{c.value(metric):.4g} ± {c.spread(metric):.2g}")  # noqa: E731
        return (f"no clear winner between {best.label} ({fmt(best)}) and {runner.label} ({fmt(runner)}) at this "
                f"budget: the gap is within the spread of {best.repeats} runs")
    small = min(done, key=lambda c: c.trainable or 0)
    if small is best:
        return f"{best.label}: best {metric}, and the smallest ({fmt_params(best.trainable or 0)} trainable)"
    vb, vs = best.value(metric), small.value(metric)
    if not vb or not vs:
        return f"{best.label}: best {metric}"
    share = vs / vb if higher else vb / vs  # of the best's quality
    params = (small.trainable or 0) / (best.trainable or 1)
    memory = f", {small.peak_memory / best.peak_memory:.1f}× its peak memory" if small.peak_memory and \
        best.peak_memory else ""
    return (f"{best.label}: best {metric}; {small.label}: {share:.0%} of it with {params:.1%} of the "
            f"parameters{memory}")


