"""``lr=auto``: each method's own learning rate for a short run, found by a budgeted search.

Why: the defaults are meant for long runs, and at a notebook's budget of a few dozen steps
the learning rate decides a comparison — LoRA at its default 2e-4 barely moves in 12 steps,
at 6e-3 it ties the best method. peft's own method-comparison benchmark tunes each
method's rate and holds everything else fixed; this does the same within a bound.

How: a log-spaced grid around the method's default (``GRID``: ⅓× … 30×, clipped to
``MAX_LR``), each rate trained from the same start for a third of the run's steps and
scored on the held-out loss (the training loss of its last steps without ``eval=``); rates
that diverge are dropped; the best goes on to the full run. The cost is bounded: five
probes of a third of the steps each, about 1.7 runs' worth of steps before the real one
(``probe_steps``), reported beside the result so the user sees the search was real.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: the rates tried, as multiples of the method's default
GRID = (1 / 3, 1.0, 3.0, 10.0, 30.0)
MAX_LR = 1.0
#: a probe whose score is this much worse than its first loss has diverged
DIVERGED = 1.5


@dataclass
class Probe:
    """One rate tried: its steps, its score (lower is better) and what happened."""

    lr: float
    steps: int
    score: float | None = None
    status: str = "ok"  # ok | diverged | failed
    note: str = ""


@dataclass
class Search:
    """The search of one candidate: every probe, the rate chosen, what it cost."""

    probes: list[Probe] = field(default_factory=list)
    chosen: float | None = None
    seconds: float = 0.0
    scored_on: str = "eval loss"

    def __str__(self) -> str:
        parts = []
        for p in self.probes:
            value = f"{p.score:.3f}" if p.status == "ok" and p.score is not None else p.status
            parts.append(f"{p.lr:.0e} → {value}" + (" ★" if p.lr == self.chosen else ""))
        steps = self.probes[0].steps if self.probes else 0
        return (" · ".join(parts) + f" ({self.scored_on} after {steps} steps each, {self.seconds:.1f} s)")


def grid(default_lr: float) -> list[float]:
    """The rates to try for a method whose default is ``default_lr``."""
    return sorted({min(MAX_LR, float(f"{default_lr * f:.2g}")) for f in GRID})


def probe_steps(steps: int) -> int:
    """How long each probe trains: a third of the run (at least 2 steps, at most the run)."""
    return max(2, min(steps, round(steps / 3)))


def search(train_probe: Callable[[float, int], tuple[float | None, float | None]], default_lr: float, steps: int,
           on_probe: Callable[[int, int, float], None] | None = None, scored_on: str = "eval loss") -> Search:
    """Try each rate of :func:`grid`; ``train_probe(lr, steps)`` trains a fresh copy of the
    candidate and returns (its first training loss, its score), raising for a failure."""
    t0 = time.perf_counter()
    out = Search(scored_on=scored_on)
    n = probe_steps(steps)
    rates = grid(default_lr)
    for i, lr in enumerate(rates):
        if on_probe is not None:
            on_probe(i, len(rates), lr)
        probe = Probe(lr, n)
        try:
            first, score = train_probe(lr, n)
        except Exception as e:  # noqa: BLE001 — a rate that breaks the run is a rate not to choose
            probe.status, probe.note = "failed", f"{type(e).__name__}: {e}"[:120]
        else:
            probe.score = score
            if score is None or not math.isfinite(score) or (first is not None and score > DIVERGED * first):
                probe.status = "diverged"
        out.probes.append(probe)
    ok = [p for p in out.probes if p.status == "ok" and p.score is not None]
    out.chosen = min(ok, key=lambda p: p.score).lr if ok else default_lr
    out.seconds = time.perf_counter() - t0
    return out
