"""A training run's state as readouts: label / value pairs, one terminal line, static HTML.

Pure formatting of the ``progress`` state the engine's events carry (step, loss, lr,
tokens/s, memory, …), shared by the live view (``progress.py``) and what a saved notebook
shows when the run is over. Terminal lines fit a width: fields are dropped (least useful
first) and shortened until the line does, so it never wraps.
"""

from __future__ import annotations

from typing import Any

from ..fmt import fmt_ago, fmt_bytes, fmt_duration
from ..svg import line_chart
from .html import escape, wrap
from .profile_html import speed_readouts

STATUS_STYLE = {"completed": "success", "interrupted": "warning", "oom": "danger", "error": "danger",
                "training": "info", "running": "info"}
STATUS_COLOR = {"completed": "#16a34a", "interrupted": "#d97706", "oom": "#dc2626", "error": "#dc2626",
                "training": "#2563eb", "running": "#2563eb"}


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def preference_readouts(rewards: dict[str, float] | None) -> list[tuple[str, str]]:
    """A preference run's readouts as TRL logged them: the rewards of the chosen and the
    rejected answers, their margin, and how often the chosen one scored higher."""
    if not rewards:
        return []
    out = []
    if "chosen" in rewards and "rejected" in rewards:
        out.append(("rewards", f"chosen {rewards['chosen']:+.3f} / rejected {rewards['rejected']:+.3f}"))
    if "margin" in rewards:
        out.append(("margin", f"{rewards['margin']:+.3f}"))
    if "accuracy" in rewards:
        out.append(("accuracy", f"{rewards['accuracy']:.0%}"))
    return out


def margin_series(rewards: list[tuple[int, dict[str, float]]]) -> list[tuple[int, float]]:
    """The reward margin per logged step: a preference run's second curve on the chart."""
    return [(step, r["margin"]) for step, r in rewards if "margin" in r]


def saved_text(p: dict[str, Any], now: float | None = None) -> str | None:
    """``step 3,000 · 2 min ago`` for the last checkpoint a run wrote (``training/checkpoints.py``)."""
    import time

    saved = p.get("saved")
    if not saved:
        return None
    step, at = saved
    return f"step {step:,} · {fmt_ago(max(0.0, (now or time.time()) - at))}"


def stats(p: dict[str, Any]) -> list[tuple[str, str]]:
    """The readouts of one progress state, as (label, value) pairs."""
    mem = p.get("memory") or {}
    mem_s = "–"
    if mem:
        mem_s = fmt_bytes(mem.get("used"))
        if mem.get("peak") is not None:
            mem_s += f" (peak {fmt_bytes(mem.get('peak'))})"
        if mem.get("total"):
            mem_s += f" / {fmt_bytes(mem.get('total'))}"
        mem_s += f" {mem.get('label', mem.get('kind', ''))}"
    loss = _num(p.get("loss"), ".4f")
    if p.get("loss_smooth") is not None:
        loss += f" (smoothed {p['loss_smooth']:.4f})"
    return [
        ("step", f"{p.get('step', 0)}/{p.get('total_steps') or '?'}"),
        ("epoch", _num(p.get("epoch"), ".2f")),
        ("loss", loss),
        ("lr", _num(p.get("lr"), ".2e")),
        ("tokens/s", _num(p.get("tokens_per_s"), ",.0f")),
        ("elapsed", fmt_duration(p.get("elapsed_s"))),
        ("ETA", fmt_duration(p.get("eta_s")) if p.get("status", "training") == "training" else "–"),
        ("memory", mem_s),
    ] + preference_readouts(p.get("rewards")) + ([("eval", p["eval"])] if p.get("eval") else []) + (
        [("saved", saved_text(p))] if p.get("saved") else []) + speed_readouts(p.get("speed")) + _loss_path(p)


def _loss_path(p: dict[str, Any]) -> list[tuple[str, str]]:
    """Which loss the run computes (fused without the logits, or the model's own)."""
    path = (p.get("speed") or {}).get("loss_path")
    return [("loss path", path)] if path else []


def _memory_variants(mem: dict[str, Any]) -> list[str]:
    """The memory readout for a terminal line, longest first."""
    if not mem:
        return []
    label = mem.get("label", mem.get("kind", "")) or "memory"
    short_label = "RAM" if "RAM" in label else label.split()[0]
    used = fmt_bytes(mem.get("used"))
    peak = f" (peak {fmt_bytes(mem.get('peak'))})" if mem.get("peak") is not None else ""
    total = f" / {fmt_bytes(mem.get('total'))}" if mem.get("total") else ""
    return [f"{label} {used}{total}{peak}", f"{short_label} {used}{peak}", f"{short_label} {used}"]


#: which readouts get their longer form first when a terminal line has room to spare
EXPAND_FIRST = ("memory", "tokens/s", "loss", "ETA", "elapsed", "lr", "epoch", "eval")


def text_line(p: dict[str, Any], width: int | None = None) -> str:
    """The run's state as one line; with ``width``, at most ``width`` characters.

    Without a width every readout is there. With one, the step count always, then the
    readouts in order of use — loss, ETA, tokens/s, memory, elapsed, then lr and epoch —
    each that fits in its shortest form, then their longer forms where there is room
    (memory, loss and tokens/s have shorter ones), then eval, then the compile and
    checkpointing readouts of a run that asked for them; the bar is a sixth of the width
    (10–24 characters), the same at every update.
    """
    total = p.get("total_steps") or 0
    step = p.get("step", 0)
    count = f"{step}/{total or '?'}"
    training = p.get("status", "training") == "training"
    loss = _num(p.get("loss"), ".4f")
    smooth = p.get("loss_smooth")
    fields: dict[str, list[str]] = {  # display order; each value: forms, longest first
        "epoch": [f"epoch {_num(p.get('epoch'), '.2f')}"],
        "loss": ([f"loss {loss} (smoothed {smooth:.4f})", f"loss {loss} ({smooth:.4f})"] if smooth is not None
                 else []) + [f"loss {loss}"],
        "lr": [f"lr {_num(p.get('lr'), '.2e')}"],
        "tokens/s": [f"tokens/s {_num(p.get('tokens_per_s'), ',.0f')}", f"{_num(p.get('tokens_per_s'), ',.0f')} tok/s"],
        "elapsed": [f"elapsed {fmt_duration(p.get('elapsed_s'))}"],
        "ETA": [f"ETA {fmt_duration(p.get('eta_s')) if training else '–'}"],
        "memory": _memory_variants(p.get("memory") or {}) or ["memory –"],
    }
    for label, value in preference_readouts(p.get("rewards")):
        fields[label] = [f"{label} {value}"] + ([f"margin {p['rewards']['margin']:+.2f}"] if label == "margin" else [])
    if p.get("eval"):
        fields["eval"] = [f"eval {p['eval']}"]
    if p.get("saved"):
        fields["saved"] = [f"saved {saved_text(p)}"]
    speed = {label: [value if label == "compile" else f"{label} {value}"]  # "compiled in 6.8 s" says what it is
             for label, value in speed_readouts(p.get("speed")) + _loss_path(p)}
    fields.update(speed)  # compile / checkpointing readouts: last, and first to go on a narrow line

    def bar_of(n: int) -> str:
        filled = int(n * step / total) if total else 0
        return "█" * filled + "░" * (n - filled)

    if width is None:
        return f"{bar_of(24)} {count} · " + " · ".join(v[0] for v in fields.values())
    groups = (("loss", "ETA", "tokens/s", "memory", "elapsed"), tuple(k for k in ("margin", "accuracy") if k in fields),
              ("lr", "epoch"), tuple(k for k in ("rewards", "eval", "saved") if k in fields), tuple(speed))
    chosen: dict[str, str] = {}

    def length(parts: dict[str, str], bar: int) -> int:
        items = [parts[k] for k in fields if k in parts]
        return (bar + 1 if bar else 0) + len(count) + sum(len(x) + 3 for x in items)

    min_bar = max(10, min(24, width // 6)) if width >= 40 else 0
    for group in groups:
        for key in group:  # first each readout of the group that fits in its shortest form …
            if length({**chosen, key: fields[key][-1]}, min_bar) <= width:
                chosen[key] = fields[key][-1]
        for key in sorted(group, key=lambda k: EXPAND_FIRST.index(k) if k in EXPAND_FIRST else len(EXPAND_FIRST)):  # … then longer forms, where there is room
            for form in fields[key][:-1] if key in chosen else ():
                if length({**chosen, key: form}, min_bar) <= width:
                    chosen[key] = form
                    break
    bar = min_bar  # a steady bar: its width does not follow the readouts' lengths
    items = [chosen[k] for k in fields if k in chosen]
    line = (f"{bar_of(bar)} " if bar else "") + count + "".join(" · " + x for x in items)
    return line[:width]


def loss_chart(losses: list[tuple[int, float]], eval_losses: list[tuple[int, float]] | None,
               margins: list[tuple[int, float]] | None, x_max: int | None) -> str:
    """The run's chart: the loss; the held-out loss beside it; a preference run's reward
    margin as a second curve (it rises while the loss falls)."""
    series = [("train loss" if eval_losses else "loss", losses)]
    if eval_losses:
        series.append(("eval loss", eval_losses))
    if margins:
        series.append(("reward margin", margins))
    return line_chart(series, x_max=x_max, y_label="loss" if not margins else "loss / margin")


def snapshot_html(p: dict[str, Any], losses: list[tuple[int, float]], title: str, status: str,
                  message: str | None = None, eval_losses: list[tuple[int, float]] | None = None,
                  data: str = "", margins: list[tuple[int, float]] | None = None) -> str:
    """The static HTML of a run's state (what a saved notebook shows)."""
    total = p.get("total_steps") or 0
    step = p.get("step", 0)
    pct = 100.0 * step / total if total else 0.0
    color = STATUS_COLOR.get(status, "#2563eb")
    bar = (f"<div class='pm-run-bar' style='width:420px;height:10px;background:rgba(127,127,127,.2);"
           f"border-radius:3px;margin:4px 0'><div class='pm-run-bar-fill' style='width:{pct:.1f}%;height:10px;"
           f"background:{color};border-radius:3px'></div></div>")
    # the readouts as the live widget shows them: label · value pairs in one wrapping line (not a
    # table, whose cells each front end's own CSS aligns differently)
    rows = "<div class='pm-readouts'>" + " &nbsp; ".join(
        f"<span class='pm-dim'>{escape(k)}</span>&nbsp;{escape(v)}" for k, v in stats(p)) + "</div>"
    chart = loss_chart(losses, eval_losses, margins, total or None)
    msg = f"<div style='color:{color}'>{escape(message)}</div>" if message else ""
    about = f"<div class='pm-dim'>data: {escape(data)}</div>" if data else ""
    return wrap(f"<div class='pm-head'>{escape(title)} · <span style='color:{color}'>{escape(status)}</span></div>"
                f"{about}{bar}{rows}{msg}{chart}")
