"""``lr=auto``: each method's own learning rate for a short run, found by a budgeted search.

Why: the defaults are meant for long runs, and at a notebook's budget of a few dozen steps
the learning rate decides a comparison — LoRA at its default 2e-4 barely moves in 12 steps,
at 6e-3 it ties the best method. peft's own method-comparison benchmark tunes each
method's rate and holds everything else fixed; this does the same within a bound.

How: a log-spaced grid around the method's default (``GRID``: ⅓× … 30×, clipped to
``MAX_LR``); each rate tried trains from the same start for a third of the run's steps and
is scored on the held-out loss (the training loss of its last steps without ``eval=``); a
rate that diverges scores as the worst; the best goes on to the full run.

Which rates: a walk on the grid, not all of it. It starts at ``START`` × the default, goes
up while the score improves, and, if the first step up did not, down while it improves; it
stops at the first rate worse than the best so far. A short run's score against the log of
the rate is a valley (too low: it barely moves; too high: it diverges), and on a valley the
walk ends at the grid's best — the rate trying every point would choose — after 2 probes
when the best is at the top, 3 when it is next to the start, at most 5. Measured on
notebooks/which-method.ipynb's comparison (SmolLM2, five methods, 12 steps): 14 probes
instead of 25, every method at the rate the full grid chose, and the search's time 0.55×
(``bench/bench_compare_lr.py --search`` runs both ways). ``START`` is 10× because that is
where those methods' best short-run rates sit (3×–30×): the walk is shortest when it starts
near the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: the rates a search may try, as multiples of the method's default
GRID = (1 / 3, 1.0, 3.0, 10.0, 30.0)
#: where the walk starts, as a multiple of the method's default
START = 10.0
#: False: try every rate of the grid (``bench/bench_compare_lr.py --search`` times both ways)
WALK = True
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

    @property
    def value(self) -> float:
        """The score the walk compares: a rate that diverged or failed is the worst."""
        return self.score if self.status == "ok" and self.score is not None else math.inf


@dataclass
class Search:
    """The search of one candidate: every probe (by rate), the rate chosen, what it cost."""

    probes: list[Probe] = field(default_factory=list)
    chosen: float | None = None
    seconds: float = 0.0
    scored_on: str = "eval loss"
    #: how many rates the grid had (the walk tries some of them)
    grid_size: int = 0

    def __str__(self) -> str:
        parts = []
        for p in self.probes:
            value = f"{p.score:.3f}" if p.status == "ok" and p.score is not None else p.status
            parts.append(f"{p.lr:.0e} → {value}" + (" ★" if p.lr == self.chosen else ""))
        steps = self.probes[0].steps if self.probes else 0
        tried = f"; {len(self.probes)} of {self.grid_size} rates" if len(self.probes) < self.grid_size else ""
        return " · ".join(parts) + f" ({self.scored_on} after {steps} steps each{tried}, {self.seconds:.1f} s)"


def grid(default_lr: float) -> list[float]:
    """The rates a search may try for a method whose default is ``default_lr``."""
    return sorted({min(MAX_LR, float(f"{default_lr * f:.2g}")) for f in GRID})


def start_index(rates: list[float], default_lr: float) -> int:
    """The grid's rate nearest (in log) to ``START`` × the default: where the walk begins."""
    target = math.log(default_lr * START)
    return min(range(len(rates)), key=lambda i: abs(math.log(rates[i]) - target))


def probe_steps(steps: int) -> int:
    """How long each probe trains: a third of the run (at least 2 steps, at most the run)."""
    return max(2, min(steps, round(steps / 3)))


def search(train_probe: Callable[[float, int], tuple[float | None, float | None]], default_lr: float, steps: int,
           on_probe: Callable[[int, int, float], None] | None = None, scored_on: str = "eval loss") -> Search:
    """Walk the rates of :func:`grid` (see the module's doc); ``train_probe(lr, steps)`` trains
    a fresh copy of the candidate and returns (its first training loss, its score), raising
    for a failure. ``on_probe(i, most, lr)`` is told of each probe before it runs (``most``:
    the grid's size, the walk's longest)."""
    t0 = time.perf_counter()
    out = Search(scored_on=scored_on)
    n = probe_steps(steps)
    rates = grid(default_lr)
    out.grid_size = len(rates)
    tried: dict[int, Probe] = {}

    def value(i: int) -> float:
        if i not in tried:
            if on_probe is not None:
                on_probe(len(tried), len(rates), rates[i])
            probe = Probe(rates[i], n)
            try:
                first, score = train_probe(rates[i], n)
            except Exception as e:  # noqa: BLE001 — a rate that breaks the run is a rate not to choose
                probe.status, probe.note = "failed", f"{type(e).__name__}: {e}"[:120]
            else:
                probe.score = score
                if score is None or not math.isfinite(score) or (first is not None and score > DIVERGED * first):
                    probe.status = "diverged"
            tried[i] = probe
        return tried[i].value

    start = best = start_index(rates, default_lr)
    value(start)
    for step in (1, -1):  # up while it improves; down only if the first step up did not
        i = start + step
        while 0 <= i < len(rates) and value(i) < value(best):
            best, i = i, i + step
        if best != start:
            break
    if not WALK:
        best = min(range(len(rates)), key=lambda i: (value(i), i != best))
    out.probes = [tried[i] for i in sorted(tried)]
    out.chosen = rates[best] if math.isfinite(tried[best].value) else default_lr
    out.seconds = time.perf_counter() - t0
    return out
