"""The method picker: every method of the installed peft (and ours), grouped by family.

Core ipywidgets have no grouped drop-down, so the family is a row of toggle buttons
(LoRA family · prompt-based · other) and the drop-down lists that family's methods with
a one-line description each. A method that cannot work with this model (no 4-bit
support on a 4-bit model) stays listed, marked, and the panel disables Attach with the
reason — hiding it would leave users wondering where it went.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..peft_methods.discovery import MethodInfo, registry
from ..syntax.write import method_word

FAMILIES = ("LoRA family", "prompt-based", "other")


def unsupported_reason(info: MethodInfo, quantized: str | None) -> str | None:
    """Why ``info`` cannot be attached to this model, or ``None`` when it can."""
    if quantized and not info.supports_quantized:
        return (f"{method_word(info)} has no bitsandbytes support, so it cannot go on this {quantized} model: "
                "use lora (QLoRA) or ia3, or load the model without --4bit/--8bit")
    return None


class MethodPicker:
    """Family toggle + method drop-down + a description line; ``value`` is a PeftType name."""

    def __init__(self, quantized: str | None = None, initial: str = "LORA") -> None:
        self.methods: dict[str, MethodInfo] = dict(registry())
        self.quantized = quantized
        present = {m.family for m in self.methods.values()}
        families = [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))
        self.family = widgets.ToggleButtons(options=families, value=families[0],
                                            style={"button_width": "125px"})
        self.family.add_class("pm-family")
        self.dropdown = widgets.Dropdown(description="method", style={"description_width": "60px"},
                                         layout=widgets.Layout(width="560px"))
        self.dropdown.add_class("pm-method")
        self.about = widgets.HTML()
        self._callbacks: list[Callable[[str], None]] = []
        self._quiet = False
        self.family.observe(self._on_family, "value")
        self.dropdown.observe(self._on_method, "value")
        self.box = widgets.VBox([self.family, self.dropdown, self.about])
        self.set(initial if initial in self.methods else next(iter(self.methods)))

    def label(self, info: MethodInfo) -> str:
        desc = info.description if len(info.description) <= 70 else info.description[:69].rsplit(" ", 1)[0] + " …"
        mark = " [no 4-bit]" if unsupported_reason(info, self.quantized) else ""
        return f"{method_word(info)}{mark} — {desc}"

    def _fill(self, family: str) -> None:
        opts = [(self.label(m), pt) for pt, m in self.methods.items() if m.family == family]
        self.dropdown.options = opts

    def _on_family(self, change: Any) -> None:
        if self._quiet:
            return
        self._quiet = True
        try:
            self._fill(change["new"])
            self.dropdown.value = self.dropdown.options[0][1] if self.dropdown.options else None
        finally:
            self._quiet = False
        self._changed()

    def _on_method(self, _change: Any) -> None:
        if self._quiet:
            return
        self._changed()

    def _changed(self) -> None:
        self._describe()
        for fn in self._callbacks:
            fn(self.value)

    def _describe(self) -> None:
        info = self.info
        caps = [f"merge into the base: {'yes' if info.can_merge else 'no'}",
                f"4/8-bit base: {'yes' if info.supports_quantized else 'no'}"]
        if info.aliases:
            caps.append("also: " + ", ".join(info.aliases))
        self.about.value = (f"<div style='margin:0 0 4px 64px'>{html.escape(info.description)}<br>"
                            f"<span style='color:var(--jp-ui-font-color2,#666);font-size:11px'>"
                            f"{html.escape(' · '.join(caps))}</span></div>")

    def on_change(self, fn: Callable[[str], None]) -> None:
        self._callbacks.append(fn)

    @property
    def value(self) -> str:
        return self.dropdown.value

    @property
    def info(self) -> MethodInfo:
        return self.methods[self.value]

    def set(self, peft_type: str) -> None:
        """Select ``peft_type`` (switching the family), without firing change callbacks twice."""
        info = self.methods[peft_type]
        self._quiet = True
        try:
            self.family.value = info.family
            self._fill(info.family)
            self.dropdown.value = peft_type
        finally:
            self._quiet = False
        self._changed()
