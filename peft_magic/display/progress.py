"""Live training progress: a core-ipywidgets panel in notebooks, one line in a terminal.

What is shown: a progress bar, step / total, epoch, loss (raw and smoothed), learning
rate, tokens/s, elapsed and ETA, memory now / peak / device total with its kind, and a
loss chart. :class:`TrainingView` is a :class:`~peft_magic.display.live.LiveView` (the
lifecycle — display, follow events, leave static HTML, take the output back after an early
failure — is that base's); it draws the engine's ``progress`` events, which are throttled
where they are emitted (≤ 4 per second), so the display costs the training loop nothing
measurable, and it draws every one it gets.

Nothing grows with the run's length: each update replaces the widgets' state, unlike HTML
tables re-sent per step; the finished run is the static HTML of ``run_readouts`` alone.
The widgets are not closed: a kernel-sent ``comm_close`` is one more message every front
end and client has to expect.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from .. import events
from ..fmt import fmt_metrics
from ..state import runs
from .html import escape, wrap
from .live import LiveView
from .run_readouts import STATUS_COLOR, STATUS_STYLE, loss_chart, margin_series, snapshot_html, stats, text_line


class _WidgetDrawing:
    """The training panel's widgets (core ipywidgets only: Colab loads no third-party widget code)."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.header = w.HTML()
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="420px"))
        self.count = w.Label(value="")
        self.info = w.HTML()
        self.chart = w.HTML()
        self.warning = w.HTML()
        self.box = w.VBox([self.header, self.warning, w.HBox([self.bar, self.count]), self.info, self.chart])
        self._header_set = False

    def begin(self, title: str) -> None:
        self.header.value = wrap(f"<div class='pm-head'>{escape(title)} · preparing…</div>")

    def warn(self, view: TrainingView) -> None:
        data = f"<div class='pm-dim'>data: {escape(view.data)}</div>" if view.data else ""
        if view.warnings or data:
            self.warning.value = wrap(data + "".join(f"<div class='pm-warn'>warning: {escape(w)}</div>"
                                                     for w in view.warnings))

    def update(self, view: TrainingView) -> None:
        p = view.state
        total = p.get("total_steps") or 1
        self.bar.max = total
        self.bar.value = min(p.get("step", 0), total)
        self.count.value = f"{p.get('step', 0)}/{p.get('total_steps') or '?'}"
        cells = "".join(f"<span class='pm-dim'>{escape(k)}</span> {escape(v)} &nbsp; " for k, v in stats(p)
                        if k != "step")
        if not self._header_set:
            self.header.value = wrap(f"<div class='pm-head'>{escape(view.title)} · training</div>")
            self._header_set = True
        # no <style> block here: the header's already defines .peft-magic for the page
        self.info.value = f"<div class='peft-magic'>{cells}</div>"
        if view.losses:
            self.chart.value = loss_chart(view.losses, None, margin_series(view.rewards), p.get("total_steps"))

    def end(self, view: TrainingView, status: str, message: str | None) -> None:
        self.update(view)
        self.bar.bar_style = STATUS_STYLE.get(status, "")
        color = STATUS_COLOR.get(status, "")
        self.header.value = wrap(f"<div class='pm-head'>{escape(view.title)} · "
                                 f"<span style='color:{color}'>{escape(status)}</span></div>"
                                 + (f"<div style='color:{color}'>{escape(message)}</div>" if message else ""))
        if view.eval_losses:
            self.chart.value = loss_chart(view.losses, view.eval_losses, margin_series(view.rewards),
                                          view.state.get("total_steps"))


class _TextDrawing:
    """One line, rewritten in place (``\\r``), for terminal IPython and scripts.

    On a terminal the line fits its width (read at each update, so a resize is followed),
    one column spare: a line that wraps cannot be rewritten with ``\\r`` and would leave a
    row behind per update.
    """

    def __init__(self, stream: Any, width: int | None = None) -> None:
        self.stream = stream
        self.width = width  # fixed width (tests); None: the terminal's, if the stream is one
        self._last = 0

    def columns(self) -> int | None:
        """The room for one line: ``width``, else ``$COLUMNS``, else the terminal's; None in a pipe."""
        if self.width:
            return self.width
        env = os.environ.get("COLUMNS", "")
        if env.isdigit() and int(env) > 0:
            return int(env) - 1
        try:
            if self.stream.isatty():
                return os.get_terminal_size(self.stream.fileno()).columns - 1
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def wrapped(self, text: str) -> str:
        cols = self.columns()
        return textwrap.fill(text, cols, subsequent_indent="  ") if cols and cols >= 20 else text

    def begin(self, title: str) -> None:
        pass  # nothing until the run starts: a failure before it leaves the terminal clean

    def warn(self, view: TrainingView) -> None:
        if view.data:
            self.stream.write(f"data: {view.data}\n")
        for w in view.warnings:
            self.stream.write(self.wrapped(f"warning: {w}") + "\n")
        self.stream.flush()

    def update(self, view: TrainingView) -> None:
        cols = self.columns()
        line = text_line(view.state, cols)
        pad = max(0, self._last - len(line))
        if cols:
            pad = min(pad, cols - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last = len(line)

    def end(self, view: TrainingView, status: str, message: str | None) -> None:
        self.update(view)
        self.stream.write("\n")


class TrainingView(LiveView):
    """The live view of the next training run that starts while ``with`` is active.

    ``surface``: ``"auto"``, ``"widget"``, ``"text"``, ``"hosted"`` (the panel shows
    ``view.widget``) or None; ``stream`` / ``width`` for the text surface.
    """

    def __init__(self, surface: Any = "auto", title: str = "Training", stream: Any = None,
                 width: int | None = None) -> None:
        self.state: dict[str, Any] = {}
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.rewards: list[tuple[int, dict[str, float]]] = []  # a preference run's logged readouts
        self.warnings: list[str] = []
        self.data = ""  # what the run trains on (shape, counts), shown once under the title
        self.verb = title  # "Training" / "Profiling": the title once the run names its adapter
        self.title = title
        self.run_id: int | None = None
        self.speed: dict[str, Any] = {}  # the run's compile / checkpointing readouts (``speed`` events)
        self.saved: tuple[int, float] | None = None  # (step, time) of the last checkpoint written
        super().__init__(surface, stream)
        self.drawing: Any = None
        if self.surface == "text":
            self.drawing = _TextDrawing(self.stream, width)
        elif self.widget is not None:
            self.drawing = self._widgets

    def build_widget(self) -> Any:
        self._widgets = _WidgetDrawing()
        return self._widgets.box

    def placeholder(self) -> str:
        return f"{self.title} · preparing…"

    def start(self) -> None:
        if self.drawing is not None:
            self.drawing.begin(self.title)
        if self.surface == "widget":  # the static stand-in is the run's (empty) snapshot
            from IPython.display import display

            from .widgets import view_bundle

            display(view_bundle(self.widget, snapshot_html(self.state, [], self.title, "running"), self.title),
                    raw=True, display_id=self.display_id)
            self._displayed = True

    def on_event(self, e: events.Event) -> None:
        d = self.drawing
        if d is None:
            return
        rid = e.data.get("run_id")
        if e.kind == "run_start" and self.run_id is None:
            self._begin_run(e)
            return
        if rid is None or rid != self.run_id:
            return
        if e.kind == "speed":
            self.speed.update({k: v for k, v in e.data.items() if k != "run_id"})
            self.state["speed"] = dict(self.speed)
        elif e.kind == "progress":
            self.state = dict(e.data, speed=dict(self.speed), eval=self.state.get("eval"), saved=self.saved)
        elif e.kind == "checkpoint":
            if e.data.get("skipped"):
                self.warnings.append(e.data["skipped"])
                d.warn(self)
                return
            self.saved = self.state["saved"] = (e.data["step"], e.data["at"])
        elif e.kind == "eval" and e.data.get("metrics"):
            self.state["eval"] = fmt_metrics(e.data["metrics"])
        elif e.kind == "run_end":
            self.state["status"] = e.data.get("status")
            self.state["step"] = e.data.get("step", self.state.get("step"))
            self.state["total_steps"] = e.data.get("total_steps", self.state.get("total_steps"))
            self._end_run(e.data.get("status", "completed"), e.data.get("message"))
            return
        else:
            return
        d.update(self)

    def _begin_run(self, e: events.Event) -> None:
        self.run_id = e.data.get("run_id")
        self.shown = True
        if e.data.get("method") and e.data.get("adapter"):
            self.title = f"{self.verb} {e.data['method']} adapter '{e.data['adapter']}'"
            if e.data.get("objective"):
                self.title += f" · {e.data['objective'].upper()}"
        launch = e.data.get("launch")  # a multi-process run (training/distributed)
        if launch:
            self.title += (f" · {launch['describe']} · global batch {launch['batch']} × {launch['processes']} × "
                           f"{launch['grad_accum']} = {launch['global_batch']}")
        if e.data.get("loss_path"):
            self.speed["loss_path"] = e.data["loss_path"]
        self.state = {"step": e.data.get("resumed_from") or 0, "total_steps": e.data.get("total_steps"),
                      "status": "training", "speed": dict(self.speed)}
        record = next((x for x in reversed(runs()) if x.run_id == self.run_id), None)
        if record is not None:
            # Draw from the run's own loss history (every logged step), not only from the
            # events; the lists are shared, so nothing is copied per step.
            self.losses, self.eval_losses, self.rewards = record.losses, record.eval_losses, record.rewards
        if record is not None and record.saved_step is not None and record.saved_at:
            self.saved = self.state["saved"] = (record.saved_step, record.saved_at)  # a resumed run's checkpoint
        self.warnings = list(e.data.get("warnings") or [])
        self.data = e.data.get("data") or ""
        self.drawing.warn(self)
        self.drawing.update(self)

    def _end_run(self, status: str, message: str | None) -> None:
        self.drawing.end(self, status, message)
        steps = f"{self.state.get('step', 0)}/{self.state.get('total_steps') or '?'}"
        summary = f"{self.title}: {status} {steps}" + (f" — {message}" if message else "")
        if self.surface == "text":
            self.finish("", self.drawing.wrapped(summary))
            return
        notes = "; ".join(f"warning: {w}" for w in self.warnings)
        html = snapshot_html(self.state, self.losses, self.title, status,
                             "; ".join(x for x in (message, notes) if x) or None, self.eval_losses, self.data,
                             margin_series(self.rewards))
        self.finish(html, summary + "\n" + text_line(self.state))
