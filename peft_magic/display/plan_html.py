"""Static HTML for a memory plan: one stacked bar per method, a capacity line, a verdict.

Static (no widgets) so a saved notebook shows it on GitHub / nbviewer too; colours are
fixed per part so the legend reads the same in light and dark themes.
"""

from __future__ import annotations

from typing import Any

from ..fmt import fmt_bytes
from .html import Raw, escape, table, wrap

COLORS = {
    "weights": "#64748b",
    "adapter": "#8b5cf6",
    "gradients": "#f59e0b",
    "optimizer": "#ef4444",
    "activations": "#3b82f6",
    "overhead": "#a3a3a3",
}
BAR_PX = 340


def _bar(parts: Any, scale: float, available: int | None, show_capacity: bool) -> str:
    segs = []
    for name, color in COLORS.items():
        n = getattr(parts, name)
        if not n:
            continue
        width = max(1.0, n * scale)
        segs.append(f"<span title='{escape(name)}: {escape(fmt_bytes(n))}' style='display:inline-block;"
                    f"height:12px;width:{width:.1f}px;background:{color}'></span>")
    marker = ""
    if show_capacity and available:
        left = min(BAR_PX, available * scale)
        marker = (f"<span title='available: {escape(fmt_bytes(available))}' style='position:absolute;"
                  f"left:{left:.1f}px;top:-3px;height:18px;border-left:2px dashed #dc2626'></span>")
    return (f"<span style='position:relative;display:inline-block;width:{BAR_PX + 4}px;white-space:nowrap;"
            f"line-height:12px;vertical-align:middle'>{''.join(segs)}{marker}</span>")


def plan_html(plan: Any) -> str:
    rows = [r for r in plan.rows if r.parts is not None]
    biggest = max([r.total for r in rows] or [1])
    avail = plan.target.available
    show_capacity = bool(avail) and avail <= 1.6 * biggest
    scale = BAR_PX / max(biggest, avail if show_capacity else 0, 1)

    head = escape(plan.headline())
    parts = [f"<div class='pm-head'>{head}</div>"]
    body = []
    for r in plan.rows:
        if r.parts is None:
            body.append([r.label, Raw(f"<span class='pm-err'>{escape(r.error or '')}</span>"), "–",
                         Raw("<span class='pm-err'>✗ cannot estimate</span>")])
            continue
        cls = {"fits": "pm-ok", "tight": "pm-warn", "does not fit": "pm-err"}.get(r.verdict, "pm-dim")
        mark = {"fits": "✓", "tight": "!", "does not fit": "✗"}.get(r.verdict, "?")
        verdict = f"{mark} {r.verdict}"
        if r.fits and r.spare is not None:
            verdict += f" ({r.spare:.0%} spare)"
        label = escape(r.label)
        if plan.recommendation.method == r.method:
            label = f"<b>{label}</b> ★"
        if r.checkpointing and not plan.checkpointing:
            label += " <span class='pm-dim' title='with gradient checkpointing'>¹</span>"
        alt = ""
        if r.other is not None:
            way = "off" if plan.checkpointing else "on"
            ok = {True: " ✓", False: " ✗"}.get(r.other_fits, "")
            alt = (f"<br><span class='pm-dim' title='total with gradient checkpointing {way}'>checkpointing {way}: "
                   f"{escape(fmt_bytes(r.other.total))}{ok}</span>")
        body.append([Raw(label), Raw(_bar(r.parts, scale, avail, show_capacity)), fmt_bytes(r.total),
                     Raw(f"<span class='{cls}'>{escape(verdict)}</span>{alt}")])
    parts.append(table(["method", "memory by part", "total", "verdict"], body, {2}))
    legend = " ".join(f"<span style='display:inline-block;width:10px;height:10px;background:{c};"
                      f"vertical-align:middle'></span> {escape(n)}" for n, c in COLORS.items())
    cap = ""
    if avail:
        cap = (" · <span style='border-left:2px dashed #dc2626;padding-left:4px'>available "
               f"{escape(fmt_bytes(avail))} on {escape(plan.target.label)}</span>")
        if not show_capacity:
            cap += " (off the scale)"
    parts.append(f"<div class='pm-dim'>{legend}{cap}</div>")
    if any(r.checkpointing and not plan.checkpointing for r in plan.rows):
        parts.append("<div class='pm-dim'>¹ with gradient checkpointing (%peft qlora turns it on)</div>")
    if plan.logits_line():
        parts.append(f"<div class='pm-dim'>{escape(plan.logits_line())}</div>")
    rec = plan.recommendation
    parts.append(f"<div style='margin-top:6px'><b>{escape(rec.line(plan.batch, plan.seq))}</b></div>")
    for h in rec.hints:
        parts.append(f"<div class='pm-dim'>{escape(h)}</div>")
    if plan.measurement is not None:
        parts.append(f"<div>{escape(plan.measurement.line())}</div>")
    notes = list(plan.notes) + [f"{r.method}: {n}" for r in plan.rows for n in r.notes]
    for n in notes:
        parts.append(f"<div class='pm-dim'>note: {escape(n)}</div>")
    numbers = [[r.label] + [fmt_bytes(getattr(r.parts, p)) if getattr(r.parts, p) else "–"
                            for p in COLORS] + [fmt_bytes(r.total)] for r in rows]
    parts.append("<details><summary class='pm-dim'>numbers</summary>"
                 + table(["method", *COLORS, "total"], numbers, set(range(1, len(COLORS) + 2))) + "</details>")
    parts.append(f"<div class='pm-dim'>planned on the meta device in {plan.seconds:.1f} s (no weights read)</div>")
    return wrap("".join(parts))
