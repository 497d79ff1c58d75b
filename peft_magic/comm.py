"""Kernel side of the JupyterLab status bar: the engine's events, forwarded over a comm.

Why this shape. The status bar (``labextension/``) must show what *this* kernel is doing
while the training cell is scrolled away, and everything must stay silent where no
such frontend exists (Colab, VS Code, nbclient / papermill). A kernel-initiated
``comm_open`` cannot be silent: nbclient logs ``No handler found for comm target`` for
every comm it does not know, and other frontends close it with a console error. So the
kernel *opens nothing* and sends nothing until a frontend has asked for it:

* ``start()`` (from ``%load_ext peft_magic``) creates one comm with ``primary=False`` and
  registers it with the kernel's comm manager. No message leaves the kernel.
* The JupyterLab extension finds it with a ``comm_info_request`` for the target
  ``peft_magic`` (on connect, and while / after a cell that mentions ``peft`` runs; on the
  control channel where ipykernel takes it, so a busy cell does not delay it). The
  kernel notices that request — that is the "someone listens" signal — and from then on
  pushes its status on the comm. A ``{"request": "status"}`` comm message (sent by the
  extension when a cell finishes) also counts, and is answered with a fresh memory
  reading: that is how the idle memory stays current.
* Every engine event (adapter, run_start, progress, eval, run_end, memory, export) updates one
  status snapshot; while listened to, it is pushed. Progress is throttled once, at the
  source (``events.Throttle``: a few a second, the last one always flushed), so a push
  per event is already bounded; a push is one small dict → JSON → iopub, nothing the
  training loop can measure.

Nothing here is sent on a subshell or answered with busy/idle from the frontend's side
during a cell, so JupyterLab's kernel indicator keeps saying "Busy" while training runs.
Where nobody asks, the subscriber only updates the snapshot (a few dict writes per
throttled event).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from typing import Any

from . import events
from .memory import device_of, reading
from .state import all_states, runs

log = logging.getLogger(__name__)

TARGET = "peft_magic"
PROTOCOL = 1
RECENT_LOSSES = 50

_TERMINAL = ("completed", "interrupted", "oom", "error")


class StatusChannel:
    """One status snapshot for this kernel and the comm that carries it to JupyterLab."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.comm: Any = None
        self.listening = False
        self.sent = 0
        self.status: dict[str, Any] = {
            "phase": "idle",  # idle | training | completed | interrupted | oom | error | exporting
            "model_id": None, "adapter": None, "method": None, "trainable": None, "total": None,
            "run": None, "memory": None, "peak": None,
            "export": None,  # format, quant, path, stage, fraction, elapsed_s, message of the last export
        }
        self._phase_before_export = "idle"
        self.losses: deque[tuple[int, float]] = deque(maxlen=RECENT_LOSSES)
        self._unsubscribe = events.subscribe(self.on_event)
        self._patched: list[tuple[dict, Any, Any]] = []
        self._new_comm()

    # ------------------------------------------------------------------ who listens

    def watch_comm_info(self, kernel: Any) -> None:
        """Notice a frontend's ``comm_info_request`` for our target (shell or control).

        The request is the extension's first contact; seeing it lets the kernel push at
        once, even while a cell keeps the main shell busy. Wraps ipykernel's handler in
        its dispatch tables (looked up per message); where that layout is missing, the
        extension's first ``{"request": "status"}`` message does the same, later."""
        for table in (getattr(kernel, "control_handlers", None), getattr(kernel, "shell_handlers", None)):
            if not isinstance(table, dict) or not callable(table.get("comm_info_request")):
                continue
            orig = table["comm_info_request"]

            async def comm_info_request(stream: Any, ident: Any, parent: dict, _orig: Any = orig) -> Any:
                result = _orig(stream, ident, parent)
                if inspect.isawaitable(result):
                    result = await result
                try:  # after the reply, so the frontend knows the comm id when the push comes
                    if ((parent.get("content") or {}).get("target_name") == TARGET and self.comm is not None):
                        self._listener()
                except Exception:
                    log.debug("peft_magic status push failed", exc_info=True)
                return result

            table["comm_info_request"] = comm_info_request
            self._patched.append((table, orig, comm_info_request))

    def _listener(self) -> None:
        self.listening = True
        self._refresh_memory()
        self._send()

    # ------------------------------------------------------------------ comm plumbing

    def _new_comm(self) -> None:
        import comm

        c = comm.create_comm(target_name=TARGET, primary=False)  # primary=False: no comm_open is sent
        manager = comm.get_comm_manager()
        if manager is not None:
            manager.register_comm(c)  # so comm_info_request lists it and frontend messages reach it
        c.on_msg(self._on_msg)
        c.on_close(self._on_close)
        self.comm = c
        self.listening = False

    def _on_msg(self, msg: dict[str, Any]) -> None:
        """A frontend asked for the status: from now on, push updates."""
        try:
            data = (msg.get("content") or {}).get("data") or {}
            if data.get("request") in ("status", "hello"):
                self._listener()
        except Exception:  # never let the status bar break the kernel
            log.debug("peft_magic status request failed", exc_info=True)

    def _on_close(self, msg: dict[str, Any]) -> None:
        # A frontend closed it; keep a fresh one for the next frontend to find.
        try:
            self._new_comm()
        except Exception:
            log.debug("peft_magic could not renew its comm", exc_info=True)

    def _message(self) -> dict[str, Any]:
        with self._lock:
            st = dict(self.status)
            st["run"] = dict(st["run"]) if st.get("run") else None  # serialised outside the lock
            st["losses"] = self._recent_losses()
            st["time"] = time.time()
        return {"v": PROTOCOL, "type": "status", "target": TARGET, "status": st}

    def _send(self) -> None:
        if not self.listening or self.comm is None:
            return
        self.comm.send(self._message())
        self.sent += 1

    def close(self) -> None:
        self._unsubscribe()
        for table, orig, ours in self._patched:
            if table.get("comm_info_request") is ours:
                table["comm_info_request"] = orig
        self._patched.clear()
        c, self.comm = self.comm, None
        if c is None:
            return
        if self.listening:
            c.close()  # tells the attached frontend that the status is gone
        else:  # nobody knows this comm: drop it without a message
            import comm

            c._closed = True
            manager = comm.get_comm_manager()
            if manager is not None:
                manager.unregister_comm(c)

    # ------------------------------------------------------------------ status

    def _recent_losses(self) -> list[list[float]]:
        """The run's logged losses (every logged step, from its record), else those seen in
        progress events — which are throttled, so a short run would show one or two."""
        run_id = (self.status.get("run") or {}).get("run_id")
        if run_id is not None:
            for run in reversed(runs()):
                if run.run_id == run_id and run.losses:
                    return [[int(step), float(loss)] for step, loss in run.losses[-RECENT_LOSSES:]]
        return [list(x) for x in self.losses]

    def _model_device(self) -> str | None:
        mid = self.status.get("model_id")
        for st in all_states():
            if mid is None or st.model_id == mid:
                model = st.peft_model or st.base
                if model is not None:
                    return device_of(model)
        return None

    def _refresh_memory(self) -> None:
        """A fresh reading of the device the model is on (one psutil / CUDA call)."""
        with self._lock:
            if self.status.get("adapter") is None:
                self._adapter_from_state()
            mem = reading(self._model_device()).as_dict()
            self._set_memory(mem)

    def _adapter_from_state(self) -> None:
        """Adapters attached before ``%load_ext`` (through the Python API) still show."""
        for st in reversed(all_states()):
            if st.adapters:
                name, rec = next(reversed(st.adapters.items()))
                self.status.update(model_id=st.model_id, adapter=name, method=rec.method)
                return

    def _set_memory(self, mem: dict[str, Any] | None) -> None:
        if not mem:
            return
        self.status["memory"] = mem
        top = max(v for v in (mem.get("used"), mem.get("peak"), self.status.get("peak")) if v is not None)
        self.status["peak"] = top

    def on_event(self, ev: events.Event) -> None:
        """Engine subscriber: update the snapshot, push it if a frontend listens."""
        d = ev.data
        with self._lock:
            st = self.status
            if ev.kind == "adapter":
                action = d.get("action")
                if action in ("deleted", "detached") and d.get("adapter") in (None, st.get("adapter")):
                    st.update(adapter=None, method=None)
                elif d.get("adapter") is not None:
                    st.update(adapter=d.get("adapter"), method=d.get("method"))
                st.update(model_id=d.get("model_id", st["model_id"]), trainable=d.get("trainable"),
                          total=d.get("total"))
                if st["phase"] != "training":
                    st["phase"] = "idle"
                    st["run"] = None
                self._set_memory(reading(self._model_device()).as_dict())
            elif ev.kind == "run_start":
                self.losses.clear()
                st.update(phase="training", model_id=d.get("model_id"), adapter=d.get("adapter"),
                          method=d.get("method") or st.get("method"))
                st["run"] = {"run_id": d.get("run_id"), "step": d.get("resumed_from") or 0,
                             "total_steps": d.get("total_steps"), "loss": None, "loss_smooth": None,
                             "lr": None, "eta_s": None, "elapsed_s": 0.0, "tokens_per_s": None,
                             "epoch": None, "eval_loss": None, "message": None, "peak_memory": None,
                             "saved_step": None, "saved_at": None,
                             "objective": d.get("objective"), "rewards": None}
            elif ev.kind == "progress":
                run = st.get("run") or {}
                for key in ("run_id", "step", "total_steps", "epoch", "loss", "loss_smooth", "lr",
                            "tokens_per_s", "elapsed_s", "eta_s", "rewards"):
                    if key in d:
                        run[key] = d[key]
                st["run"] = run
                st["phase"] = "training"
                if d.get("adapter"):
                    st["adapter"] = d["adapter"]
                loss, step = d.get("loss"), d.get("step")
                if loss is not None and step is not None and (not self.losses or self.losses[-1][0] != step):
                    self.losses.append((int(step), float(loss)))
                self._set_memory(d.get("memory"))
            elif ev.kind == "eval":
                if st.get("run") is not None:
                    st["run"]["eval_loss"] = d.get("eval_loss")
            elif ev.kind == "checkpoint":
                if st.get("run") is not None and not d.get("skipped"):
                    st["run"]["saved_step"], st["run"]["saved_at"] = d.get("step"), d.get("at")
            elif ev.kind == "run_end":
                run = st.get("run") or {}
                for key in ("run_id", "step", "total_steps", "loss", "elapsed_s", "message", "peak_memory"):
                    if key in d:
                        run[key] = d[key]
                run["eta_s"] = None
                st["run"] = run
                status = d.get("status") or "completed"
                st["phase"] = status if status in _TERMINAL else "completed"
                if d.get("loss") is not None and d.get("step") is not None and (
                        not self.losses or self.losses[-1][0] != d["step"]):
                    self.losses.append((int(d["step"]), float(d["loss"])))
                if d.get("peak_memory"):
                    st["peak"] = max(st.get("peak") or 0, int(d["peak_memory"]))
                if self.listening:
                    self._set_memory(reading(self._model_device()).as_dict())
            elif ev.kind == "memory":
                self._set_memory(d.get("memory"))
            elif ev.kind == "export":
                stage = d.get("stage")
                if st["phase"] != "exporting":
                    self._phase_before_export = st["phase"]
                st["export"] = {k: d.get(k) for k in ("format", "quant", "path", "stage", "fraction", "elapsed_s",
                                                      "message")}
                st["phase"] = self._phase_before_export if stage in ("done", "failed", "interrupted") else "exporting"
            else:
                return
        if self.listening:
            self._send()


_channel: StatusChannel | None = None


def start(ipython: Any) -> None:
    """Create the status comm (``%load_ext``); a no-op outside a kernel (terminal IPython)."""
    global _channel
    if _channel is not None or getattr(ipython, "kernel", None) is None:
        return
    try:
        _channel = StatusChannel()
    except Exception:  # a kernel without comm support: the status bar simply stays empty
        log.debug("peft_magic status comm unavailable", exc_info=True)
        _channel = None
        return
    try:
        _channel.watch_comm_info(ipython.kernel)
    except Exception:  # the status then starts with the extension's first request
        log.debug("peft_magic cannot watch comm_info requests", exc_info=True)


def stop() -> None:
    """Drop the comm and the event subscription (``%unload_ext``)."""
    global _channel
    ch, _channel = _channel, None
    if ch is not None:
        try:
            ch.close()
        except Exception:
            log.debug("peft_magic status comm close failed", exc_info=True)


def channel() -> StatusChannel | None:
    """The live channel, for tests and debugging."""
    return _channel
