"""``--profile``: where a training step's time goes, measured inside the real ``Trainer``.

How: the Trainer's own pieces are timed where they run, by wrapping bound methods of this
one trainer (nothing global is patched, and everything is put back afterwards):

==========================  ==============================================================
phase                       what is timed
==========================  ==============================================================
data loading / collation    ``get_batch_samples`` (sampler, dataset, our collator) and
                            ``_prepare_inputs`` (the copy to the device)
forward                     ``compute_loss`` (the model's forward and its loss)
backward                    ``accelerator.backward`` (with checkpointing: the recompute)
optimizer step              gradient clipping, ``optimizer.step``, the LR scheduler, ``zero_grad``
our callbacks + display     every peft_magic callback (progress events, so the display too)
evaluation                  ``evaluate`` (only listed when it ran in a profiled step)
other                       the rest of the step: Trainer's bookkeeping between the phases
==========================  ==============================================================

A step runs from fetching its batch to the end of its logging, so the rows add up to the
measured step time ("other" is what no phase covers). Only a window of steps after a
warm-up is profiled (the first step allocates, a compiled model compiles); outside it the
wrappers cost one attribute check. On CUDA every phase boundary synchronizes — CPU-side
timing of asynchronous kernels would otherwise be meaningless.

``torch.profiler`` runs over the same window: its operator table gives the top operators
by self time, each phase is a ``record_function`` range (so ``--trace DIR``'s Chrome /
Perfetto trace shows the same split), and the attention operators inside the forward
range give the attention share behind one of the hints. Peak memory per phase is the
allocator's peak (CUDA) or the process's peak RSS (CPU), restarted at each phase
(``memory.restart_peak``). The engine returns a :class:`Profile` (``Run.profile``); the
display renders it (``display/profile_html.py``).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from ...memory import restart_peak
from .profile_report import (
    DEFAULT_STEPS,
    PHASES,
    OpTime,
    PhaseTime,
    Profile,
    ProfileRequest,
    hints,
)

__all__ = ["DEFAULT_STEPS", "PHASES", "OpTime", "PhaseTime", "Profile", "ProfileRequest", "StepProfiler", "hints"]

LABEL = "peft_magic: "  # prefix of our record_function ranges in the trace
TOP_OPS = 10
_ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "softmax", "flex_attention")


# ----------------------------------------------------------------------------- recording


class StepProfiler:
    """Times the phases of the steps in ``[warmup, warmup + steps)`` of one Trainer run."""

    def __init__(self, trainer: Any, request: ProfileRequest, *, device: str, collator: Any = None,
                 run_id: int | None = None) -> None:
        self.trainer = trainer
        self.request = request
        self.device = device
        self.cuda = device.startswith("cuda")
        self.collator = collator
        self.run_id = run_id
        self.step = -1  # index of the update step being run (0-based, this train() call)
        self.cur: dict[str, float] | None = None  # the open step's phase seconds
        self.records: list[dict[str, float]] = []
        self.peaks: dict[str, int] = {}
        self.rises: dict[str, int] = {}
        self.depth = 0
        self.after_step_end = False
        self.torch_prof: Any = None
        self.step_range: Any = None
        self.trace_path: str | None = None
        self._installed: list[tuple[Any, str, bool, Any]] = []
        self._stopped = False
        self._tokens0 = 0
        self.tokens = 0

    @property
    def window(self) -> range:
        return range(self.request.warmup, self.request.warmup + self.request.steps)

    # -- the clock: synchronized on CUDA, so a phase's time is its kernels' time

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    # -- wrapping

    def _wrap(self, obj: Any, name: str, phase: str | None, *, begins: bool = False, ends: bool = False,
              memory: bool = False) -> None:
        orig = getattr(obj, name, None)
        if orig is None or not callable(orig):
            return  # a Trainer without this method: its time lands in "other"
        prof = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if begins and prof.depth == 0:
                prof._begin_step()
            if prof.cur is None or prof.depth or phase is None:
                out = orig(*args, **kwargs)
            else:
                out = prof._timed(phase, orig, args, kwargs, memory)
            if ends and prof.depth == 0 and prof.after_step_end:
                prof._end_step()
            return out

        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        had = name in getattr(obj, "__dict__", {})  # an instance attribute already (a scheduler's own wrapper)
        self._installed.append((obj, name, had, obj.__dict__.get(name) if had else None))
        setattr(obj, name, wrapper)

    def _used(self) -> int | None:
        """Memory in use now, cheaply: the allocator's count, or RSS from /proc/self/statm."""
        if self.cuda:
            import torch

            return int(torch.cuda.memory_allocated(self.device))
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _timed(self, phase: str, fn: Any, args: tuple, kwargs: dict, memory: bool) -> Any:
        """Run one phase call: its time (between ``t0`` and ``t1``), its peak memory, and the
        profiler's own bookkeeping around it (``overhead``, left out of the step)."""
        import torch

        self.depth += 1
        o0 = time.perf_counter()
        used0 = None
        if memory:
            restart_peak(self.device)
            used0 = self._used()
        rf = torch.profiler.record_function(LABEL + phase) if self.torch_prof is not None else None
        if rf is not None:
            rf.__enter__()
        t0 = self._now()
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = self._now()
            if rf is not None:
                rf.__exit__(None, None, None)
            peak = restart_peak(self.device) if memory else None
            if self.cur is not None:
                self.cur[phase] = self.cur.get(phase, 0.0) + (t1 - t0)
                if peak is not None:
                    self.peaks[phase] = max(self.peaks.get(phase, 0), peak)
                    if used0 is not None:
                        self.rises[phase] = max(self.rises.get(phase, 0), peak - used0)
                self.cur["_overhead"] = self.cur.get("_overhead", 0.0) + (t0 - o0) + (time.perf_counter() - t1)
            self.depth -= 1

    def install(self) -> None:
        """Wrap the trainer's phases; the optimizer's once it exists (``on_train_begin``)."""
        t = self.trainer
        self._wrap(t, "get_batch_samples", "data", begins=True, memory=True)
        self._wrap(t, "_prepare_inputs", "data")
        self._wrap(t, "compute_loss", "forward", memory=True)
        self._wrap(t.accelerator, "backward", "backward", memory=True)
        self._wrap(t, "_clip_grad_norm", "optimizer")
        self._wrap(t, "evaluate", "evaluation")
        self._wrap(t, "_maybe_log_save_evaluate", None, ends=True)
        for cb in list(t.callback_handler.callbacks):
            if type(cb).__module__.startswith("peft_magic"):
                for name in ("on_step_begin", "on_step_end", "on_log", "on_optimizer_step", "on_pre_optimizer_step",
                             "on_substep_end", "on_evaluate"):
                    if name in type(cb).__dict__:
                        self._wrap(cb, name, "callbacks")
        t.add_callback(_marker(self))

    def on_train_begin(self) -> None:
        t = self.trainer
        for obj, name in ((t.optimizer, "step"), (t.lr_scheduler, "step"), (t.model_wrapped, "zero_grad")):
            if obj is not None:
                self._wrap(obj, name, "optimizer", memory=obj is t.optimizer)

    def uninstall(self) -> None:
        """Put every wrapped method back (the model outlives the trainer)."""
        self._stop_profiler()
        for obj, name, had, before in reversed(self._installed):
            try:
                if had:
                    setattr(obj, name, before)
                else:
                    delattr(obj, name)  # the instance attribute goes; the class's method shows again
            except AttributeError:
                pass
        self._installed.clear()

    def release(self) -> None:
        """Drop the trainer and the torch profiler (its events are large) once the result is out."""
        self.trainer = None
        self.torch_prof = None
        self.step_range = None

    # -- steps

    def _begin_step(self) -> None:
        if self.cur is not None:  # the last step ended without logging (should not happen)
            self._end_step()
        self.step += 1
        self.after_step_end = False
        if self.step not in self.window:
            return
        if self.step == self.window.start:
            self._start_profiler()
        if self.collator is not None:
            self._tokens0 = self.collator.tokens
        if self.torch_prof is not None:
            import torch

            self.step_range = torch.profiler.record_function(f"{LABEL}step {self.step + 1}")
            self.step_range.__enter__()
        self.cur = {"_start": self._now()}

    def _end_step(self) -> None:
        cur, self.cur = self.cur, None
        self.after_step_end = False
        if cur is None:
            return
        cur["_wall"] = self._now() - cur.pop("_start") - cur.get("_overhead", 0.0)
        if self.collator is not None:
            self.tokens += self.collator.tokens - self._tokens0
        if self.step_range is not None:
            self.step_range.__exit__(None, None, None)
            self.step_range = None
        self.records.append(cur)
        if self.step == self.window.stop - 1:
            self._stop_profiler()

    def _start_profiler(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.torch_prof = profile(activities=acts, record_shapes=False, profile_memory=False, with_stack=False)
        with _c_stderr_silenced():
            self.torch_prof.__enter__()

    def _stop_profiler(self) -> None:
        if self.torch_prof is None or self._stopped:
            return
        self._stopped = True
        with _c_stderr_silenced():
            self.torch_prof.__exit__(None, None, None)
        if self.request.trace:
            os.makedirs(self.request.trace, exist_ok=True)
            name = f"peft_magic-run{self.run_id or 0}-{time.strftime('%Y%m%d-%H%M%S')}.json"
            self.trace_path = os.path.join(self.request.trace, name)
            self.torch_prof.export_chrome_trace(self.trace_path)

    # -- the result

    def result(self, facts: dict[str, Any] | None = None) -> Profile | None:
        """The :class:`Profile` of the recorded steps (None when no step was profiled)."""
        if not self.records:
            return None
        n = len(self.records)
        walls = [r["_wall"] * 1e3 for r in self.records]
        overhead_each = [r.get("_overhead", 0.0) * 1e3 for r in self.records]
        step_ms = statistics.fmean(walls)
        rows = []
        named = 0.0
        for key, label in PHASES:
            if key == "other":
                continue
            each = [r.get(key, 0.0) * 1e3 for r in self.records]
            ms = statistics.fmean(each)
            if key == "evaluation" and ms == 0:
                continue
            named += ms
            rows.append(PhaseTime(key, label, ms, ms / step_ms if step_ms else 0.0, self.peaks.get(key),
                                  self.rises.get(key), each))
        other = step_ms - named
        other_each = [w - sum(row.ms_each[i] for row in rows) for i, w in enumerate(walls)]
        rows.append(PhaseTime("other", dict(PHASES)["other"], other, other / step_ms if step_ms else 0.0,
                              None, None, other_each))
        ops, attention = self._ops(n, step_ms)
        tokens_per_s = self.tokens / (sum(walls) / 1e3) if self.tokens and sum(walls) else None
        prof = Profile(steps=n, warmup=self.request.warmup, step_ms=step_ms, phases=rows, ops=ops, hints=[],
                       device=self.device, memory_kind="CUDA" if self.cuda else "RAM", step_ms_each=walls,
                       tokens_per_s=tokens_per_s, attention_share=attention, trace=self.trace_path,
                       overhead_ms=statistics.fmean(overhead_each), overhead_ms_each=overhead_each)
        prof.hints = hints(prof, facts or {})
        return prof

    def _ops(self, n: int, step_ms: float) -> tuple[list[OpTime], float | None]:
        if self.torch_prof is None:
            return [], None
        try:
            events = self.torch_prof.events()
            averages = events.key_averages()
        except Exception:  # an empty or failed trace: the phase table still stands
            return [], None
        attr = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        rows = [a for a in averages if not a.key.startswith(LABEL) and not a.key.startswith("ProfilerStep")]
        rows.sort(key=lambda a: getattr(a, attr, 0.0), reverse=True)
        ops = []
        for a in rows[:TOP_OPS]:
            ms = getattr(a, attr, 0.0) / 1e3 / n
            ops.append(OpTime(a.key, ms, ms / step_ms if step_ms else 0.0, a.count / n))
        return ops, _attention_share(events)


@contextlib.contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Kineto writes "USDT: … profiler_start" lines straight to file descriptor 2 (no
    setting turns them off); in a notebook they would land in the cell as red text."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _is_attention(name: str) -> bool:
    low = name.lower()
    return any(k in low for k in _ATTENTION_OPS)


def _attention_share(events: Any) -> float | None:
    """Time in the attention operators (outermost ones) inside the forward ranges, over
    those ranges' time."""
    forward_us = attention_us = 0.0
    for ev in events:
        if ev.name == LABEL + "forward":
            forward_us += ev.cpu_time_total
            continue
        if not _is_attention(ev.name):
            continue
        parent, in_forward = ev.cpu_parent, False
        while parent is not None:
            if _is_attention(parent.name):
                break  # counted with its outermost attention operator
            if parent.name == LABEL + "forward":
                in_forward = True
            parent = parent.cpu_parent
        else:
            if in_forward:
                attention_us += ev.cpu_time_total
    return attention_us / forward_us if forward_us else None


def _marker(prof: StepProfiler) -> Any:
    """The callback that tells the profiler where the Trainer is (built lazily: transformers)."""
    from transformers import TrainerCallback

    class ProfileMarker(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            prof.on_train_begin()

        def on_step_end(self, args, state, control, **kw):
            prof.after_step_end = True

        def on_train_end(self, args, state, control, **kw):
            if prof.cur is not None:
                prof._end_step()
            prof._stop_profiler()

    return ProfileMarker()
