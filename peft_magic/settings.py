"""Notebook-wide defaults a user may change once for the whole notebook.

The engine reads them from :data:`SETTINGS` (plain Python: the engine never imports
traitlets or IPython); the ``%peft`` magic exposes each as a traitlets configurable, so a
notebook sets them the Jupyter way — ``%config PeftMagic.display = "text"`` — and ``%config
PeftMagic`` / ``%peft help config`` list them (``magics/config.py``). A field added here
with its help appears in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import PeftMagicError, did_you_mean

DISPLAYS = ("auto", "widget", "text", "none")


@dataclass
class Settings:
    """The defaults; ``help`` of each field is what ``%config PeftMagic`` shows."""

    display: str = field(default="auto", metadata={
        "help": "how training, profiling and compare show progress: auto (widgets in a notebook, a text "
                "line in a terminal), widget, text or none"})
    learning_rates: dict[str, float] = field(default_factory=dict, metadata={
        "help": "learning rates by method for runs without lr=, e.g. {'lora': 1e-3, 'ia3': 1e-2} "
                "(methods not named keep peft_magic's defaults)"})
    autosave_minutes: float = field(default=10.0, metadata={
        "help": "a training run writes a resumable checkpoint this often (minutes of training), and at the end; "
                "0 turns time-based autosave off"})
    checkpoint_dir: str = field(default="checkpoints", metadata={
        "help": "where training checkpoints go (one sub-folder per adapter and run); relative to the notebook. "
                "On Colab, a mounted Drive folder survives a disconnect"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many checkpoints of a run to keep"})
    cache_dir: str = field(default="", metadata={
        "help": "where built-in models are materialised (default: $PEFT_MAGIC_CACHE, else ~/.cache/peft_magic/models)"})
    debug: bool = field(default=False, metadata={
        "help": "show the full traceback of unexpected errors (for bug reports) instead of one line"})

    def help(self) -> list[tuple[str, Any, str]]:
        """(name, current value, help) of every setting."""
        return [(f.name, getattr(self, f.name), f.metadata.get("help", "")) for f in fields(self)]


SETTINGS = Settings()


def configure(**values: Any) -> Settings:
    """Set defaults by name (what ``%config PeftMagic.X = …`` calls); one line for a bad one."""
    names = {f.name: f for f in fields(Settings)}
    for key, value in values.items():
        if key not in names:
            hint = did_you_mean(key, list(names))
            raise PeftMagicError(f"unknown setting '{key}'" + (f": {hint}" if hint else ""), "see %peft help config")
        if key == "display" and value not in DISPLAYS:
            raise PeftMagicError(f"display must be one of {', '.join(DISPLAYS)}, got {value!r}")
        if key in ("autosave_minutes",) and float(value) < 0:
            raise PeftMagicError(f"{key} must be ≥ 0, got {value}")
        if key == "keep_checkpoints" and int(value) < 1:
            raise PeftMagicError(f"keep_checkpoints must be ≥ 1, got {value}")
        setattr(SETTINGS, key, value)
    return SETTINGS


def method_lr(names: tuple[str, ...]) -> float | None:
    """The user's default learning rate for a method known by any of ``names`` (its alias,
    its peft type), case-insensitively; None when the notebook set none."""
    rates = {str(k).lower(): float(v) for k, v in SETTINGS.learning_rates.items()}
    for name in names:
        if name and name.lower() in rates:
            return rates[name.lower()]
    return None
