"""The live one-line memory readout of ``%%peft watch`` (an HTML widget in a kernel).

It draws the engine's ``memory`` events (already throttled by ``memory.Watch``) while
the cell runs, and is replaced by the final report when the cell ends: the same output
then holds the report's HTML and text alone, so a saved or converted notebook (nbconvert, VS Code, GitHub) shows the report, not an empty widget
view. Outside a kernel it shows nothing live; the report is still displayed.
"""

from __future__ import annotations

from typing import Any

from .. import events
from ..fmt import fmt_bytes
from .html import escape, wrap
from .live import LiveView, dim, in_kernel


class LiveMemory(LiveView):
    """Subscribe while active (``with LiveMemory():``); ``close(report)`` shows the result.

    Only a kernel has a live readout (a terminal gets the report alone)."""

    def __init__(self) -> None:
        super().__init__("widget" if in_kernel() else None)

    def placeholder(self) -> str:
        return "watching memory…"

    def on_event(self, e: events.Event) -> None:
        if e.kind == "memory" and e.data.get("live") and self.widget is not None:
            m = e.data.get("memory") or {}
            text = f"memory now {fmt_bytes(m.get('used'))} · peak {fmt_bytes(m.get('peak'))} · {m.get('label', '')}"
            self.widget.value = dim(text)
            self.shown = True

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        super().__exit__(exc_type, *exc)
        if exc_type is not None and self._displayed:  # the cell raised: no report follows
            text = "memory watch stopped: the cell raised"
            self.finish(dim(text), text)

    def close(self, report: Any) -> None:
        """Show ``report``: in place of the live readout in a kernel, as a new output elsewhere."""
        from IPython.display import display

        if self.widget is None:
            display(report)
            return
        from IPython import get_ipython

        self.widget.value = wrap(f"<span>{escape(repr(report))}</span>")
        shell = get_ipython()
        self.finished = True
        self.replace(shell.display_formatter.format(report)[0] if shell is not None else {"text/plain": repr(report)})
