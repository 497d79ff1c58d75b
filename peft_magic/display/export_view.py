"""An export while it runs (a bar and the stage, from ``export`` events) and its result.

The live part is a :class:`~peft_magic.display.live.LiveView`: a widget in a kernel that
follows the engine's ``export`` events (the converter's progress is throttled where it is
emitted) and ends as one static line — the result is displayed below it, so a saved
notebook shows the result. In a terminal a line is printed per stage; in the panel's
Save tab the widget is hosted in the tab.
"""

from __future__ import annotations

from typing import Any

from .. import events
from ..fmt import fmt_bytes
from .html import escape, wrap
from .live import LiveView, dim

STAGES = {"start": "starting", "merging": "merging the adapter into the weights",
          "converting": "converting to GGUF (llama.cpp)", "writing": "writing", "done": "done",
          "failed": "failed", "interrupted": "interrupted"}


def bar_html(fraction: float, label: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return ("<div style='display:flex;align-items:center;gap:8px'>"
            "<div style='width:220px;height:8px;background:var(--jp-layout-color3,#ddd);border-radius:4px'>"
            f"<div style='width:{pct:.0f}%;height:8px;background:#2563eb;border-radius:4px'></div></div>"
            f"<span class='pm-dim'>{escape(label)} · {pct:.0f}%</span></div>")


class LiveExport(LiveView):
    """``with LiveExport(): export(...)`` — the live bar while the block runs."""

    def __init__(self, surface: Any = "auto", stream: Any = None) -> None:
        super().__init__(surface, stream)
        self.last: dict[str, Any] = {}
        self.disk = ""
        self._printed: str | None = None

    def placeholder(self) -> str:
        return "export: starting"

    def on_event(self, e: events.Event) -> None:
        if e.kind != "export":
            return
        d = e.data
        if d.get("disk"):
            self.disk = d["disk"]
        self.last = dict(d)
        stage = STAGES.get(d.get("stage", ""), d.get("stage", ""))
        what = f"export {d.get('format')}" + (f" {d['quant']}" if d.get("quant") else "")
        self.shown = True
        if self.widget is not None:
            self.widget.value = wrap(f"<div class='pm-head'>{escape(what)} → {escape(str(d.get('path')))}</div>"
                                     + bar_html(float(d.get("fraction") or 0.0), stage)
                                     + (f"<div class='pm-dim'>{escape(self.disk)}</div>" if self.disk else ""))
        elif self.surface == "text" and stage != self._printed:
            self._printed = stage
            self.write(f"{what}: {stage}" + (f" ({self.disk})" if d.get("disk") else "") + "\n")

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        super().__exit__(exc_type, *exc)
        if self.shown and self.surface == "widget":
            # one static line: the result below is the export's summary, in saved notebooks too
            fmt = self.last.get("format", "")
            text = (f"export {fmt}: done — the result is below" if exc_type is None
                    else f"export {fmt}: stopped, nothing was written")
            self.finish(dim(text), text)


def export_html(r: Any) -> str:
    """The finished export: where, files, what was checked, notes, the next command."""
    parts = [f"<div class='pm-head pm-ok'>{escape(r.message)}</div>",
             "<div class='pm-dim'>" + ", ".join(f"<code>{escape(n)}</code> ({fmt_bytes(s)})" for n, s in r.files)
             + "</div>"]
    parts += [f"<div class='pm-dim'>{escape(c)}</div>" for c in r.checks if c.startswith("room on disk:")]
    parts += [f"<div>✓ {escape(c)}</div>" for c in r.checks if not c.startswith(("warning", "room on disk:"))]
    parts += [f"<div class='pm-warn'>{escape(c)}</div>" for c in r.checks if c.startswith("warning")]
    parts += [f"<div class='pm-warn'>note: {escape(n)}</div>" for n in r.notes]
    if r.next_step:
        parts.append(f"<div>next: <code>{escape(r.next_step)}</code></div>")
    return wrap("".join(parts))
