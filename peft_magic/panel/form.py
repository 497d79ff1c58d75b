"""A settings form generated from a PEFT method's config fields.

Why generated: peft has ~45 methods and adds more every release; each config dataclass
already declares its fields' types, defaults and help (``method_registry.FieldInfo``).
One widget per field, chosen by the field's kind, keeps the form right for methods that
did not exist when this was written. Common fields come first; the rest sit in a
collapsed "advanced" section (a toggle, not an ``Accordion``, which Colab's widget manager
breaks) so LoRA's 30-odd fields do not bury ``r`` and ``alpha``.

A field counts as *set* only when its value differs from the default the model would
get anyway (peft's default, or the engine's adaptive default for this model), so an
untouched form attaches exactly what ``%peft METHOD`` with no settings would.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..display.widgets import Collapsible, set_tooltip
from ..errors import PeftMagicError
from ..peft_methods.coerce import coerce_value
from ..peft_methods.fields import FieldInfo
from ..syntax.write import read_text_value

DESCRIPTION_WIDTH = "170px"
HELP_CHARS = 180


def _style() -> dict[str, str]:
    return {"description_width": DESCRIPTION_WIDTH}


def _as_text(value: Any) -> str:
    """How a value is written in a text box (the way a user would type it after ``key=``)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return ", ".join(value)
        return ", ".join(repr(v) for v in value) if len(value) > 1 else repr(list(value))
    if isinstance(value, dict) and not value:
        return ""
    if isinstance(value, str):
        return value
    return repr(value)


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


class FieldWidget:
    """One config field: a widget of the right kind, its default, its help line."""

    def __init__(self, method: str, info: FieldInfo, default: Any) -> None:
        self.method = method
        self.info = info
        self.default = default
        self._choices: list[Any] | None = None
        self.pinned = False  # shown from an adapter's explicit settings: counts as set even at the default
        self.widget = self._make()
        tip = info.help or info.name
        set_tooltip(self.widget, tip)
        short = tip if len(tip) <= HELP_CHARS else tip[: HELP_CHARS - 1].rsplit(" ", 1)[0] + " …"
        self.help = widgets.HTML(
            f"<div class='pm-help' title='{html.escape(tip, quote=True)}' style='font-size:11px;"
            f"color:var(--jp-ui-font-color2,#666);margin:-4px 0 4px {DESCRIPTION_WIDTH};line-height:1.3'>"
            f"{html.escape(short)}</div>")
        self.row = widgets.VBox([self.widget, self.help], layout=widgets.Layout(margin="0 0 2px 0"))
        self.row.add_class("pm-field")
        self.row.add_class(f"pm-field-{info.name}")

    # -- construction ------------------------------------------------------------------

    def _make(self) -> widgets.Widget:
        info, d = self.info, self.default
        kw: dict[str, Any] = {"description": info.name, "style": _style(),
                              "layout": widgets.Layout(width="440px")}
        if info.kind == "bool" and isinstance(d, bool):
            return widgets.Checkbox(value=d, indent=False, description=info.name,
                                    layout=widgets.Layout(width="440px", margin=f"0 0 0 {DESCRIPTION_WIDTH}"))
        if info.kind == "int" and isinstance(d, int) and not isinstance(d, bool):
            return widgets.IntText(value=d, **kw)
        if info.kind == "float" and isinstance(d, (int, float)) and not isinstance(d, bool):
            return widgets.FloatText(value=float(d), **kw)
        if info.kind in ("choice", "bool"):
            choices = list(info.choices) if info.kind == "choice" else [True, False]

            def has(v: Any) -> bool:  # 1 == True in Python; a choice list must tell them apart
                return any(type(c) is type(v) and c == v for c in choices)

            if not has(d):
                choices = [d] + choices
            if info.optional and not has(None):
                choices.append(None)
            self._choices = choices
            labels = [("default (None)" if c is None else str(c)) for c in choices]
            index = next(i for i, c in enumerate(choices) if type(c) is type(d) and c == d)
            return widgets.Dropdown(options=list(zip(labels, range(len(choices)))), value=index, **kw)
        placeholder = {
            "list": "names, comma-separated", "int_or_list": "an integer or a list like [0, 1]",
            "dict": "a dict like {'q_proj': 16}", "int": "an integer", "float": "a number", "str": "text",
        }.get(info.kind, "a Python literal")
        if d is None:
            placeholder = f"default: none · {placeholder}"
        return widgets.Text(value=_as_text(d), placeholder=placeholder, continuous_update=False, **kw)

    # -- values ------------------------------------------------------------------------

    def observe(self, fn: Callable[[Any], None]) -> None:
        self.widget.observe(fn, "value")

    def raw(self) -> Any:
        """The widget's value as the field's type (may raise a one-line PeftMagicError)."""
        w = self.widget
        if self._choices is not None:
            return self._choices[w.value]
        if isinstance(w, widgets.Text):
            text = w.value.strip()
            if text == _as_text(self.default).strip():
                return self.default
            if text == "":
                return None if (self.info.optional or self.default is None) else self.default
            if self.info.kind == "str":
                return text
            return coerce_value(self.method, self.info, read_text_value(text))
        if isinstance(w, widgets.FloatText):
            return coerce_value(self.method, self.info, w.value)
        return w.value

    def value(self) -> Any:
        """The value when it differs from the default, else ``UNSET``."""
        v = self.raw()
        d = self.default
        if self.pinned:
            return v
        if v is d or (type(v) is type(d) and v == d) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and isinstance(d, (int, float)) and not isinstance(d, bool)
                                                         and float(v) == float(d)):
            return UNSET
        if isinstance(v, (list, tuple)) and isinstance(d, (list, tuple)) and list(v) == list(d):
            return UNSET
        return v

    def set(self, value: Any) -> None:
        """Show ``value`` (e.g. the settings an adapter was attached with)."""
        w = self.widget
        if self._choices is not None:
            for i, c in enumerate(self._choices):
                if type(c) is type(value) and c == value:
                    w.value = i
                    return
            if isinstance(value, str):
                self._choices.append(value)
                w.options = list(w.options) + [(value, len(self._choices) - 1)]
                w.value = len(self._choices) - 1
            return
        if isinstance(w, widgets.Text):
            w.value = _as_text(value)
        elif isinstance(w, widgets.FloatText):
            w.value = float(value)
        else:
            w.value = value

    def reset(self) -> None:
        self.set(self.default)
        self.pinned = False


class SettingsForm:
    """The generated form for one method: ``main`` (common fields) and ``advanced`` (collapsed)."""

    def __init__(self, method: str, fields: dict[str, FieldInfo], defaults: dict[str, Any] | None = None,
                 skip: tuple[str, ...] = ()) -> None:
        self.method = method
        defaults = defaults or {}
        self.fields: dict[str, FieldWidget] = {}
        for name, info in fields.items():
            if name in skip:
                continue
            self.fields[name] = FieldWidget(method, info, defaults.get(name, info.default))
        common = [f for f in self.fields.values() if f.info.common]
        rest = [f for f in self.fields.values() if not f.info.common]
        if not common:  # a method with no well-known fields: show its first few up front
            common, rest = rest[:4], rest[4:]
        self.common = common
        self.rest = rest
        self.main = widgets.VBox([f.row for f in common])
        self.advanced = Collapsible(f"advanced ({len(rest)} more settings)", [f.row for f in rest])
        self.advanced.add_class("pm-advanced")
        self.advanced.layout.display = "" if rest else "none"
        self.box = widgets.VBox([self.main, self.advanced])

    def __getitem__(self, name: str) -> FieldWidget:
        return self.fields[name]

    def widget(self, name: str) -> widgets.Widget:
        return self.fields[name].widget

    def observe(self, fn: Callable[[Any], None]) -> None:
        for f in self.fields.values():
            f.observe(fn)

    def values(self) -> dict[str, Any]:
        """The settings that differ from the defaults, in field order (one-line error if unreadable)."""
        out: dict[str, Any] = {}
        for name, f in self.fields.items():
            try:
                v = f.value()
            except PeftMagicError:
                raise
            except (ValueError, TypeError) as e:
                raise PeftMagicError(f"cannot read {self.method} '{name}': {e}") from None
            if v is not UNSET:
                out[name] = v
        return out

    def set_values(self, settings: dict[str, Any], pin: set[str] | frozenset[str] = frozenset()) -> None:
        """Reset every field, then show ``settings`` (unknown keys are ignored).

        Fields named in ``pin`` count as set even when equal to the default: an adapter
        attached with an explicit ``r=8`` must be re-attached with ``r=8`` written out,
        or the engine would see a different request and replace it.
        """
        for name, f in self.fields.items():
            if name in settings:
                f.set(settings[name])
                f.pinned = name in pin
            else:
                f.reset()
