"""``%peft methods``: every available method, grouped by family, with what it supports."""

from __future__ import annotations

from dataclasses import dataclass

from ..rendering import HtmlRepr
from .behaviour import FAMILIES
from .discovery import MethodInfo, registry


@dataclass
class MethodsReport(HtmlRepr):
    """Every available method, grouped by family; what ``%peft methods`` shows."""

    methods: list[MethodInfo]
    peft_version: str

    def families(self) -> list[str]:
        present = {m.family for m in self.methods}
        return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))

    def __repr__(self) -> str:
        lines = [f"{len(self.methods)} PEFT methods (peft {self.peft_version}); merge = can merge into the base, "
                 "kbit = runs on a 4/8-bit base"]
        w = max(len(m.name) for m in self.methods)
        for fam in self.families():
            lines.append(f"{fam}:")
            for m in self.methods:
                if m.family == fam:
                    flags = ("merge" if m.can_merge else "     ") + " " + ("kbit" if m.supports_quantized else "    ")
                    alias = f" (also: {', '.join(m.aliases)})" if m.aliases else ""
                    lines.append(f"  {m.name:<{w}}  {flags}  {m.description}{alias}")
        return "\n".join(lines)


def list_methods() -> MethodsReport:
    """All methods of the installed peft (plus ours), for ``%peft methods`` and the panel."""
    methods = list(registry().values())  # imports peft
    import peft

    return MethodsReport(methods, peft.__version__)
