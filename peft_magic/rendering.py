"""How engine result objects get their HTML without the engine importing the display.

Engine results (an attach, a plan, a run, …) must show as rich HTML in a notebook, but
the engine may not import the display package (one-way arrows: faces and renderers
depend on the engine, never the reverse). So result classes inherit :class:`HtmlRepr`,
whose ``_repr_html_`` asks this registry for the renderer of its class; the display
package registers one renderer per class name when it is imported
(``display/formatters.py``), which ``peft_magic/__init__`` does. Without a registered
renderer ``_repr_html_`` returns ``None`` and frontends fall back to the text ``repr``.

A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_RENDERERS: dict[str, Callable[[Any], str]] = {}


def register(class_name: str, renderer: Callable[[Any], str]) -> None:
    """Render instances of the engine class called ``class_name`` with ``renderer``."""
    _RENDERERS[class_name] = renderer


def html_of(obj: Any) -> str | None:
    """The HTML of ``obj`` from the renderer registered for its class (or a base class)."""
    for cls in type(obj).__mro__:
        fn = _RENDERERS.get(cls.__name__)
        if fn is not None:
            return fn(obj)
    return None


class HtmlRepr:
    """Mixin: ``_repr_html_`` through the registry (rich display in notebooks)."""

    def _repr_html_(self) -> str | None:
        return html_of(self)
