"""``%peft compare``: one live table (a row per method) with the loss curves overlaid, and
the finished comparison as static HTML with the best value of each column marked.

The live view draws the engine's events: ``compare_start`` / ``compare_row`` for the
rows, and each candidate's own (already throttled) ``progress`` events for the row that
is training; curves come from the run records, so every logged step is drawn.
"""

from __future__ import annotations

from typing import Any

from .. import events
from ..fmt import fmt_bytes, fmt_duration, fmt_metric, fmt_params
from ..state import runs
from ..svg import line_chart
from .html import Raw, escape, table, wrap
from .live import LiveView, dim

_LOWER_BETTER = {"trainable", "adapter size", "final loss", "loss", "perplexity", "peak memory", "time"}
_STATUS_COLOR = {"done": "#16a34a", "training": "#2563eb", "searching": "#7c3aed", "failed": "#dc2626",
                 "stopped": "#d97706", "waiting": "#6b7280"}


def _curves(run_ids: dict[str, int | None]) -> str:
    by_id = {r.run_id: r for r in runs()}
    series = [(label, by_id[rid].losses) for label, rid in run_ids.items() if rid in by_id and by_id[rid].losses]
    return line_chart(series, smooth_first=False, width=520, height=170) if series else ""


def _best(values: list[float | None], lower: bool) -> float | None:
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return None
    return min(present) if lower else max(present)


def comparison_html(c: Any) -> str:
    """The finished comparison: the table (best per column in bold), the curves, the reading."""
    headers, texts = c.table()
    done = [r for r in c.rows if r.status == "done"]
    numeric = {
        "trainable": lambda r: r.trainable, "adapter size": lambda r: r.adapter_bytes, "final loss": lambda r: r.loss,
        "tokens/s": lambda r: r.tokens_per_s, "peak memory": lambda r: r.peak_memory, "time": lambda r: r.seconds,
        **{m: (lambda r, m=m: r.metrics.get(m)) for m in c.metric_names},
    }
    best = {h: _best([f(r) for r in done], h in _LOWER_BETTER) for h, f in numeric.items()}
    rows = []
    for r, cells in zip(c.rows, texts):
        out = []
        for h, text in zip(headers, cells):
            value = numeric[h](r) if h in numeric and r.status == "done" else None
            if h == "status":
                out.append(Raw(f"<span style='color:{_STATUS_COLOR.get(r.status, '')}'>{escape(text)}</span>"))
            elif value is not None and best.get(h) is not None and value == best[h]:
                out.append(Raw(f"<b>{escape(text)}</b> ★"))
            else:
                out.append(text)
        rows.append(out)
    head = (f"<div class='pm-head'>compare · {escape(str(c.steps))} steps each · sorted by {escape(c.metric)} "
            f"<span class='pm-dim'>({'higher' if c.higher_is_better else 'lower'} is better; ★ best in its column)"
            f"</span></div>")
    reading = f"<div><b>{escape(c.reading)}</b></div>" if c.reading else ""
    searches = c.searches()
    search = ("<div class='pm-dim'>learning rates (lr=auto) — each rate tried, scored, ★ chosen:</div>"
              + "".join(f"<div class='pm-dim' style='margin-left:1em'>{escape(line)}</div>" for line in searches)
              ) if searches else ""
    notes = "".join(f"<div class='pm-dim'>note: {escape(n)}</div>" for n in c.notes)
    numeric_cols = {i for i, h in enumerate(headers) if h in numeric}
    return wrap(head + table(headers, rows, numeric_cols) + reading + search + notes
                + _curves({r.label: r.run_id for r in c.rows}))


class LiveCompare(LiveView):
    """The live table while ``with`` is active: a widget in a kernel, a line per finished
    candidate in a terminal; at the end one static line (the result's table follows it)."""

    def __init__(self, surface: Any = "auto", stream: Any = None) -> None:
        super().__init__(surface, stream)
        self.rows: list[dict[str, Any]] = []
        self.steps = 0
        self.current: int | None = None
        self.progress: dict[str, Any] = {}

    def placeholder(self) -> str:
        return "compare: starting"

    def _html(self) -> str:
        cells = []
        for i, r in enumerate(self.rows):
            p = self.progress if i == self.current and r["status"] == "training" else {}
            step = f"{p.get('step', 0)}/{p.get('total_steps') or self.steps}" if p else (
                f"{self.steps}/{self.steps}" if r["status"] == "done" else "–")
            loss = p.get("loss") if p else r.get("loss")
            tps = p.get("tokens_per_s") if p else None
            mem = (p.get("memory") or {}).get("peak") if p else r.get("peak_memory")
            metrics = " · ".join(f"{k} {fmt_metric(k, v)}" for k, v in (r.get("metrics") or {}).items())
            status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
            cells.append([r["label"], Raw(f"<span style='color:{_STATUS_COLOR.get(r['status'], '')}'>"
                                          f"{escape(status)}</span>"),
                          f"{r['lr']:.1e}" if r.get("lr") else "–",
                          fmt_params(r["trainable"]) if r.get("trainable") else "–", step,
                          f"{loss:.4f}" if isinstance(loss, float) else "–", metrics or "–",
                          f"{tps:,.0f}" if tps else "–", fmt_bytes(mem) if mem else "–",
                          fmt_duration(p.get("elapsed_s") if p else r.get("seconds"))])
        chart = _curves({r["label"]: r.get("run_id") or (self.progress.get("run_id") if i == self.current else None)
                         for i, r in enumerate(self.rows)})
        return wrap("<div class='pm-head'>compare · training each candidate in turn</div>"
                    + table(["method", "status", "lr", "trainable", "step", "loss", "eval", "tokens/s",
                             "peak memory", "time"], cells) + chart)

    def _draw(self) -> None:
        self.shown = True
        if self.widget is not None:
            self.widget.value = self._html()

    def on_event(self, e: events.Event) -> None:
        d = e.data
        if e.kind == "compare_start":
            self.rows = [{"label": lab, "status": "waiting"} for lab in d.get("labels", [])]
            self.steps = d.get("steps", 0)
            self._draw()
        elif e.kind == "compare_row" and 0 <= d.get("index", -1) < len(self.rows):
            self.rows[d["index"]].update(d)
            if d.get("status") == "training":
                self.current, self.progress = d["index"], {}
            elif self.surface == "text" and d.get("status") in ("done", "failed", "stopped"):
                self.write(f"{d['label']}: {d['status']}" + (f" — {d['reason']}" if d.get("reason") else "")
                           + (f" · final loss {d['loss']:.4f}" if d.get("loss") is not None else "") + "\n")
            self._draw()
        elif e.kind == "progress" and self.current is not None:
            self.progress = dict(d)
            self._draw()

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        super().__exit__(exc_type, *exc)
        if self.shown and self.surface == "widget":
            done = sum(1 for r in self.rows if r["status"] == "done")
            # the live view ends as one static line: the result below is the table, in saved notebooks too
            text = f"compare: {done} of {len(self.rows)} candidates trained — the table is below"
            self.finish(dim(text), text)
