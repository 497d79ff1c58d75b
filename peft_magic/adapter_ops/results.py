"""What an adapter lifecycle command did (save, load, switch, delete, merge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fmt import fmt_bytes
from ..rendering import HtmlRepr


@dataclass
class LifecycleResult(HtmlRepr):
    """What a lifecycle command did. ``model`` is the object to use from now on (merge and
    loading onto a plain model return a different object than they were given)."""

    model: Any
    action: str  # saved | loaded | activated | off | on | deleted | merged
    adapter: str | None
    message: str
    notes: list[str] = field(default_factory=list)
    path: str | None = None
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, bytes) of a saved folder

    def __repr__(self) -> str:
        lines = [self.message]
        if self.files:
            lines.append("files: " + ", ".join(f"{n} ({fmt_bytes(s)})" for n, s in self.files))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
