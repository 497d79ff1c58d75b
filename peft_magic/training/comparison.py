"""``%peft compare``: which method learns *this* task best in *this* budget, measured.

Each candidate (``lora``, ``ia3``, ``prefix``, … with its own settings) is attached to the
same base model, trained on the same data in the same order for the same number of
steps (each with its own default learning rate, or ``lr=`` for all), evaluated with the
task's own metrics when ``eval=`` is given, and taken off again. The rows are sorted by
the task's main metric (or the final loss), and a one-line reading says what the
cheapest candidate gave up against the best.

The user's model is left exactly as it was: its own adapters are taken off for the
comparison and put back into the same ``PeftModel`` with their weights, active adapter
and trainable flags (``peft_view.suspend`` / ``resume``), and every candidate's changes
to the base are rolled back (``adapter_ops.rollback``). A candidate that cannot attach,
runs out of memory or diverges gets its row marked with the one-line reason and the
others go on; the stop button ends the comparison with the finished rows kept.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import events, peft_view, stack
from ..errors import PeftMagicError
from ..fmt import fmt_bytes, fmt_metric, fmt_params
from ..model.properties import infer_task, require_model
from ..rendering import HtmlRepr
from ..state import ModelState, is_peft_model, state_for, unwrap
from ..tasks.families import family

#: the metric a comparison is sorted by, per task, and whether higher is better
MAIN_METRIC = {"CAUSAL_LM": ("perplexity", False), "SEQ_CLS": ("f1", True), "TOKEN_CLS": ("f1", True),
               "QUESTION_ANS": ("f1", True), "SEQ_2_SEQ_LM": ("rougeL", True)}
FINAL_LOSS_WINDOW = 5  # the final loss is the mean of the last few logged losses (one step is noisy)


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

    def as_event(self, index: int) -> dict[str, Any]:
        return {"index": index, "label": self.label, "status": self.status, "reason": self.reason,
                "trainable": self.trainable, "loss": self.loss, "metrics": dict(self.metrics),
                "peak_memory": self.peak_memory, "seconds": self.seconds, "run_id": self.run_id}


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
        headers = ["method", "status", "trainable", "steps", "final loss", *self.metric_names, "tokens/s",
                   "peak memory", "time"]
        rows = []
        for r in self.rows:
            rows.append([r.label, r.status if not r.reason else f"{r.status}: {r.reason}",
                         fmt_params(r.trainable) if r.trainable else "–", f"{r.steps}/{r.total_steps or self.steps}",
                         f"{r.loss:.4f}" if r.loss is not None else "–",
                         *[fmt_metric(m, r.metrics.get(m)) for m in self.metric_names],
                         f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "–",
                         fmt_bytes(r.peak_memory) if r.peak_memory else "–", f"{r.seconds:.1f} s"])
        return headers, rows

    def __repr__(self) -> str:
        from ..fmt import text_table

        headers, rows = self.table()
        head = (f"compare · {family(self.task).title} · {self.steps} steps each · sorted by {self.metric} "
                f"({'higher' if self.higher_is_better else 'lower'} is better)")
        return "\n".join([head, text_table(headers, rows)] + ([self.reading] if self.reading else [])
                         + [f"note: {n}" for n in self.notes])


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


# ----------------------------------------------------------------------------- one candidate


def _final_loss(losses: list[tuple[int, float]]) -> float | None:
    tail = [x for _, x in losses[-FINAL_LOSS_WINDOW:]]
    return sum(tail) / len(tail) if tail else None


def _train_one(c: Candidate, base: Any, index: int, data: Any, tokenizer: Any, steps: int, lr: Any,
               settings: dict[str, Any], keep_dir: Path | None) -> Any:
    """Attach, train, evaluate and take off one candidate; returns its run (None if it never ran)."""
    from ..adapter_ops.attach import attach
    from ..adapter_ops.rollback import restore, snapshot
    from ..adapter_ops.save import save
    from .run import train

    snap = snapshot(base)
    c.status = "training"
    events.emit("compare_row", **c.as_event(index))
    run = None
    cm = None
    try:
        cm = attach(base, c.method, name=f"compare_{index}", **c.settings).model
        c.trainable = peft_view.trainable_counts(cm)[0]
        events.emit("compare_row", **c.as_event(index))
        run = train(cm, data, tokenizer=tokenizer, steps=steps, **({"lr": lr} if lr else {}), **settings)
        if keep_dir is not None and run.status == "completed":
            folder = keep_dir / re.sub(r"[^\w.-]+", "-", c.label)
            save(cm, folder, force=True)
            c.kept = str(folder)
    except PeftMagicError as e:
        c.status, c.reason = "failed", e.message
    finally:
        if cm is not None and is_peft_model(cm):
            peft_view.unwrap_all(cm)
        restore(base, snap)
        st = state_for(base, create=True)
        st.adapters.clear()
        st.set_peft(None)  # the candidate's wrapper is gone with its layers
    return run


def _fill(c: Candidate, run: Any) -> None:
    if run is None:
        return
    c.run_id, c.steps, c.total_steps = run.run_id, run.steps_done, run.total_steps
    c.losses = list(run.losses)
    c.loss = _final_loss(run.losses)
    c.peak_memory, c.seconds = run.peak_memory, run.seconds
    c.tokens_per_s = run.tokens / run.seconds if run.seconds else None
    c.metrics = dict(run.eval_metrics[-1][1]) if run.eval_metrics else {}
    bad = next((s for s, x in run.losses if not math.isfinite(x)), None)
    if bad is not None:
        c.status, c.reason = "failed", f"diverged: the loss is not finite at step {bad}"
    elif run.status == "interrupted":
        c.status, c.reason = "stopped", run.message
    elif run.status == "completed":
        c.status = "done"
    else:
        c.status, c.reason = "failed", run.message


# ----------------------------------------------------------------------------- the table


def _sort_key(metric: str, higher: bool) -> Any:
    def key(c: Candidate) -> tuple[int, float]:
        value = c.metrics.get(metric) if metric != "loss" else c.loss
        if c.status != "done" or value is None or not math.isfinite(value):
            return (1, 0.0)
        return (0, -value if higher else value)

    return key


def reading(rows: list[Candidate], metric: str, higher: bool) -> str:
    """One line: what the smallest good candidate gave up against the best one."""
    done = [r for r in rows if r.status == "done"]
    if not done:
        return "no candidate finished"
    best = done[0]
    if len(done) == 1:
        return f"only {best.label} finished"

    def value(c: Candidate) -> float | None:
        return c.loss if metric == "loss" else c.metrics.get(metric)

    small = min(done, key=lambda c: c.trainable or 0)
    if small is best:
        return f"{best.label} was best on {metric} and also the smallest ({fmt_params(best.trainable or 0)} trainable)"
    vb, vs = value(best), value(small)
    if not vb or not vs:
        return f"{best.label} was best on {metric}"
    params = (small.trainable or 0) / (best.trainable or 1)
    memory = f" and {small.peak_memory / best.peak_memory:.1f}× its memory" if small.peak_memory and \
        best.peak_memory else ""
    if higher:
        return (f"{small.label} reached {vs / vb:.0%} of {best.label}'s {metric} with {params:.1%} of its "
                f"parameters{memory}")
    return (f"{small.label} had {vs / vb:.2f}× {best.label}'s {metric} (lower is better) with {params:.1%} of its "
            f"parameters{memory}")


# ----------------------------------------------------------------------------- compare


def _preference(data: Any, settings: dict[str, Any]) -> bool:
    """Whether the candidates are preference-tuned (``objective=``, or preference data)."""
    from ..tasks.data import to_records
    from ..tasks.preference import detect_preference

    if settings.get("objective") is not None:
        return True
    try:
        records, _ = to_records(data)
    except PeftMagicError:
        return False  # the first candidate's run says what is wrong with the data
    return detect_preference(records[:1]) is not None


def _keep(model: Any, rows: list[Candidate], st: ModelState, notes: list[str]) -> Any:
    """``keep``: load each kept candidate back as an adapter named after its method, where
    peft lets it sit beside the model's adapters; the rest stay in their folders."""
    from ..adapter_ops.load import load_adapter

    for c in rows:
        if not c.kept:
            continue
        pm = st.peft_model
        name = re.sub(r"[^\w-]+", "_", c.method)
        while pm is not None and name in pm.peft_config:
            name += "_2"
        try:
            model = load_adapter(pm if pm is not None else model, c.kept, name=name, trainable=True).model
            c.kept = name
        except PeftMagicError as e:
            notes.append(f"{c.label} is saved in {c.kept} ({e.message})")
    return model


def compare(model: Any, methods: Any, data: Any, *, tokenizer: Any, steps: int = 100, eval: Any = None,
            lr: float | None = None, keep: bool = False, keep_dir: str | Path = "adapters/compare",
            **settings: Any) -> Comparison:
    """Train each of ``methods`` on ``data`` for ``steps`` steps from the same base; the rows.

    ``methods``: ``["lora", "ia3"]``, ``"lora,ia3"``, or with settings ``[("lora", {"r": 16}),
    "ia3"]``. ``eval`` (data or a fraction) adds the task's metrics; ``lr`` sets one
    learning rate for all (default: each method's own); other keywords are training
    settings (``batch``, ``max_len``, …), ``objective=`` and its settings included
    (preference data: each candidate is DPO-, IPO-, … tuned, sorted by the held-out reward
    margin with ``eval=``). ``keep=True`` keeps each trained candidate as an
    adapter named after its method (saved under ``keep_dir`` as well). The model is left
    exactly as it was otherwise.
    """
    stack.ensure()
    require_model(model)
    if tokenizer is None:
        raise PeftMagicError("compare needs the model's tokenizer", "pass tokenizer=… (--tokenizer VAR)")
    if not isinstance(steps, int) or steps < 1:
        raise PeftMagicError(f"steps must be a whole number ≥ 1, got {steps!r}")
    rows = parse_candidates(methods)
    t0 = time.perf_counter()
    base = unwrap(model)
    st = state_for(base, create=True)
    task = infer_task(model) or "CAUSAL_LM"
    family(task)
    metric, higher = MAIN_METRIC.get(task, ("loss", False)) if eval is not None else ("loss", False)
    if eval is not None and _preference(data, settings):  # TRL's held-out reward margin, higher is better
        metric, higher = "margin", True
    user_pm = st.peft_model if st.peft_model is not None and peft_view.configs(st.peft_model) else None
    saved_records, saved_pm = dict(st.adapters), st.peft_model
    saved = peft_view.suspend(user_pm) if user_pm is not None else None
    st.adapters.clear()
    st.set_peft(None)
    events.emit("compare_start", labels=[c.label for c in rows], steps=steps, task=task, metric=metric)
    out_dir = Path(keep_dir) if keep else None
    try:
        for i, c in enumerate(rows):
            run = _train_one(c, base, i, data, tokenizer, steps, lr, dict(settings, **({"eval": eval} if eval is not None
                                                                                   else {})), out_dir)
            _fill(c, run)
            events.emit("compare_row", **c.as_event(i))
            if c.status == "stopped":
                for later in rows[i + 1:]:
                    later.status, later.reason = "stopped", "the comparison was stopped"
                break
    finally:
        st.adapters.clear()
        st.adapters.update(saved_records)
        st.set_peft(saved_pm)
        if saved is not None:
            peft_view.resume(user_pm, saved)
    rows.sort(key=_sort_key(metric, higher))
    result = Comparison(task, rows, steps, metric, higher, reading(rows, metric, higher),
                        time.perf_counter() - t0, model)
    if keep:
        result.model = _keep(model, rows, st, result.notes)
    events.emit("compare_end", rows=[c.as_event(i) for i, c in enumerate(rows)], reading=result.reading)
    return result
