"""``compile=True``: ``torch.compile`` through ``TrainingArguments``, with its cost in view.

``compile=True`` is ``torch_compile=True`` (``compile_backend`` / ``compile_mode`` are
``torch_compile_backend`` / ``torch_compile_mode``): the Trainer hands the model to
``torch.compile`` (accelerate's dynamo plugin), which works on a PeftModel as on any
module — on CPU through inductor's C++ backend (a C++ compiler is needed), on CUDA
through Triton.

Our batches are padded dynamically, so a run sees many sequence lengths. Left to its
defaults, dynamo compiles the first batch for its exact shape, then compiles again with
dynamic shapes at the second length (plain ``Trainer(torch_compile=True)``); here the
run compiles with dynamic shapes from the first batch (:func:`dynamic_shapes`): one
compile instead of two, for the same steady state (``bench/RESULTS.md``).

What a user needs to judge it: compiling happens inside the first step(s) and takes tens
of seconds (minutes for a 135M model on two CPU cores), after which each step is faster. So
:class:`StepClock` times every step and notes which ones compiled (dynamo's own
compilation records grew during the step); the display says "compiling…" until the first
step without compiling, then how long compiling took (the compiling steps minus what
they would have cost at the steady pace), and the run reports steady-state tokens/s
(steps that did not compile, after the first) next to the overall figure.

A compilation error (no C++ compiler, an operator inductor cannot lower, a dynamo
limitation) is one line that names the fallback, ``compile=False``
(:func:`failure_line`); the model stays usable like after any failed run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ... import events
from ...errors import first_line

_COMPILE_MODULES = ("torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx")


def requested(args: dict[str, Any]) -> bool:
    return bool(args.get("torch_compile"))


class dynamic_shapes:  # noqa: N801 — used like a context manager, started and stopped by training/speed.py
    """Compile with dynamic shapes from the first batch (dynamo's ``assume_static_by_default``
    off) for the length of one run; the setting is put back afterwards."""

    def __init__(self) -> None:
        self._before: bool | None = None

    def start(self) -> None:
        import torch._dynamo

        self._before = torch._dynamo.config.assume_static_by_default
        torch._dynamo.config.assume_static_by_default = False

    def stop(self) -> None:
        if self._before is not None:
            import torch._dynamo

            torch._dynamo.config.assume_static_by_default = self._before
            self._before = None


def _compile_events() -> int:
    """How many compilations dynamo / inductor have recorded in this process (forward
    frames and the backward graphs compiled lazily at the first backward)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    metrics = getattr(utils, "compilation_time_metrics", None) if utils is not None else None
    if not metrics:
        return 0
    return sum(len(v) for k, v in metrics.items() if k in ("_compile.compile_inner",
                                                           "compile_fx.<locals>.bw_compiler"))


def is_compile_error(e: BaseException) -> bool:
    """Whether ``e`` (or what it was raised from) comes from dynamo / inductor."""
    seen = 0
    while e is not None and seen < 5:
        if type(e).__module__.startswith(_COMPILE_MODULES):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
        seen += 1
    return False


def failure_line(e: BaseException, where: str) -> str | None:
    """One line for a compilation error, naming the fallback; None for other errors.

    Dynamo wraps a backend's error (``BackendCompilerFailed: backend='inductor' raised:``);
    the line names the error inside, which is the one that says what went wrong."""
    if not is_compile_error(e):
        return None
    inner = e
    while getattr(inner, "inner_exception", None) is not None:
        inner = inner.inner_exception  # type: ignore[attr-defined]
    msg = first_line(inner)
    if type(inner).__name__ == "InvalidCxxCompiler" or "c++ compiler" in msg.lower():
        msg = f"{msg} — inductor's CPU code needs a C++ compiler (install g++, or set CXX)"
    return f"torch.compile failed {where}: {type(inner).__name__}: {msg}; train without it with compile=False"


@dataclass
class StepTimes:
    """Every step's seconds and real tokens, and whether dynamo compiled during it."""

    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    compiled: list[bool] = field(default_factory=list)

    def steady(self) -> list[int]:
        """Indices of the steady steps: not compiling, and not the very first step."""
        return [i for i, c in enumerate(self.compiled) if not c and i > 0]

    @property
    def steady_step_s(self) -> float | None:
        idx = self.steady()
        return statistics.median(self.seconds[i] for i in idx) if idx else None

    @property
    def steady_tokens_per_s(self) -> float | None:
        idx = self.steady()
        secs = sum(self.seconds[i] for i in idx)
        return sum(self.tokens[i] for i in idx) / secs if idx and secs > 0 else None

    @property
    def compile_steps(self) -> int:
        return sum(self.compiled)

    @property
    def compile_seconds(self) -> float | None:
        """Time the compiling steps took beyond the steady pace (None: nothing compiled)."""
        if not self.compile_steps:
            return None
        pace = self.steady_step_s or 0.0
        return sum(max(0.0, s - pace) for s, c in zip(self.seconds, self.compiled) if c)


def step_clock(run: Any, collator: Any, compiling: bool) -> Any:
    """The callback that times steps (built lazily: transformers is imported on first use)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Times each step; with ``compile=True`` tells the display what compiling costs."""

        def __init__(self) -> None:
            self.times = StepTimes()
            self.t = 0.0
            self.tokens = 0
            self.compiles = 0
            self.announced = False

        def _emit(self, status: str) -> None:
            t = self.times
            events.emit("speed", run_id=run.run_id, compile=status, compile_seconds=t.compile_seconds,
                        compile_steps=t.compile_steps, steady_tokens_per_s=t.steady_tokens_per_s)

        def on_train_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()
            self.tokens = collator.tokens
            self.compiles = _compile_events()
            if compiling:
                self._emit("compiling")

        def on_step_end(self, args, state, control, **kw):
            now, compiles = time.perf_counter(), _compile_events()
            t = self.times
            t.seconds.append(now - self.t)
            t.tokens.append(collator.tokens - self.tokens)
            t.compiled.append(compiles != self.compiles)
            self.t, self.tokens, self.compiles = now, collator.tokens, compiles
            if compiling and not t.compiled[-1] and (not self.announced or len(t.steady()) in (1, 5)):
                self.announced = True  # the first steady step ends "compiling…"; a few more refine the pace
                self._emit("compiled")
            elif compiling and t.compiled[-1] and self.announced:
                self._emit("compiling")  # a new shape recompiled

        def on_train_end(self, args, state, control, **kw):
            t = self.times
            run.step_times = t
            run.steady_tokens_per_s = t.steady_tokens_per_s
            if compiling:
                run.compile_seconds = t.compile_seconds if t.compile_steps else 0.0
                run.compile_steps = t.compile_steps
                self._emit("compiled" if self.announced or t.compile_steps else "compiling")

    return StepClock()
