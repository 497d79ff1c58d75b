"""The model card of a saved adapter: README.md with how it was made, and its loss curve.

Why a card: an adapter folder found months later must explain itself — base model,
method, settings, the training runs with their loss — and say how to load it. The YAML
front matter also records the base model's architecture, which lets loading refuse an
adapter made for another architecture even when its tensor shapes happen to fit.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from ..fmt import fmt_bytes, fmt_metrics
from ..svg import line_chart

CARD_NAME = "README.md"
CURVE_NAME = "loss_curve.svg"


def _fmt_seconds(s: float | None) -> str:
    if not s:
        return "–"
    if s < 90:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def loss_svg(runs: list[Any]) -> str | None:
    """The loss of ``runs`` as a standalone SVG file (one line per run), or None without losses.

    Plain SVG, drawn by the same chart as the live display, so it needs no plotting
    library and renders on the Hub, GitHub and in JupyterLab's file viewer.
    """
    series = [(f"run {r.run_id}", [(s, l) for s, l in r.losses if l == l]) for r in runs]  # drop NaN
    series = [(name, pts) for name, pts in series if pts]
    if not series:
        return None
    return line_chart(series, width=480, height=200, smooth_first=False, y_label="training loss")


def card_metadata(folder: Path) -> dict[str, Any]:
    """The YAML front matter of a folder's README.md (``{}`` when there is none or it is
    unreadable), read by huggingface_hub's own model-card reader.

    peft_magic writes the base model's architecture there (``base_model_type``), which
    lets loading refuse an adapter for another architecture even when its tensors
    happen to have the right shapes (prompt embeddings of the same width).
    """
    from huggingface_hub.repocard import metadata_load

    try:
        data = metadata_load(folder / CARD_NAME)
    except Exception:  # noqa: BLE001 — an unreadable or malformed card has no metadata
        return {}
    return data if isinstance(data, dict) else {}


def card_header(*, base_model: str, base_class: str, model_type: str | None, method: str, merged: bool,
                library: str | None = None) -> str:
    """The card's YAML front matter, written by huggingface_hub's ``ModelCardData`` (the
    fields the Hub reads: base_model, library_name, tags; ours beside them). ``library``
    names another reader (an export's ``gguf``); by default transformers or peft."""
    from huggingface_hub import ModelCardData

    extra = {"base_model_type": model_type} if model_type else {}
    data = ModelCardData(base_model=base_model, library_name=library or ("transformers" if merged else "peft"),
                         tags=[method, "peft", "peft_magic"], base_model_class=base_class, **extra)
    return f"---\n{data.to_yaml()}\n---"


def model_card(*, adapter: str, method: str, peft_type: str, base_model: str, base_class: str,
               bits: int | None, settings: dict[str, Any], runs: list[Any], trainable: int | None,
               has_curve: bool, merged: bool = False, model_type: str | None = None,
               extra_rows: list[tuple[str, str]] | None = None, use: list[str] | None = None,
               library: str | None = None) -> str:
    """The README.md of a saved adapter: what it is, how it was made, how to load it.

    An export adds rows to the table (``extra_rows``: format, quantization), its own
    "Use" section (``use``: markdown lines) and its ``library`` for the front matter.
    """
    what = "merged model" if merged else "adapter"
    lines = [
        card_header(base_model=base_model, base_class=base_class, model_type=model_type, method=method,
                    merged=merged, library=library),
        "",
        f"# {adapter}: {method} {what} for {base_model}",
        "",
        f"Saved by peft_magic on {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base_model}` ({base_class}{f', {bits}-bit' if bits else ''}) |",
        f"| method | {method} (peft `{peft_type}`) |",
    ]
    if trainable is not None:
        lines.append(f"| trainable parameters | {trainable:,} |")
    lines += [f"| {k} | {_md(v)} |" for k, v in extra_rows or []]
    lines += ["", "## Settings", ""]
    if settings:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| `{k}` | `{_md(v)}` |" for k, v in sorted(settings.items())]
    else:
        lines.append("peft's defaults.")
    lines += ["", "## Training runs", ""]
    if runs:
        lines += ["| run | status | steps | final loss | time | peak memory |", "|---|---|---|---|---|---|"]
        for r in runs:
            loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "–"
            mem = f"{fmt_bytes(r.peak_memory)} {r.memory_kind or ''}".strip() if r.peak_memory else "–"
            lines.append(f"| {r.run_id} | {r.status} | {r.steps_done}/{r.total_steps} | {loss} | "
                         f"{_fmt_seconds(r.seconds)} | {mem} |")
        if has_curve:
            lines += ["", f"![training loss]({CURVE_NAME})"]
        lines += ["", "Loss by step:", ""]
        for r in runs:
            if r.losses:
                pts = ", ".join(f"{s}: {l:.4f}" for s, l in _thin(r.losses, 40))
                lines.append(f"- run {r.run_id}: {pts}")
        evaluated = [f"- run {r.run_id}, step {r.eval_metrics[-1][0]}: {fmt_metrics(r.eval_metrics[-1][1])}"
                     for r in runs if getattr(r, "eval_metrics", None)]
        if evaluated:
            lines += ["", "Evaluation on held-out data:", ""] + evaluated
        preferred = [f"- run {r.run_id}: {r.objective.upper()}, step {r.rewards[-1][0]}: "
                     f"{fmt_metrics(r.rewards[-1][1])}" for r in runs if getattr(r, "objective", None) and r.rewards]
        if preferred:
            lines += ["", "Preference tuning (the rewards TRL logged last; the reference is the base model):",
                      ""] + preferred
        settings_lines = [f"- run {r.run_id}: " + ", ".join(f"{k}={_md(v)}" for k, v in r.settings.items())
                          for r in runs if r.settings]
        if settings_lines:
            lines += ["", "Training settings:", ""] + settings_lines
    else:
        lines.append("No training runs were recorded in the session that saved this adapter.")
    lines += ["", "## Use", ""]
    if use is not None:
        lines += use
    elif merged:
        lines += ["```python", "from transformers import AutoModelForCausalLM",
                  "model = AutoModelForCausalLM.from_pretrained('PATH')", "```"]
    else:
        lines += ["```python", "%peft load " + base_model, "%peft load-adapter PATH", "```", "",
                  "or with peft: `PeftModel.from_pretrained(base_model, 'PATH')`."]
    return "\n".join(lines) + "\n"


def _md(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return html.escape(text).replace("|", "\\|")


def _thin(points: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    if len(points) <= n:
        return list(points)
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]
