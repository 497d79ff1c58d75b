"""The kernel's side of a multi-process run: check the request, hand off, supervise, take the result.

``run_job`` is called by ``training.run.train`` with a prepared job (data tokenized, run
recorded) and a checked :class:`~.strategies.LaunchSpec`. It writes the handoff folder
(``handoff``), listens on a local socket (``channel``) and lets the ``supervisor`` start
and watch torchrun, with the stop button turned into a request to stop at a step boundary
(``callbacks.InterruptToStop``). Then, by how the launch ended:

* every rank done → the trained adapter is loaded into the notebook's model (all or
  nothing) and the run is ``completed``;
* stopped by the stop button → the adapter the workers wrote at that step boundary is
  loaded back, the run is ``interrupted`` and ``--resume`` continues it with the same
  processes (the Trainer's checkpoint and this launch's shape are kept);
* a rank out of memory → ``oom`` with the usual advice; any other fault, a stall, a second
  stop press → the model stays exactly as it was before the cell.

The processes are always reaped, the folder removed, and ``run_end`` emitted as a
single-process run emits it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from ... import events
from ...errors import PeftMagicError, first_line
from ...state import Run, resume_record, set_resume, state_for
from ..args import DEFAULT_BATCH
from ..callbacks import InterruptToStop
from . import handoff
from .channel import Listener, new_token
from .relay import Relay
from .strategies import LaunchSpec, machine_problem, request, trainer_overrides
from .supervisor import Outcome, Supervisor

# ----------------------------------------------------------------------------- the request


def request_for(peft_model: Any, **kwargs: Any) -> LaunchSpec | None:
    """The checked launch for ``%peft train --processes / --gpus …`` (None: in this process)."""
    st = state_for(peft_model)
    return request(bits=st.bits if st is not None else None, **kwargs)


def resumed_spec(run_id: int, spec: LaunchSpec | None, bits: int | None = None) -> LaunchSpec | None:
    """``--resume`` continues with the processes the interrupted run had."""
    recorded = (resume_record(run_id) or {}).get("launch")
    if recorded is None:
        if spec is not None:
            raise PeftMagicError("the interrupted run trained in the notebook's own process",
                                 "resume it without --processes / --gpus")
        return None
    rec = LaunchSpec.from_dict(recorded)
    if spec is not None:
        if not spec.same_shape(rec):
            raise PeftMagicError(f"the interrupted run used {rec.describe()}; --resume continues with the same",
                                 "leave out --processes / --gpus / --strategy")
        rec.stall_s = spec.stall_s
    problem = machine_problem(rec, bits)
    if problem:
        raise PeftMagicError(f"cannot resume: {problem}")
    return rec


def global_batch(args: dict[str, Any], spec: LaunchSpec) -> tuple[int, int, int]:
    """(per-process batch, accumulation, global batch = batch × processes × accumulation)."""
    batch = int(args.get("per_device_train_batch_size", DEFAULT_BATCH))
    accum = int(args.get("gradient_accumulation_steps", 1))
    return batch, accum, batch * spec.processes * accum


def launch_info(args: dict[str, Any], spec: LaunchSpec) -> dict[str, Any]:
    """What ``run_start`` carries about the launch (the display's title shows it)."""
    batch, accum, total = global_batch(args, spec)
    return {"processes": spec.processes, "device": spec.device, "backend": spec.backend, "strategy": spec.strategy,
            "zero": spec.zero, "describe": spec.describe(), "batch": batch, "grad_accum": accum,
            "global_batch": total}


# ----------------------------------------------------------------------------- a run


@contextlib.contextmanager
def _uninterruptible():
    """SIGINT ignored for the length of the block (the few seconds cleanup takes)."""
    import threading

    main = threading.current_thread() is threading.main_thread()
    prev = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, prev)


def _shared_gpu_note(job: Any, spec: LaunchSpec) -> str | None:
    """The notebook's own model on a GPU the workers use: say how much rank 0 shares it with."""
    from ...memory import device_of

    dev = device_of(job.peft_model)
    if spec.device != "cuda" or not dev.startswith("cuda"):
        return None
    from ...fmt import fmt_bytes
    from ...model.properties import footprint

    return (f"the notebook's model holds {fmt_bytes(footprint(job.peft_model))} on {dev}, which a worker shares; "
            "move it to the CPU first (model.to('cpu')) if memory is tight")


def run_job(job: Any, spec: LaunchSpec, port: int | None = None) -> Run:
    """Train ``job`` in worker processes as ``spec`` says; the notebook's model gets the result."""
    run = job.run
    steps = run.total_steps
    key = "processes" if spec.device == "cpu" else "gpus"
    run.settings.setdefault(key, spec.processes)
    if spec.strategy != "ddp":
        run.settings.setdefault("strategy", spec.strategy if spec.strategy != "deepspeed" else f"zero{spec.zero}")
    run.status, run.message = "running", None
    note = _shared_gpu_note(job, spec)
    if note and note not in run.warnings:
        run.warnings.append(note)
    folder = Path(tempfile.mkdtemp(prefix="peft_magic_dist_"))
    listener = Listener(new_token())
    interrupt = InterruptToStop()
    launch = launch_info(job.args, spec)
    sup = Supervisor(spec, run, folder, listener, launch, interrupt, port)
    outcome = Outcome("error", "the launch did not start")
    try:
        with interrupt:
            try:
                overrides = trainer_overrides(spec, job.peft_model, bool(job.args.get("gradient_checkpointing")))
                notes = handoff.write(job, folder, launch=spec.as_dict(), overrides=overrides, steps=steps,
                                      port=listener.port, token=listener.token)
                run.warnings.extend(n for n in notes if n not in run.warnings)
                if interrupt.requested:
                    outcome = Outcome("interrupted", "stopped before the workers started: nothing was learned")
                else:
                    outcome = sup.supervise()
            except KeyboardInterrupt:
                outcome = Outcome("interrupted", "stopped before the first step (second interrupt): nothing was "
                                                 "learned; the model is as it was before this cell")
            except PeftMagicError as e:
                outcome = Outcome("error", str(e))
            except Exception as e:  # noqa: BLE001 — recorded on the run and raised as one line below
                outcome = Outcome("error", f"the launch failed: {type(e).__name__}: {first_line(e)}")
    finally:
        with _uninterruptible():  # a stop press now must not leave workers behind
            sup.reap()
            listener.close()
    run.warnings.extend(n for n in sup.notes if n not in run.warnings)
    if outcome.load_back:
        try:
            handoff.load_result(job.peft_model, job.adapter, folder / "result")
        except PeftMagicError as e:
            outcome = Outcome("error", str(e))
    shutil.rmtree(folder, ignore_errors=True)
    return _finish(job, spec, sup.relay, outcome)


def _final_metrics(job: Any) -> None:
    """The task's metrics on the held-out data for the adapter as it came back (the workers
    report only the eval loss: the records and the tokenizer stay in the kernel)."""
    from ...inference.evaluate import task_metrics

    run = job.run
    scores = task_metrics(job.peft_model, job.eval_set)
    run.eval_metrics.append((run.steps_done, scores))
    events.emit("eval", run_id=run.run_id, step=run.steps_done, eval_loss=scores["loss"], metrics=dict(scores))


def _finish(job: Any, spec: LaunchSpec, relay: Relay, outcome: Outcome) -> Run:
    """Record the outcome (as ``run._finish`` does for one process), keep what ``--resume`` needs."""
    run = job.run
    run.status, run.message = outcome.status, outcome.message
    run.peak_memory, run.memory_kind = relay.peak()
    run.final_loss = run.losses[-1][1] if run.losses else None
    if run.status == "interrupted" and outcome.checkpoint:
        set_resume(run.run_id, {"args": job.args, "examples": job.examples, "eval_set": job.eval_set,
                                "tokenizer": job.tokenizer, "checkpoint": outcome.checkpoint, "launch": spec.as_dict()})
    elif run.status == "completed":
        set_resume(run.run_id, None)
    if job.eval_set is not None and outcome.load_back and run.status in ("completed", "interrupted"):
        _final_metrics(job)
    events.emit("run_end", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, status=run.status,
                step=run.steps_done, total_steps=run.total_steps, loss=run.final_loss, elapsed_s=run.seconds,
                peak_memory=run.peak_memory, message=run.message)
    if run.status in ("oom", "error"):
        raise PeftMagicError(run.message or "training failed")
    return run
