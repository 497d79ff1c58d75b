"""The live one-line memory readout of ``%%peft watch`` (an HTML widget in a kernel).

It draws the engine's ``memory`` events (already throttled by ``memory.Watch``) while
the cell runs, and is replaced by the final report when the cell ends. Outside a kernel
it shows nothing live; the report is still displayed.
"""

from __future__ import annotations

from typing import Any

from .. import events
from ..fmt import fmt_bytes
from .html import escape, wrap
from .progress import in_kernel


class LiveMemory:
    """Subscribe while active (``with LiveMemory():``); ``close(report)`` shows the result."""

    def __init__(self) -> None:
        self.widget = None
        self._unsub = None
        if in_kernel():
            try:
                import ipywidgets as w

                self.widget = w.HTML()
            except ImportError:
                self.widget = None

    def _on(self, e: events.Event) -> None:
        if e.kind == "memory" and e.data.get("live") and self.widget is not None:
            m = e.data.get("memory") or {}
            text = f"memory now {fmt_bytes(m.get('used'))} · peak {fmt_bytes(m.get('peak'))} · {m.get('label', '')}"
            self.widget.value = wrap(f"<span class='pm-dim'>{escape(text)}</span>")

    def __enter__(self) -> LiveMemory:
        if self.widget is not None:
            from IPython.display import display

            display(self.widget)
            self._unsub = events.subscribe(self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    def close(self, report: Any) -> None:
        from IPython.display import display

        if self.widget is not None:
            self.widget.value = wrap(f"<span>{escape(repr(report))}</span>")
        display(report)
