"""What the faces need from ipywidgets, the same on ipywidgets 7.7 (Colab) and 8.

Colab's runtime ships ipywidgets 7.7 and renders widgets with its own manager; forcing 8
there breaks widgets (Colab issues #3020, #3571: Accordion under the custom widget
manager). So the package runs on ``ipywidgets>=7.7,<9`` and every use of an API that
differs between the two goes through here:

* ``tab(children, titles)`` — ``Tab(titles=...)`` is 8-only; ``set_title`` works on both.
* ``Collapsible`` — an "advanced" section made of a toggle button and a box whose
  ``display`` switches, instead of an ``Accordion`` (the widget Colab's manager breaks).
* ``set_tooltip`` — 8 has ``tooltip`` on every widget, 7 only on buttons
  (``description_tooltip`` elsewhere).
* ``view_bundle`` — the widget-view mime entry with static ``text/html`` beside it. 7
  displays a widget through ``_ipython_display_`` (widget view only), 8 through
  ``_repr_mimebundle_``; a widget that must leave HTML behind for viewers without a
  widget manager builds its bundle here and displays that.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets


def set_tooltip(widget: Any, text: str | None) -> None:
    """The hover text of ``widget`` on either major version (a no-op where it has none)."""
    if widget.has_trait("tooltip"):
        widget.tooltip = text
    elif widget.has_trait("description_tooltip"):
        widget.description_tooltip = text


def tooltip(widget: Any) -> str | None:
    """The hover text set with ``set_tooltip``."""
    if widget.has_trait("tooltip"):
        return widget.tooltip
    return getattr(widget, "description_tooltip", None)


def tab(children: list[Any], titles: tuple[str, ...]) -> Any:
    """A ``Tab`` with these page titles (``titles=`` exists only on ipywidgets 8)."""
    t = widgets.Tab(children=list(children))
    for i, title in enumerate(titles):
        t.set_title(i, title)
    return t


class Collapsible(widgets.VBox):
    """A closed-by-default section: a toggle button that shows or hides ``body``.

    Core widgets only, and not an ``Accordion``, so it draws in every widget manager.
    ``expanded`` is the state; ``body`` the box with the section's rows.
    """

    def __init__(self, title: str, children: list[Any] | tuple[Any, ...] = ()) -> None:
        self.title = title
        self.toggle = widgets.ToggleButton(value=False, description=f"▸ {title}",
                                           layout=widgets.Layout(width="max-content"))
        self.toggle.add_class("pm-collapsible-toggle")
        self.body = widgets.VBox(list(children), layout=widgets.Layout(display="none", margin="2px 0 0 12px"))
        super().__init__([self.toggle, self.body])
        self.add_class("pm-collapsible")
        self.toggle.observe(self._on_toggle, "value")

    def _on_toggle(self, change: Any) -> None:
        is_open = bool(change["new"])
        self.toggle.description = f"{'▾' if is_open else '▸'} {self.title}"
        self.body.layout.display = "" if is_open else "none"

    @property
    def expanded(self) -> bool:  # not ``open``: Widget.open() opens the widget's comm
        return bool(self.toggle.value)

    @expanded.setter
    def expanded(self, value: bool) -> None:
        self.toggle.value = bool(value)


def view_bundle(widget: Any, html: str, text: str) -> dict[str, Any]:
    """A display bundle: the widget's view, and the static ``html`` / ``text`` beside it.

    A front end with a widget manager draws the widget; one without (GitHub, nbviewer,
    nbconvert, VS Code's preview) draws the HTML.
    """
    return {
        "application/vnd.jupyter.widget-view+json": {"model_id": widget.model_id, "version_major": 2,
                                                     "version_minor": 0},
        "text/html": html,
        "text/plain": text,
    }

