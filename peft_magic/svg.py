"""Tiny dependency-free SVG line charts for loss curves.

Why hand-written SVG: the chart must render in a saved notebook on GitHub (static HTML),
inside a core ``ipywidgets.HTML`` (Colab loads no third-party widget code), and cost
nothing to update a few times a second. Matplotlib would add a heavy import, a PNG per
update and bloat the notebook; an SVG polyline of ≤ 300 points is a few KB.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


def downsample(points: Sequence[tuple[float, float]], limit: int = 300) -> list[tuple[float, float]]:
    """Keep at most ``limit`` points, always including the first and the last."""
    pts = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
    if len(pts) <= limit:
        return pts
    step = (len(pts) - 1) / (limit - 1)
    return [pts[round(i * step)] for i in range(limit)]


def smooth(points: Sequence[tuple[float, float]], beta: float = 0.9) -> list[tuple[float, float]]:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, (x, y) in enumerate(points, 1):
        avg = beta * avg + (1 - beta) * y
        out.append((x, avg / (1 - beta ** i)))
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.3f}".rstrip("0").rstrip(".")


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, width: int = 420,
               height: int = 130, smooth_first: bool = True, x_label: str = "step", y_label: str = "loss",
               x_max: float | None = None) -> str:
    """An inline SVG with one polyline per ``(name, points)`` series.

    With ``smooth_first``, a single series is drawn raw (faint) plus smoothed (bold).
    """
    data = [(name, downsample(pts)) for name, pts in series]
    data = [(n, p) for n, p in data if p]
    if not data:
        return (f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
                f"<text x='8' y='{height // 2}' font-size='11' fill='#888'>no {y_label} logged yet</text></svg>")
    xs = [x for _, p in data for x, _ in p]
    ys = [y for _, p in data for _, y in p]
    x0, x1 = min(xs), max(max(xs), x_max or 0)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1, y0 = y1 + 0.5, y0 - 0.5
    left, right, top, bottom = 44, 8, 8, 22
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    def poly(pts: Sequence[tuple[float, float]], color: str, w: float, opacity: float) -> str:
        if len(pts) == 1:  # a single point is a dot, not an invisible zero-length line
            (x, y), = pts
            return f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='{w + 1}' fill='{color}' fill-opacity='{opacity}'/>"
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        return (f"<polyline fill='none' stroke='{color}' stroke-width='{w}' stroke-opacity='{opacity}' "
                f"stroke-linejoin='round' points='{coords}'/>")

    parts = [f"<svg class='pm-chart' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
             "xmlns='http://www.w3.org/2000/svg' font-family='sans-serif' font-size='10'>",
             f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#9ca3af' stroke-opacity='0.5'/>",
             f"<text x='{left - 4}' y='{top + 8}' text-anchor='end' fill='#6b7280'>{_fmt(y1)}</text>",
             f"<text x='{left - 4}' y='{top + ph}' text-anchor='end' fill='#6b7280'>{_fmt(y0)}</text>",
             f"<text x='{left}' y='{height - 6}' fill='#6b7280'>{_fmt(x0)}</text>",
             f"<text x='{left + pw}' y='{height - 6}' text-anchor='end' fill='#6b7280'>{_fmt(x1)} {x_label}</text>",
             f"<text x='{left + pw / 2}' y='{height - 6}' text-anchor='middle' fill='#6b7280'>{html.escape(y_label)}</text>"]
    if len(data) == 1 and smooth_first:
        name, pts = data[0]
        parts.append(poly(pts, PALETTE[0], 1, 0.35))
        parts.append(poly(smooth(pts), PALETTE[0], 2, 1.0))
    else:
        for i, (name, pts) in enumerate(data):
            color = PALETTE[i % len(PALETTE)]
            parts.append(poly(pts, color, 1.6, 0.9))
            ly = top + 12 + 12 * i
            parts.append(f"<text x='{left + 6}' y='{ly}' fill='{color}'>{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)
