"""Live training progress: a core-ipywidgets panel in notebooks, one line in a terminal.

What is shown: a progress bar, step / total, epoch, loss (raw and smoothed), learning
rate, tokens/s, elapsed and ETA, memory now / peak / device total with its kind, and a
loss chart. The renderers only draw the engine's (already throttled, ≤ 4 per second)
``progress`` events, so the display costs the training loop nothing measurable.

Saved notebooks: the live widget is displayed in one output whose mime bundle also has
``text/html``; when the run ends that output is updated with the final static HTML. A
front end with a widget manager (JupyterLab, VS Code, Colab) draws the widget; GitHub,
nbviewer and nbconvert draw the HTML. Nothing grows with the run's length: each update
replaces the widget's state, unlike HTML tables re-sent per step.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from .. import events
from ..fmt import fmt_bytes, fmt_duration
from ..state import runs
from ..svg import line_chart
from .html import escape, wrap
from .profile_html import speed_readouts

STATUS_STYLE = {"completed": "success", "interrupted": "warning", "oom": "danger", "error": "danger",
                "training": "info", "running": "info"}
STATUS_COLOR = {"completed": "#16a34a", "interrupted": "#d97706", "oom": "#dc2626", "error": "#dc2626",
                "training": "#2563eb", "running": "#2563eb"}


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


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
    ] + speed_readouts(p.get("speed"))


def text_line(p: dict[str, Any]) -> str:
    total = p.get("total_steps") or 0
    step = p.get("step", 0)
    width = 24
    filled = int(width * step / total) if total else 0
    bar = "█" * filled + "░" * (width - filled)
    parts = [f"{label} {value}" for label, value in stats(p) if label not in ("step",)]
    return f"{bar} {step}/{total or '?'} · " + " · ".join(parts)


def snapshot_html(p: dict[str, Any], losses: list[tuple[int, float]], title: str, status: str,
                  message: str | None = None, eval_losses: list[tuple[int, float]] | None = None) -> str:
    """The static HTML of a run's state (what a saved notebook shows)."""
    total = p.get("total_steps") or 0
    step = p.get("step", 0)
    pct = 100.0 * step / total if total else 0.0
    color = STATUS_COLOR.get(status, "#2563eb")
    bar = (f"<div style='width:420px;height:10px;background:rgba(127,127,127,.2);border-radius:3px;margin:4px 0'>"
           f"<div style='width:{pct:.1f}%;height:10px;background:{color};border-radius:3px'></div></div>")
    cells = "".join(f"<td class='pm-dim'>{escape(k)}</td><td>{escape(v)}</td>" for k, v in stats(p))
    rows = "<table><tr>" + cells[: cells.find("<td class='pm-dim'>lr")] + "</tr><tr>" + \
        cells[cells.find("<td class='pm-dim'>lr"):] + "</tr></table>"
    series = [("loss", losses)]
    chart = line_chart(series, x_max=total or None)
    if eval_losses:
        chart = line_chart([("train loss", losses), ("eval loss", eval_losses)], x_max=total or None)
    msg = f"<div style='color:{color}'>{escape(message)}</div>" if message else ""
    return wrap(f"<div class='pm-head'>{escape(title)} · <span style='color:{color}'>{escape(status)}</span></div>"
                f"{bar}{rows}{msg}{chart}")


class _Base:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.title = "Training"

    warnings: list[str] = []

    def start(self) -> None: ...

    def warn(self) -> None: ...

    def update(self) -> None: ...

    def finish(self, status: str, message: str | None) -> None: ...


class TextRenderer(_Base):
    """One line, rewritten in place (``\\r``), for terminal IPython and scripts."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        self._last = 0

    def warn(self) -> None:
        for w in self.warnings:
            self.stream.write(f"warning: {w}\n")
        self.stream.flush()

    def update(self) -> None:
        line = text_line(self.state)
        pad = max(0, self._last - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last = len(line)

    def finish(self, status: str, message: str | None) -> None:
        self.update()
        steps = f"{self.state.get('step', 0)}/{self.state.get('total_steps') or '?'}"
        self.stream.write("\n" + f"{self.title}: {status} {steps}" + (f" — {message}" if message else "") + "\n")
        self.stream.flush()


class WidgetRenderer(_Base):
    """Core ipywidgets only (Colab loads no third-party widget code).

    ``hosted=True``: a container (the panel's Train tab) shows ``self.box`` itself, so
    the renderer displays nothing as a cell output (a button callback has no cell).
    """

    hosted = False

    def __init__(self) -> None:
        super().__init__()
        import ipywidgets as w

        self.w = w
        self.header = w.HTML()
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info",
                                 layout=w.Layout(width="420px"))
        self.count = w.Label(value="")
        self.info = w.HTML()
        self.chart = w.HTML()
        self.warning = w.HTML()
        self.box = w.VBox([self.header, self.warning, w.HBox([self.bar, self.count]), self.info, self.chart])
        self._header_set = False
        self._chart_at = 0.0
        self.display_id = uuid.uuid4().hex

    def _bundle(self, html: str) -> dict[str, Any]:
        return {
            "application/vnd.jupyter.widget-view+json": {"model_id": self.box.model_id, "version_major": 2,
                                                         "version_minor": 0},
            "text/html": html,
            "text/plain": text_line(self.state) if self.state else self.title,
        }

    def start(self) -> None:
        from IPython.display import display

        self.header.value = wrap(f"<div class='pm-head'>{escape(self.title)} · preparing…</div>")
        if self.hosted:
            return
        display(self._bundle(snapshot_html(self.state, [], self.title, "running")), raw=True,
                display_id=self.display_id)

    def warn(self) -> None:
        if self.warnings:
            self.warning.value = wrap("".join(f"<div class='pm-warn'>warning: {escape(w)}</div>"
                                              for w in self.warnings))

    def update(self) -> None:
        p = self.state
        total = p.get("total_steps") or 1
        self.bar.max = total
        self.bar.value = min(p.get("step", 0), total)
        self.count.value = f"{p.get('step', 0)}/{p.get('total_steps') or '?'}"
        cells = "".join(f"<span class='pm-dim'>{escape(k)}</span> {escape(v)} &nbsp; " for k, v in stats(p)
                        if k != "step")
        if not self._header_set:
            self.header.value = wrap(f"<div class='pm-head'>{escape(self.title)} · training</div>")
            self._header_set = True
        # no <style> block here: the header's already defines .peft-magic for the page
        self.info.value = f"<div class='peft-magic'>{cells}</div>"
        now = time.monotonic()
        if self.losses and now - self._chart_at >= 1.0:  # the chart changes slowly: redraw once a second
            self._chart_at = now
            self.chart.value = line_chart([("loss", self.losses)], x_max=p.get("total_steps"))

    def finish(self, status: str, message: str | None) -> None:
        from IPython.display import update_display

        self._chart_at = 0.0  # the final chart shows every point
        self.update()
        self.bar.bar_style = STATUS_STYLE.get(status, "")
        color = STATUS_COLOR.get(status, "")
        self.header.value = wrap(f"<div class='pm-head'>{escape(self.title)} · "
                                 f"<span style='color:{color}'>{escape(status)}</span></div>"
                                 + (f"<div style='color:{color}'>{escape(message)}</div>" if message else ""))
        if self.eval_losses:
            self.chart.value = line_chart([("train loss", self.losses), ("eval loss", self.eval_losses)],
                                          x_max=self.state.get("total_steps"))
        if self.hosted:
            return
        notes = "; ".join(f"warning: {w}" for w in self.warnings)
        html = snapshot_html(self.state, self.losses, self.title, status,
                             "; ".join(x for x in (message, notes) if x) or None, self.eval_losses)
        update_display(self._bundle(html), raw=True, display_id=self.display_id)


def in_kernel() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def pick_renderer(mode: str | None = "auto") -> _Base | None:
    """``auto``: widgets inside a Jupyter kernel, text elsewhere; ``None``/"none": no display.

    A renderer instance is used as it is (the panel hosts a widget renderer in its own tab).
    """
    if isinstance(mode, _Base):
        return mode
    if mode in (None, "none", False):
        return None
    if mode == "text":
        return TextRenderer()
    if mode == "widget" or (mode == "auto" and in_kernel()):
        try:
            return WidgetRenderer()
        except ImportError:
            return TextRenderer()
    return TextRenderer()


class ProgressDisplay:
    """Subscribe a renderer to the events of the next run that starts while active."""

    def __init__(self, renderer: _Base | None, title: str = "Training") -> None:
        self.renderer = renderer
        self.run_id: int | None = None
        self._unsub = None
        self.finished = False
        self.speed: dict[str, Any] = {}  # the run's compile / checkpointing readouts (``speed`` events)
        self.verb = title  # "Training" / "Profiling": the title once the run names its adapter
        if renderer is not None:
            renderer.title = title

    def _on(self, e: events.Event) -> None:
        r = self.renderer
        if r is None:
            return
        rid = e.data.get("run_id")
        if e.kind == "run_start" and self.run_id is None:
            self.run_id = rid
            if e.data.get("method") and e.data.get("adapter"):
                r.title = f"{self.verb} {e.data['method']} adapter '{e.data['adapter']}'"
            r.state = {"step": e.data.get("resumed_from") or 0, "total_steps": e.data.get("total_steps"),
                       "status": "training"}
            record = next((x for x in reversed(runs()) if x.run_id == rid), None)
            if record is not None:
                # Draw from the run's own loss history (every logged step), not only from the
                # throttled events; the lists are shared, so nothing is copied per step.
                r.losses, r.eval_losses = record.losses, record.eval_losses
            r.warnings = list(e.data.get("warnings") or [])
            r.warn()
            r.update()
            return
        if rid is None or rid != self.run_id:
            return
        if e.kind == "speed":
            self.speed.update({k: v for k, v in e.data.items() if k != "run_id"})
            r.state["speed"] = dict(self.speed)
            r.update()
        elif e.kind == "progress":
            r.state = dict(e.data, speed=dict(self.speed))
            r.update()
        elif e.kind == "run_end":
            r.state["status"] = e.data.get("status")
            r.state["step"] = e.data.get("step", r.state.get("step"))
            r.state["total_steps"] = e.data.get("total_steps", r.state.get("total_steps"))
            self.finished = True
            r.finish(e.data.get("status", "completed"), e.data.get("message"))

    def __enter__(self) -> ProgressDisplay:
        if self.renderer is not None:
            self.renderer.start()
            self._unsub = events.subscribe(self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unsub is not None:
            self._unsub()
