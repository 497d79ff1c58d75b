"""A run's measurements of its own speed, put on the Trainer in one call.

``run.py`` calls :func:`check` before a run is created and :func:`install` /
:meth:`Speed.finish` around ``trainer.train()``; everything else is here and in the
modules it combines:

* every run: each step's time and real tokens (``compiling.step_clock``), so the run
  knows its steady-state tokens/s (after the first step);
* ``compile=True``: dynamic shapes from the first batch, which steps compiled and what
  that cost (``compiling``);
* ``checkpointing=True``: the activations it saves (planned) and the recompute it costs
  (measured), and the model put back as it was afterwards (``checkpointing``);
* ``profile=``: the phase split of a window of steps under ``torch.profiler``
  (``profiling``).

What the display needs while the run goes comes out as ``speed`` events (``events.py``);
what the run leaves is on the ``Run`` record: ``profile``, ``compile_seconds``,
``compile_steps``, ``steady_tokens_per_s``, ``checkpointing``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ... import events
from . import checkpointing, compiling
from .profiler import ProfileRequest, StepProfiler


def profile_request(profile: Any, trace: str | None, job: Any) -> ProfileRequest | None:
    """``profile=True`` / a dict / a :class:`ProfileRequest` (``trace=DIR`` alone also
    profiles) → what to profile: by default the steps after one warm-up step (two with
    ``compile=True``: the second batch length recompiles), at most ``DEFAULT_STEPS``."""
    if not profile and not trace:
        return None
    req = profile if isinstance(profile, ProfileRequest) else ProfileRequest(**(profile if isinstance(profile, dict)
                                                                                else {}))
    if not isinstance(profile, ProfileRequest) and not (isinstance(profile, dict) and "warmup" in profile):
        req.warmup = 2 if compiling.requested(job.args) else 1
    if trace:
        req.trace = str(trace)
    total = job.run.total_steps
    req.warmup = max(0, min(req.warmup, total - 1))
    req.steps = max(1, min(req.steps, total - req.warmup))
    return req


def check(peft_type: str, method: str, settings: dict[str, Any]) -> None:
    """One line, before anything runs, for a setting this adapter cannot train with."""
    checkpointing.check(peft_type, method, settings)


def _facts(trainer: Any, model: Any, ckpt: bool, compiled: bool) -> dict[str, Any]:
    """What the run was set up with, for the profile's hints."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = getattr(trainer.args, "optim", "")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"optim": str(getattr(optim, "value", optim)), "trainable": sum(p.numel() for p in trainable),
            "tensors": len(trainable), "attn": getattr(getattr(base, "config", None), "_attn_implementation", None),
            "checkpointing": ckpt, "compiled": compiled}


class Speed:
    """The speed instruments of one run (see the module docstring)."""

    def __init__(self, job: Any, trainer: Any, collator: Any, device: str, profile: ProfileRequest | None) -> None:
        self.job, self.trainer = job, trainer
        run, args = job.run, job.args
        self.compiling = compiling.requested(args)
        self.ckpt = checkpointing.requested(args)
        self.clock = compiling.step_clock(run, collator, self.compiling)
        trainer.add_callback(self.clock)
        self.dynamic = compiling.dynamic_shapes()
        if self.compiling:
            self.dynamic.start()
        self.cost: checkpointing.CheckpointingCost | None = None
        self.meter: checkpointing.RecomputeMeter | None = None
        self.restore = checkpointing.Restore(job.peft_model.get_base_model())
        if self.ckpt:
            longest = max((len(r["input_ids"]) for r in job.examples.rows), default=1)
            batch = int(args.get("per_device_train_batch_size", 8))
            self.cost = checkpointing.CheckpointingCost(*checkpointing.planned_activations(
                job.peft_model, batch, -(-longest // 8) * 8, str(args.get("optim", "adamw"))))
            self.meter = checkpointing.RecomputeMeter(job.peft_model, trainer.accelerator)
        trainer.add_callback(_begin(self))
        self.profiler: StepProfiler | None = None
        if profile is not None:  # last: it times every callback above as "our callbacks"
            self.profiler = StepProfiler(trainer, profile, device=device, collator=collator, run_id=run.run_id)
            self.profiler.install()

    def on_train_begin(self) -> None:
        if self.meter is not None:
            self.meter.install()
        self._emit_checkpointing()

    def on_step_end(self, step: int) -> None:
        if self.meter is not None and step in (3, 20):
            self._emit_checkpointing()

    def _emit_checkpointing(self) -> None:
        if self.cost is None:
            return
        self._update_cost()
        c = self.cost
        events.emit("speed", run_id=self.job.run.run_id, checkpointing={
            "activations_with": c.activations_with, "activations_without": c.activations_without,
            "recompute_share": c.recompute_share, "text": str(c)})

    def _update_cost(self) -> None:
        if self.cost is not None and self.meter is not None:
            self.cost.recompute_s = self.meter.seconds
            self.cost.train_s = sum(self.clock.times.seconds)
            self.cost.layers = self.meter.layers

    def finish(self) -> None:
        """Take every instrument off (the model outlives the trainer) and fill in the run."""
        run = self.job.run
        self.dynamic.stop()
        if self.meter is not None:
            self._update_cost()
            self.meter.uninstall()
            run.checkpointing = self.cost
            self._emit_checkpointing()
        if self.profiler is not None:
            self.profiler.uninstall()
            with contextlib.suppress(Exception):
                facts = _facts(self.trainer, self.job.peft_model, self.ckpt, self.compiling)
                run.profile = self.profiler.result(facts)
        if run.steady_tokens_per_s is None:
            run.steady_tokens_per_s = self.clock.times.steady_tokens_per_s
        self.restore()
        # Let go of the trainer (and the profiler's events): after an error the caller's frames
        # live on in the traceback, and they must not keep a Trainer and its optimizer alive.
        if self.profiler is not None:
            self.profiler.release()
        self.trainer = self.profiler = self.meter = None


def install(job: Any, trainer: Any, collator: Any, device: str, profile: ProfileRequest | None = None) -> Speed:
    return Speed(job, trainer, collator, device, profile)


def _begin(speed: Speed) -> Any:
    from transformers import TrainerCallback

    class SpeedBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            speed.on_train_begin()

        def on_step_end(self, args, state, control, **kw):
            speed.on_step_end(state.global_step)

    return SpeedBegin()
