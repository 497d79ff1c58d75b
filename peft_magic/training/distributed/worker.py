"""One worker of a multi-process run: ``python -m peft_magic.training.distributed.worker FOLDER``.

Started by ``torchrun`` (which sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT), one per process or GPU. Each worker:

1. sends its stderr to ``FOLDER/rank{N}.log`` and connects to the kernel (``channel``);
2. builds the ``TrainingArguments`` first — that joins the process group (gloo on CPU,
   nccl on GPUs) and, under DeepSpeed ZeRO-3, must precede building the model;
3. loads the base model the way the kernel has it (``model.load`` with the same dtype and
   4-bit / 8-bit setting, or the folder the kernel wrote) and puts the kernel's adapter on
   it with its current weights (peft's ``get_peft_model`` with the kernel's config, then
   the tensors: ``handoff.attach_from``);
4. trains with the single-process engine's own pieces — ``run._make_trainer`` (the prompt
   loss fix), ``run._train_guarded`` (cache off, failures classified), ``callbacks`` (the
   progress events, AdaLoRA) — plus two callbacks of its own: ``StopSync``, which makes
   every rank agree at each step boundary whether the stop button was pressed (one tiny
   all-reduce), and ``Alive``, which tells the kernel it is still moving (the stall check);
5. forwards its events to the kernel and, at the end, rank 0 writes the adapter
   (safetensors) for the kernel to load.

Any exception becomes a ``failed`` message (status ``oom`` or ``error`` and one line) and
a non-zero exit; the kernel stops the other workers.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ...errors import first_line
from . import handoff
from .channel import Client
from .strategies import LaunchSpec

FORWARDED = ("run_start", "progress", "eval", "speed")


def _redirect_stderr(folder: Path, rank: int) -> None:
    """This rank's stderr (Python's and C's) into its own file, for the fault report."""
    fd = os.open(str(folder / f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 — lives as long as the process


class _RunDelta:
    """What changed in the worker's run record since the last message."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.losses = 0
        self.evals = 0

    def __call__(self) -> dict[str, Any]:
        r = self.run
        out = {"losses": r.losses[self.losses:], "eval_losses": r.eval_losses[self.evals:],
               "steps_done": r.steps_done, "total_steps": r.total_steps, "seconds": r.seconds,
               "tokens": r.tokens, "last_lr": r.last_lr, "loss_path": r.loss_path}
        self.losses, self.evals = len(r.losses), len(r.eval_losses)
        return out


def _callbacks(stop: threading.Event, interrupt: Any, device: str, client: Client) -> list[Any]:
    """The worker's own callbacks (built here: transformers is imported lazily)."""
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    class StopSync(TrainerCallback):
        """Every rank learns at the same step boundary that the stop button was pressed."""

        def on_step_end(self, args, state, control, **kw):
            local = 1.0 if stop.is_set() else 0.0
            if dist.is_available() and dist.is_initialized():
                flag = torch.tensor([local], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                local = float(flag.item())
            if local > 0:
                interrupt.requested = True
            return control

    class Alive(TrainerCallback):
        """A sign of life at most once a second, also between optimizer steps and in evaluation."""

        def __init__(self) -> None:
            self.last = 0.0

        def _beat(self, state, phase: str) -> None:
            now = time.monotonic()
            if now - self.last >= 1.0:
                self.last = now
                client.send({"t": "alive", "phase": phase, "step": state.global_step})

        def on_substep_end(self, args, state, control, **kw):
            self._beat(state, "training")

        def on_step_end(self, args, state, control, **kw):
            self._beat(state, "training")

        def on_prediction_step(self, args, state, control, **kw):
            self._beat(state, "evaluating")

    return [StopSync(), Alive()]


def _precision_probe(dtype: str) -> Any:
    """Stands in for the model in ``args.precision`` before the model exists (it reads dtypes only)."""
    import torch

    class Probe:
        def parameters(self):
            return iter([torch.empty(0, dtype=getattr(torch, dtype))])

    return Probe()


def _load_model(src: dict[str, Any], folder: Path, adapter: str, device: str) -> Any:
    """The base model as the kernel has it, with the kernel's adapter (current weights), trainable."""
    from ...adapter_ops.rollback import prepare_kbit
    from ...model.load import load
    from ...state import state_for

    loaded = load(src["path"], bits=src["bits"], dtype=src["dtype"], task=src["task"], labels=src["labels"],
                  device=device, trust_remote_code=src["trust_remote_code"])
    base = loaded.model
    if src["kbit_prepared"]:
        prepare_kbit(base, state_for(base, create=True))
    elif src["checkpointing"]:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
    return handoff.attach_from(base, folder / "adapter", adapter)


def _train(folder: Path, settings: dict[str, Any], rank: int, local_rank: int, client: Client,
           stop: threading.Event) -> None:
    from ... import events, stack
    from ...inference.running import batch_needs
    from ...memory import PeakSampler, reading
    from ...tasks.families import collator_with_pad, family
    from ..args import trainer_arguments
    from ..callbacks import InterruptToStop, make_callbacks
    from ..run import (
        _latest_checkpoint,
        _make_trainer,
        _train_guarded,
        prepare_schedule,
    )

    phase = lambda p: client.send({"t": "phase", "phase": p})  # noqa: E731
    phase("importing torch, transformers and peft")
    stack.ensure()
    import torch

    spec = LaunchSpec.from_dict(settings["launch"])
    device = "cpu" if spec.device == "cpu" else f"cuda:{local_rank}"
    if device != "cpu":
        torch.cuda.set_device(local_rank)
    src, ad = settings["model"], settings["adapter"]
    args = {**settings["overrides"], **settings["args"]}
    phase("joining the process group")
    args["total_steps"] = int(settings["total_steps"])
    training_args = trainer_arguments(args, output_dir=settings["output_dir"], device=device,
                                      model=_precision_probe(src["dtype"]),
                                      has_eval=settings["has_eval"], label_names=family(ad["task"]).label_keys)
    phase("loading the model")
    pm = _load_model(src, folder, ad["name"], device)
    phase("reading the data")
    job = _job(pm, folder, settings)
    job.run.total_steps = args["total_steps"]
    reallocates = prepare_schedule(job)
    run = job.run
    collator = collator_with_pad(ad["task"], settings["pad_id"], batch_needs(pm))
    interrupt = InterruptToStop()
    sampler = PeakSampler(device, interval=0.1)
    delta = _RunDelta(run)

    def forward(ev: Any) -> None:
        if ev.kind in FORWARDED:
            client.send({"t": "event", "kind": ev.kind, "data": ev.data, "run": delta()})

    phase("building the trainer")
    callbacks = _callbacks(stop, interrupt, device, client) + make_callbacks(
        run, interrupt, collator, device, sampler, pm, reallocates)
    if job.autosave is not None:
        from ..checkpoints import make_callback

        callbacks.append(make_callback(run, job.autosave, job.fingerprints, pm, processes=spec.processes))
    trainer = _make_trainer(job, training_args, collator, callbacks)
    unsubscribe = events.subscribe(forward)
    phase("training")
    try:
        error = _train_guarded(trainer, job, sampler, interrupt)
    finally:
        unsubscribe()
    run.steps_done = trainer.state.global_step
    if error is not None:
        client.send({"t": "failed", "status": error[0], "message": error[1], "step": run.steps_done,
                     "run": delta()})
        raise SystemExit(1)
    status = "completed" if run.status == "running" else run.status
    phase("saving the adapter")
    _save_result(pm, trainer, ad["name"], folder / "result", spec.strategy, rank)
    checkpoint = _latest_checkpoint(run.output_dir) if (status == "interrupted" and rank == 0) else None
    client.send({"t": "done", "status": status, "message": run.message, "peak": sampler.peak,
                 "memory_kind": reading(device).kind, "checkpoint": checkpoint, "run": delta()})


def _job(pm: Any, folder: Path, settings: dict[str, Any]) -> Any:
    """The kernel's run record and data, rebuilt in this process as the trainer's job."""
    from ...inference.evaluate import EvalSet
    from ...state import Run, state_for
    from ..jobs import Job

    ad, r = settings["adapter"], settings["run"]
    examples = handoff.read_examples(folder / "train")
    eval_examples = handoff.read_examples(folder / "eval") if settings["has_eval"] else None
    run = Run(run_id=r["run_id"], model_id=r["model_id"], adapter=r["adapter"], method=r["method"], settings={},
              total_steps=r["total_steps"], seconds=r["seconds"], tokens=r["tokens"], started_at=time.time(),
              output_dir=settings["output_dir"])
    # the held-out rows give the eval loss here; the task's other metrics are computed in the
    # kernel on the trained adapter when it comes back (launch.py)
    held = EvalSet(ad["task"], [], eval_examples, None, 0) if eval_examples is not None else None
    job = Job(pm, state_for(pm, create=True), run, ad["name"], ad["peft_type"], ad["task"], settings["args"],
              examples, held, None, settings["resume_from"])
    auto = settings.get("autosave")
    if auto:
        from ..checkpoints import Autosave, restore

        job.autosave = Autosave(Path(settings["output_dir"]), auto["every_steps"], auto["every_seconds"], auto["keep"])
        job.fingerprints = auto["fingerprints"]
        rec = dict(auto["record"])
        restore(run, {"run": rec, "step": rec.get("steps_done", 0)})
        run.settings, run.task, run.data = rec.get("settings", {}), rec.get("task", run.task), rec.get("data", "")
    return job


def _save_result(pm: Any, trainer: Any, adapter: str, result: Path, strategy: str, rank: int) -> None:
    """Write the trained adapter for the kernel: rank 0 alone under DDP; every rank
    when the weights are sharded (gathering them is collective)."""
    if strategy == "ddp":
        if rank == 0:
            handoff.write_adapter(pm, adapter, result)
    else:
        trainer.save_model(str(result))


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    _redirect_stderr(folder, rank)
    settings = handoff.read_settings(folder)
    stop = threading.Event()
    client = Client(settings["port"], settings["token"], rank, on_stop=stop.set)
    code = 0
    try:
        _train(folder, settings, rank, local_rank, client, stop)
    except SystemExit as e:
        code = int(e.code or 0)
    except BaseException as e:  # noqa: BLE001 — reported to the kernel, then this worker ends
        traceback.print_exc()
        client.send({"t": "failed", "status": "error", "message": f"{type(e).__name__}: {first_line(e)}"})
        code = 1
    try:
        import torch.distributed as dist

        if code == 0 and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 — leaving anyway
        traceback.print_exc()
    client.close()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
