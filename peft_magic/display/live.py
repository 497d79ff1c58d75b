"""One live output: an HTML widget that follows engine events while a block runs, then is
replaced in place by static content.

Shared by ``%%peft watch`` (``watch.py``) and ``%peft compare`` (``compare.py``): in a
kernel the output starts as the widget view with static HTML beside it (``widgets.view_bundle``,
ipywidgets 7.7 and 8), the widget redraws from events, and at the end the same output is
updated to HTML and text alone — so a saved or converted notebook shows the result, not
an empty widget view. Outside a kernel there is no widget; subclasses print instead.
"""

from __future__ import annotations

import abc
import uuid
from typing import Any

from .. import events
from .html import escape, wrap
from .progress import in_kernel


class LiveOutput(abc.ABC):
    """Subclasses implement ``on_event``; ``start`` / ``stop`` subscribe around the block."""

    def __init__(self) -> None:
        self.widget: Any = None
        self._unsub: Any = None
        self.display_id = uuid.uuid4().hex
        if in_kernel():
            try:
                import ipywidgets as w

                self.widget = w.HTML()
            except ImportError:
                self.widget = None

    @abc.abstractmethod
    def on_event(self, e: events.Event) -> None:
        """Redraw from one engine event (called from whichever thread emitted it)."""

    def start(self, text: str, subscribe_without_widget: bool = False) -> None:
        """Show the widget (with ``text`` as its static stand-in) and follow events."""
        if self.widget is not None:
            from IPython.display import display

            from .widgets import view_bundle

            display(view_bundle(self.widget, wrap(f"<span class='pm-dim'>{escape(text)}</span>"), text),
                    raw=True, display_id=self.display_id)
        if self.widget is not None or subscribe_without_widget:
            self._unsub = events.subscribe(self.on_event)

    def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    def replace(self, data: dict[str, Any]) -> None:
        """Put ``data`` (a mime bundle) in place of the live output."""
        from IPython.display import update_display

        update_display(data, raw=True, display_id=self.display_id)

    def replace_text(self, text: str) -> None:
        """Replace the live output with one dim line."""
        self.replace({"text/html": wrap(f"<span class='pm-dim'>{escape(text)}</span>"), "text/plain": text})
