"""The target-module picker: the model's own layers as tick boxes, or a typed pattern.

Why from the model: ``target_modules`` is the setting people get wrong most (a GPT-2
``c_attn`` on a Llama, a regex that hits 3 layers of 30). The picker lists the layers
this model actually has, grouped by name with counts, shapes and parameter sizes
(``target_explorer.explore``), ticks peft's default for the method, and shows what the
current choice matches — with peft's own matching, so it is what an attach would do.

Leaving the default ticks (or ticking nothing) means "not set": peft's per-architecture
default applies and the ``%peft`` line stays short.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..adapter_ops.targets import TargetReport, explore
from ..errors import PeftMagicError
from ..fmt import group_names

_REGEX = re.compile(r"[.*+?\[\]()|^$\\{}]")


def _dim(text: str) -> str:
    return f"<span style='color:var(--jp-ui-font-color2,#666)'>{text}</span>"


class TargetsPicker:
    """Tick boxes for the layer groups of a model plus a free pattern box."""

    def __init__(self, model: Any, peft_type: str = "LORA") -> None:
        self.model = model
        self.peft_type = peft_type
        self.touched = False
        self.pinned = False  # shown from an adapter's explicit setting: written out even if it is the default
        self._quiet = False
        self._callbacks: list[Callable[[], None]] = []
        self.report: TargetReport = explore(model, None, peft_type)
        self.title = widgets.HTML()
        self.boxes: dict[str, widgets.Checkbox] = {}
        rows = []
        seen: set[str] = set()
        for g in self.report.groups:
            same_name = [x for x in self.report.groups if x.name == g.name]
            if g.name in seen:
                continue
            seen.add(g.name)
            count = sum(x.count for x in same_name)
            params = sum(x.params for x in same_name)
            kinds = "/".join(sorted({x.kind for x in same_name}))
            shape = same_name[0].shape if len(same_name) == 1 else "mixed"
            cb = widgets.Checkbox(value=False, description=g.name, indent=False,
                                  layout=widgets.Layout(width="150px"))
            cb.observe(self._on_tick, "value")
            self.boxes[g.name] = cb
            info = widgets.HTML(_dim(f"{html.escape(kinds)} ×{count} · {html.escape(shape)} · {params:,} params"))
            row = widgets.HBox([cb, info])
            row.add_class("pm-target")
            rows.append(row)
        self.pattern = widgets.Text(value="", placeholder="or a pattern: a regex, all-linear, or names a,b",
                                    description="pattern", continuous_update=False,
                                    style={"description_width": "60px"}, layout=widgets.Layout(width="440px"))
        self.pattern.observe(self._on_pattern, "value")
        self.matches = widgets.HTML()
        self.box = widgets.VBox([self.title, widgets.VBox(rows), self.pattern, self.matches],
                                layout=widgets.Layout(border="1px solid var(--jp-border-color2,#ddd)",
                                                      padding="4px 8px", margin="4px 0", width="max-content"))
        self.box.add_class("pm-targets")
        self.set_method(peft_type)

    # -- events ------------------------------------------------------------------------

    def on_change(self, fn: Callable[[], None]) -> None:
        self._callbacks.append(fn)

    def _changed(self) -> None:
        self.update_matches()
        for fn in self._callbacks:
            fn()

    def _on_tick(self, _change: Any) -> None:
        if self._quiet:
            return
        self.touched = True
        self._changed()

    def _on_pattern(self, _change: Any) -> None:
        if self._quiet:
            return
        self.touched = True
        self._changed()

    # -- state -------------------------------------------------------------------------

    @property
    def defaults(self) -> list[str]:
        """The group names peft targets by default for this method and architecture."""
        return [g.name for g in self.report.groups if g.default]

    def _tick(self, names: list[str]) -> None:
        self._quiet = True
        try:
            for n, cb in self.boxes.items():
                cb.value = n in names
        finally:
            self._quiet = False

    def set_method(self, peft_type: str) -> None:
        """Follow the chosen method: its defaults are ticked unless the user chose already."""
        self.peft_type = peft_type
        try:
            self.report = explore(self.model, None, peft_type)
        except PeftMagicError:
            pass
        default = self.report.default_targets
        shown = ", ".join(default) if isinstance(default, list) else (default or "none")
        self.title.value = (f"<b>target modules</b> {_dim('(peft default for this model: ' + html.escape(shown) + ')')}")
        if not self.touched:
            self._tick(self.defaults)
        self.update_matches()

    def value(self) -> Any:
        """``None`` (peft's default), a list of layer names, or a pattern string."""
        text = self.pattern.value.strip()
        if text:
            if text in ("all-linear", "all_linear"):
                return "all-linear"
            if _REGEX.search(text):
                return text
            return [t.strip() for t in text.split(",") if t.strip()]
        ticked = [n for n, cb in self.boxes.items() if cb.value]
        if not ticked or (not self.pinned and self.defaults and set(ticked) == set(self.defaults)):
            return None
        return ticked

    def set_value(self, value: Any) -> None:
        """Show a ``target_modules`` setting (from an adapter attached elsewhere)."""
        self._quiet = True
        try:
            self.pinned = value is not None
            if value is None:
                self.pattern.value = ""
                self.touched = False
                self._tick(self.defaults)
            elif isinstance(value, (list, tuple, set)) and all(v in self.boxes for v in value):
                self.pattern.value = ""
                self._tick(list(value))
                self.touched = True
            else:
                self.pattern.value = value if isinstance(value, str) else ",".join(map(str, value))
                self.touched = True
        finally:
            self._quiet = False
        self.update_matches()

    def update_matches(self) -> None:
        """Say what the current choice matches, with peft's own matching."""
        value = self.value()
        pattern = value if value is not None else self.report.default_targets
        if pattern is None:
            self.matches.value = _dim("no default target for this architecture: tick layers or type a pattern")
            return
        try:
            rep = explore(self.model, pattern, self.peft_type)
        except PeftMagicError as e:
            self.matches.value = f"<span class='pm-err' style='color:var(--jp-error-color0,#b91c1c)'>" \
                                 f"{html.escape(str(e))}</span>"
            return
        except Exception as e:  # an architecture the explorer cannot expand: say so, do not break the form
            self.matches.value = _dim(html.escape(f"cannot evaluate this pattern here ({type(e).__name__})"))
            return
        what = "default" if value is None else "choice"
        text = f"{what} matches <b>{len(rep.matched)}</b> modules"
        if rep.matched:
            text += ": " + html.escape(group_names(rep.matched))
        for w in rep.warnings:
            text += f"<br><span style='color:var(--jp-warn-color0,#b45309)'>warning: {html.escape(w)}</span>"
        self.matches.value = text
