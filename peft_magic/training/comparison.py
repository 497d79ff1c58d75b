"""``%peft compare``: which method learns *this* task best in *this* budget, measured.

Each candidate (``lora``, ``ia3``, ``prefix``, … with its own settings) is attached to the
same base model, trained on the same data in the same order for the same number of
steps, evaluated with the task's own metrics when ``eval=`` is given, and taken off
again. Each gets its own learning rate by default (``lr=auto``: a short, budgeted search,
``lr_search.py``; ``lr=default`` for each method's default, ``lr=X`` for one rate for all).
``repeats=K`` trains each K times from different seeds (data order, adapter init) and
gives mean ± spread. The rows are sorted by the task's main metric (or the final loss);
the reading names a winner only when the gap is larger than the spreads, and says what the
cheapest candidate gave up against the best. A candidate whose loss hardly moved is marked
under-trained with the reason; one that diverged says so.

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
from pathlib import Path
from typing import Any

from .. import events, peft_view, stack
from ..errors import PeftMagicError
from ..memory import device_of
from ..memory import reading as memory_reading
from ..model.properties import infer_task, require_model
from ..state import ModelState, is_peft_model, state_for, unwrap
from ..tasks.families import family
from .compare_rows import (
    FINAL_LOSS_WINDOW,
    MAIN_METRIC,
    UNDER_TRAINED,
    Candidate,
    Comparison,
    parse_candidates,
    reading,
    sort_key,
)
from .lr_search import DIVERGED

# ----------------------------------------------------------------------------- one candidate


def _final_loss(losses: list[tuple[int, float]]) -> float | None:
    tail = [x for _, x in losses[-FINAL_LOSS_WINDOW:]]
    return sum(tail) / len(tail) if tail else None


def _release() -> None:
    """Give back what a candidate held, so the next row's peak memory is its own: the
    Trainer's end already collected its cycles (accelerate's ``free_memory``), so what is
    left is the allocators' cache — CUDA's, and on Linux the heap pages glibc keeps."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages otherwise
    except (OSError, AttributeError):
        pass


class _Attached:
    """One candidate attached to the base for the length of a ``with`` block, then taken off
    with every change to the base rolled back (``seed``: the adapter's initial weights)."""

    def __init__(self, c: Candidate, base: Any, index: int, seed: int) -> None:
        self.c, self.base, self.index, self.seed = c, base, index, seed
        self.model: Any = None

    def __enter__(self) -> Any:
        import torch

        from ..adapter_ops.attach import attach
        from ..adapter_ops.rollback import snapshot

        self.snap = snapshot(self.base)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model = attach(self.base, self.c.method, name=f"compare_{self.index}", **self.c.settings).model
        return self.model

    def __exit__(self, *exc: object) -> None:
        from ..adapter_ops.rollback import restore

        if self.model is not None and is_peft_model(self.model):
            peft_view.unwrap_all(self.model)
        restore(self.base, self.snap)
        st = state_for(self.base, create=True)
        st.adapters.clear()
        st.set_peft(None)  # the candidate's wrapper is gone with its layers
        self.model = None
        _release()


def _probe(c: Candidate, base: Any, index: int, data: Any, tokenizer: Any, eval_data: Any, settings: dict[str, Any],
           seed: int) -> Any:
    """``train_probe`` for the learning-rate search: a fresh copy of the candidate, trained
    ``steps`` steps at ``lr``; (first training loss, score)."""
    from ..inference.evaluate import evaluate
    from .run import train

    plain = {k: v for k, v in settings.items() if k != "eval"}

    def train_probe(lr: float, steps: int) -> tuple[float | None, float | None]:
        with _Attached(c, base, index, seed) as cm:
            run = train(cm, data, tokenizer=tokenizer, steps=steps, lr=lr, seed=seed, keep_run=False, autosave=False,
                        **plain)
            first = run.losses[0][1] if run.losses else None
            if run.status == "interrupted":  # the stop button ends the comparison, not just this probe
                raise KeyboardInterrupt
            if run.status != "completed":
                raise PeftMagicError(run.message or run.status)
            if eval_data is None or isinstance(eval_data, float):
                return first, _final_loss(run.losses[-2:])
            return first, float(evaluate(cm, eval_data, tokenizer=tokenizer).metrics["loss"])

    return train_probe


def _train_one(c: Candidate, base: Any, index: int, data: Any, tokenizer: Any, steps: int, lr: Any,
               settings: dict[str, Any], keep_dir: Path | None, seed: int) -> Any:
    """Attach, train, evaluate and take off one candidate; returns its run (None if it never ran)."""
    from ..adapter_ops.save import save
    from .run import train

    run = None
    try:
        with _Attached(c, base, index, seed) as cm:
            c.trainable = peft_view.trainable_counts(cm)[0]
            c.adapter_bytes = sum(p.numel() * p.element_size() for p in cm.parameters() if p.requires_grad)
            events.emit("compare_row", **c.as_event(index))
            run = train(cm, data, tokenizer=tokenizer, steps=steps, autosave=False, seed=seed,
                        **({"lr": lr} if lr else {}), **settings)
            if keep_dir is not None and run.status == "completed":
                folder = keep_dir / re.sub(r"[^\w.-]+", "-", c.label)
                save(cm, folder, force=True)
                c.kept = str(folder)
    except PeftMagicError as e:
        c.status, c.reason = "failed", e.message
    return run


def _fill(c: Candidate, runs: list[Any], steps: int, baseline: int | None = None) -> None:
    """The row from its run(s): the last run's record; with repeats, means and spreads.

    Peak memory is the row's own: what its run added above the memory it started with, on
    top of the comparison's ``baseline`` (what the process held before the first
    candidate) — so what an earlier candidate left in the allocator's cache is not
    counted again."""
    import statistics

    runs = [r for r in runs if r is not None]
    if not runs:
        return
    run = runs[-1]
    c.run_id, c.steps, c.total_steps = run.run_id, run.steps_done, run.total_steps
    c.losses = list(run.losses)
    added = [r.peak_memory - r.memory_at_start for r in runs if r.peak_memory and r.memory_at_start is not None]
    c.peak_memory = (baseline + max(added)) if baseline is not None and added else \
        (max((r.peak_memory or 0) for r in runs) or None)
    c.seconds = sum(r.seconds for r in runs)
    c.tokens_per_s = sum(r.tokens for r in runs) / c.seconds if c.seconds else None
    c.lr = c.lr or run.learning_rate or (float(run.settings["lr"]) if "lr" in run.settings else None)
    per_run = [dict(r.eval_metrics[-1][1]) if r.eval_metrics else {} for r in runs]
    losses = [_final_loss(r.losses) for r in runs]
    c.repeats = len(runs)
    c.loss = statistics.fmean(x for x in losses if x is not None) if any(x is not None for x in losses) else None
    c.metrics = {m: statistics.fmean(d[m] for d in per_run) for m in per_run[0] if all(m in d for d in per_run)}
    if len(runs) > 1:
        c.spreads = {m: statistics.stdev([d[m] for d in per_run]) for m in c.metrics}
        if all(x is not None for x in losses):
            c.spreads["loss"] = statistics.stdev(losses)
    bad = next((s for r in runs for s, x in r.losses if not math.isfinite(x)), None)
    first = run.losses[0][1] if run.losses else None
    if bad is not None:
        c.status, c.reason = "failed", f"diverged: the loss is not finite at step {bad}"
    elif first and c.loss is not None and c.loss > DIVERGED * first:
        rate = f" at lr {c.lr:.0e}" if c.lr else ""
        c.status, c.reason = "failed", f"diverged{rate}: the loss rose from {first:.3g} to {c.loss:.3g}"
    elif run.status == "interrupted":
        c.status, c.reason = "stopped", run.message
    elif run.status == "completed":
        c.status = "done"
        if first and c.loss is not None and c.loss > first * (1 - UNDER_TRAINED):
            rate = f"lr {c.lr:.0e}" if c.lr else "its learning rate"
            advice = "more steps" if c.search is not None else "more steps or lr=auto"
            c.flags.append(f"under-trained at this budget: the loss fell {max(0.0, 1 - c.loss / first):.0%} in "
                           f"{steps} steps ({rate}) — {advice}")
    else:
        c.status, c.reason = "failed", run.message


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


def _lr_request(lr: Any) -> Any:
    """``"auto"`` (search), ``"default"`` (each method's own), or one rate for all."""
    if lr is None:
        return "auto"
    if isinstance(lr, str) and lr.lower() in ("auto", "default"):
        return lr.lower()
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
        return float(lr)
    raise PeftMagicError(f"lr must be auto, default or a number > 0, got {lr!r}",
                         "lr=auto searches each method's rate; lr=default uses each method's default")


def _search(c: Candidate, base: Any, index: int, data: Any, tokenizer: Any, eval: Any, steps: int,
            settings: dict[str, Any], seed: int) -> None:
    """``lr=auto`` for one candidate: the search's probes, shown on its row while they run."""
    from ..peft_methods.behaviour import default_lr
    from ..peft_methods.discovery import resolve_method
    from .lr_search import search

    try:
        peft_type = resolve_method(c.method).info.peft_type
    except PeftMagicError as e:
        c.status, c.reason = "failed", e.message
        return

    def shown(i: int, most: int, lr: float) -> None:
        c.status, c.reason = "searching", f"lr {lr:.0e} (probe {i + 1} of ≤{most})"
        events.emit("compare_row", **c.as_event(index))

    scored_on = "eval loss" if eval is not None and not isinstance(eval, float) else "training loss"
    import gc

    c.search = search(_probe(c, base, index, data, tokenizer, eval, settings, seed),
                      default_lr(peft_type, c.method), steps, on_probe=shown, scored_on=scored_on)
    gc.collect()  # what the probes left in cycles, once (their runs skip it)
    c.lr, c.status, c.reason = c.search.chosen, "training", None


def compare(model: Any, methods: Any, data: Any, *, tokenizer: Any, steps: int = 100, eval: Any = None,
            lr: Any = "auto", repeats: int = 1, seed: int = 42, keep: bool = False,
            keep_dir: str | Path = "adapters/compare", **settings: Any) -> Comparison:
    """Train each of ``methods`` on ``data`` for ``steps`` steps from the same base; the rows.

    ``methods``: ``["lora", "ia3"]``, ``"lora,ia3"``, or with settings ``[("lora", {"r": 16}),
    "ia3"]``. ``eval`` (data or a fraction) adds the task's metrics. ``lr``: ``"auto"``
    (default: each method's own rate from a short search, ``lr_search.py``), ``"default"``
    (each method's default rate) or one rate for all. ``repeats=K`` trains each candidate K
    times (seeds ``seed`` … ``seed + K - 1``: data order and adapter init) for mean ± spread.
    Other keywords are training settings (``batch``, ``max_len``, …), ``objective=`` and its
    settings included (preference data: each candidate is DPO-, IPO-, … tuned, sorted by the
    held-out reward margin with ``eval=``). ``keep=True`` keeps each
    trained candidate as an adapter named after its method (saved under ``keep_dir`` as well).
    The model is left exactly as it was otherwise.
    """
    stack.ensure()
    require_model(model)
    if tokenizer is None:
        raise PeftMagicError("compare needs the model's tokenizer", "pass tokenizer=… (--tokenizer VAR)")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise PeftMagicError(f"steps must be a whole number ≥ 1, got {steps!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise PeftMagicError(f"repeats must be a whole number ≥ 1, got {repeats!r}")
    lr = _lr_request(lr)
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
    train_settings = dict(settings, **({"eval": eval} if eval is not None else {}))
    baseline = memory_reading(device_of(base)).used
    try:
        for i, c in enumerate(rows):
            try:
                if lr == "auto":
                    _search(c, base, i, data, tokenizer, eval, steps, settings, seed)
                elif isinstance(lr, float):
                    c.lr = lr
            except KeyboardInterrupt:
                c.status, c.reason = "stopped", "stopped while searching its learning rate"
            runs: list[Any] = []
            for k in range(repeats if c.status not in ("failed", "stopped") else 0):
                run = _train_one(c, base, i, data, tokenizer, steps, c.lr, train_settings,
                                 out_dir if k == repeats - 1 else None, seed + k)
                runs.append(run)
                if run is None or run.status != "completed":
                    break
            _fill(c, runs, steps, baseline)
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
    rows.sort(key=sort_key(metric, higher))
    result = Comparison(task, rows, steps, metric, higher, reading(rows, metric, higher),
                        time.perf_counter() - t0, model)
    searched = sum(r.search.seconds for r in rows if r.search is not None)
    if searched:
        result.notes.append(f"the learning-rate search took {searched:.0f} s of the comparison's "
                            f"{result.seconds:.0f} s (lr=auto; lr=default skips it)")
    if keep:
        result.model = _keep(model, rows, st, result.notes)
    events.emit("compare_end", rows=[c.as_event(i) for i, c in enumerate(rows)], reading=result.reading)
    return result
