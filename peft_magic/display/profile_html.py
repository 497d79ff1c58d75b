"""How speed looks: the ``--profile`` table under the training display, and the compile /
checkpointing readouts inside it.

The engine hands over data — a ``training.profiling.Profile`` and ``speed`` events — and
this module draws it: static HTML (a bar per phase, the top operators, the hints), so a
saved notebook shows the profile on GitHub / nbviewer; the ``Profile``'s own text
``repr`` in a terminal.
"""

from __future__ import annotations

import sys
from typing import Any

from ..fmt import fmt_bytes
from .html import Raw, escape, table, wrap

_COLORS = {"data": "#f59e0b", "forward": "#3b82f6", "backward": "#6366f1", "optimizer": "#10b981",
           "callbacks": "#ec4899", "evaluation": "#14b8a6", "other": "#9ca3af"}


def profile_html(p: Any) -> str:
    """The profile as HTML: headline, a stacked bar of the step, the phase table, the top
    operators, the hints, the trace's path."""
    bar = "".join(f"<span title='{escape(ph.label)} {ph.share:.1%}' style='display:inline-block;height:12px;"
                  f"width:{max(0.0, ph.share) * 420:.1f}px;background:{_COLORS.get(ph.name, '#9ca3af')}'></span>"
                  for ph in p.phases)
    mem = "peak CUDA" if p.memory_kind == "CUDA" else "peak RAM"
    rows = []
    for ph in p.phases:
        swatch = Raw(f"<span style='display:inline-block;width:9px;height:9px;margin-right:5px;"
                     f"background:{_COLORS.get(ph.name, '#9ca3af')}'></span>{escape(ph.label)}")
        rows.append([swatch, f"{ph.ms:.2f}", f"{ph.share:.1%}", fmt_bytes(ph.peak) if ph.peak else "–",
                     f"+{fmt_bytes(ph.rise)}" if ph.rise is not None else "–"])
    rows.append([Raw("<b>total (measured step)</b>"), Raw(f"<b>{p.total_ms:.2f}</b>"), "100.0%", "", ""])
    out = [f"<div class='pm-head'>{escape(p.headline)}</div>",
           f"<div style='margin:4px 0'>{bar}</div>",
           table(["phase", "ms/step", "%", mem, "rise in phase"], rows, numeric={1, 2, 3, 4})]
    if p.ops:
        out.append("<div class='pm-dim'>top operators by self time</div>")
        out.append(table(["operator", "ms/step", "% of step", "calls/step"],
                         [[Raw(f"<code>{escape(o.name)}</code>"), f"{o.self_ms:.2f}", f"{o.share:.1%}", f"{o.calls:g}"]
                          for o in p.ops], numeric={1, 2, 3}))
    out += [f"<div class='pm-warn'>hint: {escape(h)}</div>" for h in p.hints]
    out += [f"<div class='pm-dim'>note: {escape(n)}</div>" for n in p.notes]
    if p.overhead_ms:
        out.append(f"<div class='pm-dim'>the profiler's own bookkeeping ({p.overhead_ms:.2f} ms a step) is left "
                   "out of the step</div>")
    if p.trace:
        out.append(f"<div class='pm-dim'>trace: <code>{escape(p.trace)}</code> — open it in "
                   "<a href='https://ui.perfetto.dev' target='_blank'>ui.perfetto.dev</a> or chrome://tracing</div>")
    return wrap("".join(out))


def show_profile(profile: Any, view: Any) -> None:
    """Put the profile under the training display (a ``LiveView``): HTML in a notebook,
    text in a terminal; nothing for a hosted view or none."""
    if profile is None or view is None or view.surface in (None, "hosted"):
        return
    if view.surface == "text":
        view.write(repr(profile) + "\n")
        return
    try:
        from IPython.display import display

        display(profile)  # text/plain + text/html (the registry's profile_html)
    except ImportError:
        sys.stdout.write(repr(profile) + "\n")


def speed_readouts(speed: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The live display's compile / checkpointing readouts, from the run's ``speed`` events."""
    if not speed:
        return []
    out = []
    status = speed.get("compile")
    if status == "compiling":
        done = speed.get("compile_seconds")
        out.append(("compile", "compiling…" + (f" ({done:.1f} s so far)" if done else "")))
    elif status == "compiled":
        secs, steps = speed.get("compile_seconds"), speed.get("compile_steps") or 0
        text = f"compiled in {secs:.1f} s" if secs is not None else "compiled"
        out.append(("compile", text + (f" ({steps} step{'s' * (steps != 1)})" if steps else "")))
        if speed.get("steady_tokens_per_s"):
            out.append(("steady tokens/s", f"{speed['steady_tokens_per_s']:,.0f}"))
    ckpt = speed.get("checkpointing")
    if ckpt:
        out.append(("checkpointing", ckpt.get("text") or "on"))
    return out
