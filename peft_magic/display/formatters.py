"""The display package's HTML for the engine's result objects, registered by class name.

Engine results inherit ``rendering.HtmlRepr``; this module tells that registry which
renderer draws each class, so the engine never imports the display. Imported by
``peft_magic/__init__``; the renderer modules themselves load on first use.
"""

from __future__ import annotations

from typing import Any

from .. import rendering


def _attach(r: Any) -> str:
    from .html import attach_html

    return attach_html(r)


def _summary(s: Any) -> str:
    from .html import summary_html

    return summary_html(s)


def _targets(t: Any) -> str:
    from .html import targets_html

    return targets_html(t)


def _methods(m: Any) -> str:
    from .html import methods_html

    return methods_html(m)


def _one_line(obj: Any, cls: str = "") -> str:
    from .html import escape, wrap

    return wrap(f"<div class='{cls}'>{escape(repr(obj))}</div>")


def _load(r: Any) -> str:
    from .html import escape

    return f"<div class='peft-magic'><b>peft_magic</b> · {escape(repr(r))}</div>"


def _runs(report: Any) -> str:
    from ..svg import line_chart
    from .html import table, wrap

    disk = ""
    if report.disk:
        disk = ("<div class='pm-head'>checkpoints on disk</div><div class='pm-dim'>re-run the cells that load the "
                "model, attach the adapter and build the data, then add <code>--resume</code></div>"
                + table(report.DISK_HEADERS, report.disk_rows()))
    if not report.runs:
        return wrap("<div class='pm-dim'>no training runs in this kernel yet</div>" + disk)
    chart = line_chart([(f"run {r.run_id}: {r.method} '{r.adapter}'", r.losses) for r in report.runs],
                       smooth_first=False, width=520, height=160)
    return wrap(table(report.HEADERS, report.rows()) + chart + disk)


def _lifecycle(r: Any) -> str:
    from .adapters_html import lifecycle_html

    return lifecycle_html(r)


def _adapters(t: Any) -> str:
    from .adapters_html import adapters_html

    return adapters_html(t)


def _generation(g: Any) -> str:
    from .adapters_html import generation_html

    return generation_html(g)


def _eval(r: Any) -> str:
    from .tasks_html import eval_html

    return eval_html(r)


def _predictions(p: Any) -> str:
    from .tasks_html import predictions_html

    return predictions_html(p)


def _comparison(c: Any) -> str:
    from .compare import comparison_html

    return comparison_html(c)


def _profile(p: Any) -> str:
    from .profile_html import profile_html

    return profile_html(p)


def _plan(p: Any) -> str:
    from .plan_html import plan_html

    return plan_html(p)


RENDERERS = {
    "AttachResult": _attach, "ModelSummary": _summary, "TargetReport": _targets, "MethodsReport": _methods,
    "LoadResult": _load, "Run": lambda r: _one_line(r, "pm-dim"), "RunsReport": _runs,
    "WatchReport": _one_line, "LifecycleResult": _lifecycle, "AdaptersTable": _adapters,
    "GenerationResult": _generation, "Plan": _plan, "EvalResult": _eval, "Predictions": _predictions,
    "Comparison": _comparison, "Profile": _profile,
}


def register_all() -> None:
    """Register every renderer with the engine's registry (idempotent)."""
    for name, fn in RENDERERS.items():
        rendering.register(name, fn)


register_all()
