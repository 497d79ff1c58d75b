"""The live one-line memory readout of ``%%peft watch`` (an HTML widget in a kernel).

It draws the engine's ``memory`` events (already throttled by ``memory.Watch``) while
the cell runs, and is replaced by the final report when the cell ends: the same output
then holds the report's HTML and text alone, so a saved or converted notebook (nbconvert, VS Code, GitHub) shows the report, not an empty widget
view. Outside a kernel it shows nothing live; the report is still displayed.
"""

from __future__ import annotations

import uuid
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
        self.display_id = uuid.uuid4().hex
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

            from .widgets import view_bundle

            display(view_bundle(self.widget, wrap("<span class='pm-dim'>watching memory…</span>"), "watching memory…"),
                    raw=True, display_id=self.display_id)
            self._unsub = events.subscribe(self._on)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if exc_type is not None and self.widget is not None:  # the cell raised: no report follows
            from IPython.display import update_display

            note = "memory watch stopped: the cell raised"
            update_display({"text/html": wrap(f"<span class='pm-dim'>{escape(note)}</span>"), "text/plain": note},
                           raw=True, display_id=self.display_id)

    def close(self, report: Any) -> None:
        """Show ``report``: in place of the live readout in a kernel, as a new output elsewhere."""
        from IPython.display import display, update_display

        if self.widget is None:
            display(report)
            return
        from IPython import get_ipython

        self.widget.value = wrap(f"<span>{escape(repr(report))}</span>")
        shell = get_ipython()
        data = shell.display_formatter.format(report)[0] if shell is not None else {"text/plain": repr(report)}
        update_display(data, raw=True, display_id=self.display_id)
