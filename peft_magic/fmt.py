"""Plain-text formatting shared by the engine's text views and the display package.

A leaf module (imports nothing of the package) so that both the engine's ``__repr__``
methods and the HTML renderers format bytes, durations, parameter counts and module
names the same way, from one place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any


def fmt_bytes(n: float | None) -> str:
    """Human-readable bytes with binary units: ``1.5 GiB`` written as ``1.5 GB`` for brevity."""
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def fmt_duration(seconds: float | None) -> str:
    """``75`` → ``1:15``; ``3700`` → ``1:01:40``; ``None`` / NaN → ``–``."""
    if seconds is None or seconds != seconds:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_ago(seconds: float | None) -> str:
    """How long ago, as a person says it: ``just now``, ``40 s ago``, ``2 min ago``, ``3 h ago``."""
    if seconds is None or seconds != seconds:
        return "–"
    if seconds < 10:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def fmt_params(n: int) -> str:
    """``134_515_008`` → ``134.5M``; ``1.2e9`` → ``1.20B``."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def short_dtype(dtype: str) -> str:
    """``bfloat16`` → ``bf16`` (the spelling people type)."""
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)


def fmt_targets(targets: Any) -> str:
    """A ``target_modules`` value as text: a regex / ``all-linear`` quoted, names joined."""
    if targets is None:
        return "none"
    if isinstance(targets, str):
        return repr(targets)
    return ", ".join(sorted(targets))


def fmt_value(value: Any) -> str:
    """A setting's value in a diff or a summary: strings quoted, the rest as Python prints it."""
    return repr(value) if isinstance(value, str) else str(value)


def strip_peft_prefix(name: str) -> str:
    """``base_model.model.model.layers.0.q_proj`` → ``model.layers.0.q_proj`` (names as the
    user's model has them, without peft's wrapper path)."""
    for p in ("base_model.model.", "base_model."):
        if name.startswith(p):
            return name[len(p):]
    return name


def group_names(names: Iterable[str]) -> str:
    """``['model.layers.0.q_proj', 'model.layers.1.q_proj', …]`` → ``'q_proj ×2, …'``."""
    counts: OrderedDict[str, int] = OrderedDict()
    for n in names:
        short = strip_peft_prefix(n).rsplit(".", 1)[-1]
        counts[short] = counts.get(short, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in counts.items())


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart (the text view of every table)."""
    table = [headers] + rows
    widths = [max(len(str(r[i])) for r in table) for i in range(len(headers))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


#: preference readouts that are rewards (log-probability ratios × β), not fractions
REWARDS = ("chosen", "rejected", "margin")


def fmt_metric(name: str, value: float | None) -> str:
    """Fractions as percentages (accuracy 0.91 → ``91.0%``); loss and perplexity as numbers."""
    if value is None or value != value:
        return "–"
    if name == "loss":
        return f"{value:.4f}"
    if name == "perplexity":
        return f"{value:,.2f}"
    if name in REWARDS:
        return f"{value:+.3f}"
    return f"{100 * value:.1f}%"


def fmt_metrics(metrics: dict[str, float]) -> str:
    """``loss 1.2345 · f1 85.0%`` — a metrics dict on one line."""
    return " · ".join(f"{k} {fmt_metric(k, v)}" for k, v in metrics.items())
