"""Static HTML for ``%peft evaluate`` (a metrics table) and ``%peft predict`` (the answers)."""

from __future__ import annotations

from typing import Any

from ..fmt import fmt_metric
from .html import Raw, escape, table, wrap

_LOWER_IS_BETTER = ("loss", "perplexity")


def eval_html(r: Any) -> str:
    """Metric rows × model columns; with two columns the better value is bold."""
    cols = r.columns
    rows = []
    for name in r.metrics:
        values = [m.get(name) for _, m in cols]
        best = None
        if len(cols) > 1 and all(v is not None for v in values):
            best = (min if name in _LOWER_IS_BETTER else max)(values)
        rows.append([name] + [Raw(f"<b>{escape(fmt_metric(name, v))}</b>") if best is not None and v == best and
                              values.count(best) == 1 else fmt_metric(name, v) for v in values])
    head = (f"<div class='pm-head'>{escape(r.title)} <span class='pm-dim'>· {r.examples:,} examples · "
            f"{r.seconds:.1f} s</span></div>")
    notes = "".join(f"<div class='pm-dim'>note: {escape(n)}</div>" for n in r.notes)
    return wrap(head + table(["metric"] + [c for c, _ in cols], rows, set(range(1, len(cols) + 1))) + notes)


def _marked(text: str, entities: list[dict[str, Any]]) -> str:
    """The text with each entity highlighted and its type after it."""
    out, pos = [], 0
    for e in sorted(entities, key=lambda e: e["start"]):
        out.append(escape(text[pos:e["start"]]))
        out.append(f"<mark style='background:rgba(59,130,246,.18);padding:0 2px'>{escape(text[e['start']:e['end']])}"
                   f"<sup class='pm-dim'> {escape(e['type'])}</sup></mark>")
        pos = e["end"]
    out.append(escape(text[pos:]))
    return "".join(out)


def predictions_html(p: Any) -> str:
    rows = []
    for i in range(len(p)):
        if p.task == "TOKEN_CLS" and isinstance(p.inputs[i], str):
            answer = Raw(_marked(p.inputs[i], p.outputs[i]))
            rows.append([answer, p.answer_text(i)])
        else:
            rows.append([p.input_text(i), p.answer_text(i)])
    return wrap(table(["input", "answer"], rows))
