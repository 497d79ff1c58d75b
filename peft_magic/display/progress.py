"""Live training progress: a core-ipywidgets panel in notebooks, one line in a terminal.

What is shown: a progress bar, step / total, epoch, loss (raw and smoothed), learning
rate, tokens/s, elapsed and ETA, memory now / peak / device total with its kind, and a
loss chart. The renderers only draw the engine's (already throttled, ≤ 4 per second)
``progress`` events, so the display costs the training loop nothing measurable.

Saved notebooks: while the run goes, the live widget is displayed in one output whose
mime bundle also has ``text/html``; a front end with a widget manager (JupyterLab,
Notebook 7, VS Code, Colab) draws the widget. When the run ends, that output is replaced
by the final static HTML *alone* — bar, readouts and loss chart: a finished run has
nothing left to update, and a widget view left in the output would win over the HTML in
nbconvert / VS Code's export (which draw widgets only with a widget manager loaded from
the network) and show nothing offline. (The widgets are not closed: a kernel-sent
``comm_close`` is one more message every front end and client has to expect.) Nothing
grows with the run's length: each update replaces the widget's state, unlike HTML tables
re-sent per step.

Terminals: one line rewritten in place (``\r``) that fits the terminal's width — fields
are dropped (least useful first) and shortened until it does, so it never wraps.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
import uuid
from typing import Any

from .. import events
from ..fmt import fmt_bytes, fmt_duration, fmt_metrics
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
    ] + ([("eval", p["eval"])] if p.get("eval") else []) + speed_readouts(p.get("speed")) + _loss_path(p)


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
    if p.get("eval"):
        fields["eval"] = [f"eval {p['eval']}"]
    speed = {label: [value if label == "compile" else f"{label} {value}"]  # "compiled in 6.8 s" says what it is
             for label, value in speed_readouts(p.get("speed")) + _loss_path(p)}
    fields.update(speed)  # compile / checkpointing readouts: last, and first to go on a narrow line

    def bar_of(n: int) -> str:
        filled = int(n * step / total) if total else 0
        return "█" * filled + "░" * (n - filled)

    if width is None:
        return f"{bar_of(24)} {count} · " + " · ".join(v[0] for v in fields.values())
    groups = (("loss", "ETA", "tokens/s", "memory", "elapsed"), ("lr", "epoch"),
              tuple(k for k in ("eval",) if k in fields), tuple(speed))
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


def snapshot_html(p: dict[str, Any], losses: list[tuple[int, float]], title: str, status: str,
                  message: str | None = None, eval_losses: list[tuple[int, float]] | None = None,
                  data: str = "") -> str:
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
    series = [("loss", losses)]
    chart = line_chart(series, x_max=total or None)
    if eval_losses:
        chart = line_chart([("train loss", losses), ("eval loss", eval_losses)], x_max=total or None)
    msg = f"<div style='color:{color}'>{escape(message)}</div>" if message else ""
    about = f"<div class='pm-dim'>data: {escape(data)}</div>" if data else ""
    return wrap(f"<div class='pm-head'>{escape(title)} · <span style='color:{color}'>{escape(status)}</span></div>"
                f"{about}{bar}{rows}{msg}{chart}")


class _Base:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.title = "Training"
        self.data = ""  # what the run trains on (shape, counts), shown once under the title

    warnings: list[str] = []

    def start(self) -> None: ...

    def warn(self) -> None: ...

    def update(self) -> None: ...

    def finish(self, status: str, message: str | None) -> None: ...


class TextRenderer(_Base):
    """One line, rewritten in place (``\\r``), for terminal IPython and scripts.

    On a terminal the line fits its width (read at each update, so a resize is
    followed), one column spare: a line that wraps cannot be rewritten with ``\\r``
    and would leave a row behind per update.
    """

    def __init__(self, stream: Any = None, width: int | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
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

    def _wrapped(self, text: str) -> str:
        cols = self.columns()
        return textwrap.fill(text, cols, subsequent_indent="  ") if cols and cols >= 20 else text

    def warn(self) -> None:
        if self.data:
            self.stream.write(f"data: {self.data}\n")
        for w in self.warnings:
            self.stream.write(self._wrapped(f"warning: {w}") + "\n")
        self.stream.flush()

    def update(self) -> None:
        cols = self.columns()
        line = text_line(self.state, cols)
        pad = max(0, self._last - len(line))
        if cols:
            pad = min(pad, cols - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last = len(line)

    def finish(self, status: str, message: str | None) -> None:
        self.update()
        steps = f"{self.state.get('step', 0)}/{self.state.get('total_steps') or '?'}"
        summary = f"{self.title}: {status} {steps}" + (f" — {message}" if message else "")
        self.stream.write("\n" + self._wrapped(summary) + "\n")
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

        from . import widgets as compat

        self.w = w
        self._compat = compat
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
        """The live output: the widget, with static HTML beside it for viewers without widgets."""
        return self._compat.view_bundle(self.box, html, text_line(self.state) if self.state else self.title)

    def start(self) -> None:
        from IPython.display import display

        self.header.value = wrap(f"<div class='pm-head'>{escape(self.title)} · preparing…</div>")
        if self.hosted:
            return
        display(self._bundle(snapshot_html(self.state, [], self.title, "running")), raw=True,
                display_id=self.display_id)

    def warn(self) -> None:
        data = f"<div class='pm-dim'>data: {escape(self.data)}</div>" if self.data else ""
        if self.warnings or data:
            self.warning.value = wrap(data + "".join(f"<div class='pm-warn'>warning: {escape(w)}</div>"
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
                             "; ".join(x for x in (message, notes) if x) or None, self.eval_losses, self.data)
        steps = f"{self.state.get('step', 0)}/{self.state.get('total_steps') or '?'}"
        text = f"{self.title}: {status} {steps}" + (f" — {message}" if message else "")
        # the finished run: static HTML alone (see the module's docstring)
        update_display({"text/html": html, "text/plain": text + "\n" + text_line(self.state)}, raw=True,
                       display_id=self.display_id)


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
            launch = e.data.get("launch")  # a multi-process run (training/distributed)
            if launch:
                r.title += (f" · {launch['describe']} · global batch {launch['batch']} × {launch['processes']} × "
                            f"{launch['grad_accum']} = {launch['global_batch']}")
            if e.data.get("loss_path"):
                self.speed["loss_path"] = e.data["loss_path"]
            r.state = {"step": e.data.get("resumed_from") or 0, "total_steps": e.data.get("total_steps"),
                       "status": "training", "speed": dict(self.speed)}
            record = next((x for x in reversed(runs()) if x.run_id == rid), None)
            if record is not None:
                # Draw from the run's own loss history (every logged step), not only from the
                # throttled events; the lists are shared, so nothing is copied per step.
                r.losses, r.eval_losses = record.losses, record.eval_losses
            r.warnings = list(e.data.get("warnings") or [])
            r.data = e.data.get("data") or ""
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
            r.state = dict(e.data, speed=dict(self.speed), eval=r.state.get("eval"))
            r.update()
        elif e.kind == "eval" and e.data.get("metrics"):
            r.state["eval"] = fmt_metrics(e.data["metrics"])
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
