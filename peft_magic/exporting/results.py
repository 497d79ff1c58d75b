"""What an export did: where, which files, how long, what it checked, what to run next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fmt import fmt_bytes, fmt_duration
from ..rendering import HtmlRepr


@dataclass
class ExportResult(HtmlRepr):
    """An export's outcome. ``model`` is the notebook's model, unchanged."""

    model: Any
    format: str  # merged | gguf | ollama
    path: str
    quant: str | None
    seconds: float
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, bytes)
    notes: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what was verified in the written files
    next_step: str | None = None  # the command to run the export elsewhere

    @property
    def size(self) -> int:
        return sum(s for _, s in self.files)

    @property
    def message(self) -> str:
        what = {"merged": "merged model", "gguf": f"GGUF ({self.quant})", "ollama": f"Ollama model ({self.quant})"}
        return (f"exported the {what.get(self.format, self.format)} to {self.path} "
                f"({fmt_bytes(self.size)}, {_seconds(self.seconds)})")

    def __repr__(self) -> str:
        lines = [self.message, "files: " + ", ".join(f"{n} ({fmt_bytes(s)})" for n, s in self.files)]
        lines += [f"checked: {c}" for c in self.checks]
        lines += [f"note: {n}" for n in self.notes]
        if self.next_step:
            lines.append(f"next: {self.next_step}")
        return "\n".join(lines)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else fmt_duration(s)
