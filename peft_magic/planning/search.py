"""The largest batch and sequence length that fit, found with as few traces as possible.

Activations grow linearly with the batch and at most quadratically with the sequence
length, so a curve through a few traced points predicts the limit; tracing checks it.
"""

from __future__ import annotations

import math
from typing import Any

from .estimate import Estimator, parts_of
from .results import BATCH_CAP, Target
from .trace import StepMemory


def largest(ok: Any, unit: int, cap: int, guess: int | None = None) -> int:
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


def limits(est: Estimator, account: Any, opt: Any, target: Target, full: bool, batch: int,
            seq: int) -> tuple[int, int, int | None]:
    """Largest batch at ``seq`` and largest seq at ``batch`` that fit ``target``.

    Activations grow exactly linearly with the batch and at most quadratically with the
    sequence length, so three traces give a curve to solve; two more traces check the
    answer (and a traced search takes over in the rare case the curve was off).
    """
    avail = target.available or 0
    max_pos = getattr(est.subject.config, "max_position_embeddings", None) or getattr(
        est.subject.config, "n_positions", None)
    seq_cap = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else 131072

    def total(step: Any) -> int:
        return parts_of(account, step, opt, target, full).total

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
            guess = largest(lambda x: total(predicted(points, x)) <= avail, unit, cap)
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
        return largest(lambda x: total(step_at(x)) <= avail, unit, cap, guess or None)

    max_batch = solve([1, 2], 1, BATCH_CAP, lambda b: est.step(b, seq))
    unit = 64 if seq_cap >= 256 else 8
    s0 = max(unit, min(seq, 512) // unit * unit)
    max_seq = solve([s0, 2 * s0, 4 * s0], unit, seq_cap, lambda s: est.step(batch, s))
    return max_batch, max_seq, seq_cap
