"""The one live-display lifecycle: a view that follows engine events while a block runs,
then leaves its final state as static HTML and a text twin.

Every live display is a :class:`LiveView` — training and profiling (``progress.py``),
``%peft compare`` (``compare.py``), ``%%peft watch`` (``watch.py``) — the way fastprogress
has one base for its bars::

    with view:                 # shows the live output, subscribes to the engine's events
        engine_call(...)       # each event → view.on_event → the view redraws itself
    view.finish(html, text)    # the same output, replaced in place by static HTML + text

Where it draws (``surface``): ``"widget"`` in a Jupyter kernel — core ipywidgets, displayed
in one output whose bundle also has static HTML for viewers without a widget manager;
``"text"`` in a terminal or a script — lines on a stream; ``"hosted"`` — a container (the
panel's Train tab) shows the view's widget itself, so no cell output is made; ``None`` —
nothing is drawn. ``"auto"`` picks widget in a kernel, text elsewhere.

Ending: the finished output holds static HTML and text *alone* (a widget view left in it
would win over the HTML in nbconvert / VS Code's export, which draw widgets only with a
widget manager loaded from the network, and show nothing offline). A block that raises
before the view has drawn anything of the work (``shown`` still False) takes its output
back, so a one-line error stands alone — no "Training · preparing…" above it.

Views never throttle: the engine's events arrive already throttled where they are emitted
(``events.Throttle``), so a view draws every event it gets.
"""

from __future__ import annotations

import abc
import sys
import uuid
from typing import Any

from .. import events
from .html import escape, wrap


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where widgets have a front end to draw them)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:  # noqa: BLE001 — no shell: not a kernel
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def pick_surface(mode: Any = "auto") -> str | None:
    """``auto``: widgets inside a Jupyter kernel (when ipywidgets imports), text elsewhere."""
    if mode in (None, "none", False):
        return None
    if mode in ("text", "hosted"):
        return mode
    if mode == "widget" or (mode == "auto" and in_kernel()):
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "text"
        return "widget"
    if mode == "auto":
        return "text"
    raise ValueError(f"unknown display {mode!r}: auto, widget, text or none")


def dim(text: str) -> str:
    return wrap(f"<span class='pm-dim'>{escape(text)}</span>")


class LiveView(abc.ABC):
    """A live output that follows engine events while ``with`` is active (module docstring).

    Subclasses implement :meth:`on_event` and, for the widget surfaces, :meth:`build_widget`;
    :meth:`placeholder` is the static stand-in shown beside the widget until the end.
    """

    def __init__(self, surface: Any = "auto", stream: Any = None) -> None:
        self.surface = pick_surface(surface)
        self.stream = stream or sys.stdout
        self.display_id = uuid.uuid4().hex
        self.widget: Any = self.build_widget() if self.surface in ("widget", "hosted") else None
        self.shown = False  # something of the work was drawn (not only the placeholder)
        self.finished = False
        self._displayed = False
        self._unsub: Any = None

    # -- what a view implements

    def build_widget(self) -> Any:
        """The live widget (widget and hosted surfaces)."""
        import ipywidgets as w

        return w.HTML()

    def placeholder(self) -> str:
        """The text shown before the work draws anything (and as the widget's static stand-in)."""
        return ""

    @abc.abstractmethod
    def on_event(self, e: events.Event) -> None:
        """Redraw from one engine event (called from whichever thread emitted it)."""

    # -- the lifecycle

    def __enter__(self) -> LiveView:
        self.start()
        self._unsub = events.subscribe(self.on_event)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if exc_type is not None and not self.shown:
            self.retract()

    def start(self) -> None:
        """Display the widget with the placeholder beside it (the widget surface only)."""
        if self.surface != "widget" or self.widget is None:
            return
        from IPython.display import display

        from .widgets import view_bundle

        text = self.placeholder()
        display(view_bundle(self.widget, dim(text), text), raw=True, display_id=self.display_id)
        self._displayed = True

    def replace(self, bundle: dict[str, Any]) -> None:
        """Put ``bundle`` (a mime bundle) in place of the live output (widget surface)."""
        if not self._displayed:
            return
        from IPython.display import update_display

        update_display(bundle, raw=True, display_id=self.display_id)

    def retract(self) -> None:
        """Take the output back: the work failed before it drew anything."""
        self.replace({"text/plain": ""})

    def finish(self, html: str, text: str) -> None:
        """Leave the final state: static ``html`` + ``text`` in place of the widget; on the
        text surface, ``text`` as the last line."""
        self.finished = True
        if self.surface == "widget":
            self.replace({"text/html": html, "text/plain": text})
        elif self.surface == "text" and text:
            self.write(text + "\n")

    def write(self, text: str) -> None:
        """Write to the text surface's stream."""
        self.stream.write(text)
        self.stream.flush()
