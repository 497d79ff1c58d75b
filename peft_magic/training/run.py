"""Train the attached adapter with transformers' ``Trainer``, done right for PEFT.

What plain ``Trainer`` gets wrong for PEFT is fixed here, each in one place:

* **AdaLoRA** (a method whose row says ``reallocates_ranks``) only reallocates ranks if
  ``update_and_allocate`` is called every step, which ``Trainer`` never does → a callback
  calls it after each optimizer step, and peft's schedule gets the run's real length.
* **Prompt / p-tuning loss** is reported too high: ``Trainer`` normalises a causal-LM
  loss by the number of labels *after the first position of each row* (the position no
  token predicts), but with virtual tokens in front even the first real token is
  predicted, so the sum is divided by too small a count. For those models we count every
  real label.
* **Interrupts** (the notebook's stop button): the first interrupt means "stop at the
  next step boundary and checkpoint", so the adapter keeps what it learned and
  ``resume`` continues exactly; a second interrupt stops at once.
* **Out of memory**: caught; the trainer, its optimizer and the traceback's frames are
  dropped and the allocator cache emptied, so the model stays usable and the kernel
  never needs a restart; the message says what to change.
* **The logits**: a language model's loss is computed without its ``[batch, seq, vocab]``
  logits where that saves memory (``loss_path``: which loss, and the Trainer that computes it).

The engine prints nothing: progress goes out as events (``callbacks``), and the run is
recorded in ``state`` for ``%peft runs``, model cards and the status bar.
"""

from __future__ import annotations

import contextlib
import gc
import os
import traceback
from typing import Any

from .. import events, peft_view, stack
from ..errors import PeftMagicError
from ..inference.running import batch_needs
from ..memory import PeakSampler, device_of, reading
from ..model.quantized import disable_cpu_4bit_repacking
from ..peft_methods.behaviour import behaviour
from ..state import Run, is_peft_model, set_resume, state_for
from ..tasks.families import collator_for, family
from ..tasks.preference import PreferenceExamples
from . import checkpoints, jobs, loss_path
from .args import DEFAULT_BATCH, total_steps, trainer_arguments
from .callbacks import InterruptToStop, make_callbacks
from .failures import classify
from .speed import instruments


def _find_peft(model: Any) -> Any:
    if is_peft_model(model):
        return model
    st = state_for(model)
    if st is not None and st.peft_model is not None:
        return st.peft_model
    raise PeftMagicError("the model has no adapter to train", "attach one first, e.g. %peft lora r=8")


def train(model: Any, data: Any = None, *, tokenizer: Any = None, adapter: str | None = None,
          resume: bool | str = False, autosave: bool = True, processes: Any = None,
          gpus: Any = None, strategy: str | None = None, zero: Any = None, stall: Any = None,
          rdzv_port: int | None = None, profile: Any = False, trace: str | None = None, keep_run: bool = True,
          **settings: Any) -> Run:
    """Train the active adapter of ``model`` on ``data``; returns the :class:`~peft_magic.state.Run`.

    ``data``: a list of str or dicts, a DataFrame, a ``datasets.Dataset``/``DatasetDict``,
    or a .jsonl/.json/.csv/.txt path (see ``tasks/data.py`` for the recognised shapes).
    ``settings``: ``steps``, ``epochs``, ``lr``, ``batch``, ``grad_accum``, ``max_len``,
    ``eval`` (data or a fraction to hold out) and any ``TrainingArguments`` field.

    Autosave (``training/checkpoints.py``): a checkpoint every ``save_every=N`` steps, every
    ``%config PeftMagic.autosave_minutes`` of training and at the end, into ``save_to=DIR``
    (default ``checkpoints/``), the last ``keep=2`` kept; ``autosave=False`` writes none.
    ``resume=True`` continues this adapter's newest checkpoint: with no ``data``, the
    interrupted run of this kernel; with the data and settings of the first run (a new
    kernel that re-ran its cells), the newest checkpoint on disk — ``resume="DIR"`` names
    the checkpoint, the run folder or the folder of runs.
    ``profile=True`` (or a ``profiling.ProfileRequest``) profiles a window of steps into
    ``run.profile``; ``trace=DIR`` also writes its Chrome / Perfetto trace. ``compile=True``
    and ``checkpointing=True`` are settings (``training/speed.py`` measures what they do).

    ``processes=N`` (CPU, gloo) or ``gpus=N|"all"`` (nccl) train in worker processes
    started with torchrun, ``strategy`` ``"ddp"`` (default), ``"fsdp"`` or ``"deepspeed"``
    (``zero`` 2 or 3), ``stall`` seconds without progress before the workers are stopped;
    see ``training/distributed``. What this machine cannot run is refused before anything
    starts; the trained adapter comes back into ``model``.

    Training errors that the user can act on (bad data, out of memory) raise
    :class:`PeftMagicError` after the model has been made usable again; an interrupt does
    not raise — the run comes back with ``status == "interrupted"``.
    """
    stack.ensure()
    peft_model = _find_peft(model)
    st = state_for(peft_model, create=True)
    name = adapter or peft_view.active_adapter(peft_model)
    if name not in peft_model.peft_config:
        raise PeftMagicError(f"no adapter '{name}' on this model", f"adapters: {', '.join(peft_model.peft_config)}")
    if adapter and adapter != peft_model.active_adapter:
        peft_model.set_adapter(adapter)
    config = peft_model.peft_config[name]
    peft_type = peft_view.peft_type(config)
    task = peft_view.task_type(config) or "CAUSAL_LM"
    record = st.adapters.get(name)
    method = record.method if record else peft_type.lower()
    spec = None
    if resume or any(v is not None for v in (processes, gpus, strategy, zero, stall)):
        from .distributed import (
            launch,  # the multi-process engine; refuses before anything starts
        )

        spec = launch.request_for(peft_model, processes=processes, gpus=gpus, strategy=strategy, zero=zero,
                                  stall=stall)
        if profile and spec is not None:
            raise PeftMagicError("--profile measures the steps of one process, in the kernel",
                                 "profile without --processes / --gpus")
    instruments.check(peft_type, method, settings)
    job = None
    if resume and data is None and not isinstance(resume, str):
        job = jobs.resumed_in_kernel(peft_model, st, name, peft_type, task)
        if job is None:
            raise PeftMagicError("no interrupted run of this adapter in this kernel to resume",
                                 "after a restart, re-run the cells and give the same data: "
                                 "%peft train data=… --resume")
        if settings:
            raise PeftMagicError("--resume without data continues the interrupted run as it was: give no settings")
        spec = launch.resumed_spec(job.run.run_id, spec, st.bits)
    elif resume:
        job = jobs.resumed_from_disk(peft_model, st, name, peft_type, task, method, data, tokenizer, settings,
                                     resume if isinstance(resume, str) else None,
                                     spec.processes if spec is not None else 1)
    else:
        # a profiled run measures steps: a checkpoint written inside the window would be measured
        # too, and the profiler's wrapped step functions are not a state to save
        job = jobs.new_job(peft_model, st, name, peft_type, task, method, data, tokenizer, settings, keep_run,
                           autosave and not profile)
    if spec is not None and job.args.get("objective") is not None:
        job.run.status = "error"
        raise PeftMagicError("preference tuning trains in the kernel's process", "drop --processes / --gpus")
    # the step budget, once per run (a resumed run keeps its own): everything after reads it
    job.args["total_steps"] = job.run.total_steps = total_steps(job.args, len(job.examples),
                                                                spec.processes if spec is not None else 1)
    if spec is not None:
        return launch.run_job(job, spec, rdzv_port)
    job.profile = instruments.profile_request(profile, trace, job)
    return _run_trainer(job)


def prepare_schedule(job: jobs.Job) -> bool:
    """A method whose schedule depends on the run's length (``reallocates_ranks``: AdaLoRA)
    gets the run's real length; True when its callback must run each step."""
    if not behaviour(job.peft_type).reallocates_ranks:
        return False
    steps = job.run.total_steps
    cfg = job.peft_model.peft_config[job.adapter]
    if cfg.tinit >= steps - cfg.tfinal:
        raise PeftMagicError(f"adalora's schedule (tinit={cfg.tinit}, tfinal={cfg.tfinal}) does not fit in "
                             f"{steps} steps", "train for more steps or attach with smaller tinit/tfinal")
    peft_view.adalora_set_total_step(job.peft_model, steps)
    return True


def _make_trainer(job: jobs.Job, training_args: Any, collator: Any, callbacks: list[Any]) -> Any:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer_cls = loss_path.trainer_class(job, training_args)  # Trainer, or one whose loss skips the logits
    if job.args.get("objective") is not None:  # preference tuning: TRL's trainer and loss (training/preference.py)
        return job.args["objective"].trainer(job, training_args, collator, callbacks)
    with stack.stack_warnings_off():
        trainer = trainer_cls(model=job.peft_model, args=training_args, train_dataset=job.examples,
                              eval_dataset=job.eval_examples, data_collator=collator, processing_class=None,
                              callbacks=callbacks)
    for cb in (PrinterCallback, ProgressCallback):  # we own the display
        trainer.remove_callback(cb)
    if behaviour(job.peft_type).virtual_tokens and job.task == "CAUSAL_LM" and hasattr(trainer, "_loss_shifts_labels"):
        # Virtual tokens come first, so every real label is a prediction target (prefix tuning
        # puts its vectors into the attention instead: the shift still applies there).
        trainer._loss_shifts_labels = False
    return trainer


def _run_trainer(job: jobs.Job) -> Run:
    """Build the Trainer, train under the interrupt handler and the memory sampler, then
    leave the model usable whatever happened, and record the outcome."""
    pm, run = job.peft_model, job.run
    device = device_of(pm)
    if device == "cpu":
        disable_cpu_4bit_repacking(pm)  # a no-op unless a 4-bit model ran inference first
    collator = collator_for(job.task, job.tokenizer, batch_needs(pm))
    reallocates = prepare_schedule(job)
    training_args = trainer_arguments(job.args, output_dir=run.output_dir, device=device, model=pm,
                                      has_eval=job.eval_set is not None, label_names=family(job.task).label_keys)
    interrupt = InterruptToStop()
    run.status, run.message = "running", None
    if job.resume_from is None and job.keep_run:  # not for a probe (%peft profile, lr=auto's search)
        _warn_if_too_big(pm, job.st, run, job.args, job.examples, job.task, job.peft_type)
    sampler = PeakSampler(device, interval=0.1)
    callbacks = make_callbacks(run, interrupt, collator, device, sampler, pm, reallocates,
                               _evaluator(pm, job.eval_set))
    if job.autosave is not None and job.autosave.enabled:  # after the interrupt's own save request
        callbacks.append(checkpoints.make_callback(run, job.autosave, job.fingerprints, pm))
    trainer = _make_trainer(job, training_args, collator, callbacks)
    speed = instruments.install(job, trainer, collator, device, job.profile)
    was_training = pm.training
    error = _train_guarded(trainer, job, sampler, interrupt)
    speed.finish()
    run.steps_done = trainer.state.global_step
    trainer = None
    if not was_training:
        pm.eval()
    _finish(job, device, sampler, error)
    if error is not None:
        raise PeftMagicError(run.message or "training failed")
    return run


def _evaluator(model: Any, eval_set: Any) -> Any:
    """The task's metrics on the held-out data, given the Trainer's eval loss (or None)."""
    if eval_set is None or isinstance(eval_set.examples, PreferenceExamples):
        return None  # a preference run: TRL logs its eval readouts itself (training/callbacks.py)
    from ..inference.evaluate import task_metrics

    return lambda eval_loss: task_metrics(model, eval_set, eval_loss=eval_loss)


def _train_guarded(trainer: Any, job: jobs.Job, sampler: PeakSampler,
                   interrupt: InterruptToStop) -> tuple[str, str] | None:
    """``trainer.train()`` with the cache off; (status, message) of a failure, or None."""
    pm, run = job.peft_model, job.run
    use_cache = getattr(getattr(pm, "config", None), "use_cache", None)
    if use_cache is not None:
        pm.config.use_cache = False
    error = None
    try:
        with sampler, interrupt, stack.stack_warnings_off(), _gc_frozen():
            trainer.train(resume_from_checkpoint=job.resume_from)
    except KeyboardInterrupt:
        run.status = "interrupted"
        run.message = f"stopped immediately at step {run.steps_done}/{run.total_steps} (second interrupt)"
    except Exception as e:  # noqa: BLE001 — classified, never swallowed silently
        error = classify(e, run, job.args)
        traceback.clear_frames(e.__traceback__)
        del e
    finally:
        if use_cache is not None:
            pm.config.use_cache = use_cache
    return error


@contextlib.contextmanager
def _gc_frozen():
    """Python's collections during the run pass over the run's own objects only.

    The Trainer starts with a full ``gc.collect()`` (accelerate's ``free_memory``), and a
    kernel with the stack loaded holds ~475k objects that are never garbage: that collect
    took 0.2–0.9 s of every run here (measured), the cost of a whole short run. Frozen
    (``gc.freeze``), they are skipped until the run ends and are unfrozen; ``_finish``
    collects once, after the run, what the run left in cycles.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _finish(job: jobs.Job, device: str, sampler: PeakSampler, error: tuple[str, str] | None) -> None:
    """Record the outcome, free what the run held, keep what ``--resume`` needs."""
    import torch

    pm, run = job.peft_model, job.run
    checkpoint = _latest_checkpoint(run.output_dir) if run.status == "interrupted" else None
    if error is None and run.status == "running":
        run.status = "completed"
    run.peak_memory, run.memory_at_start = sampler.peak, sampler.start
    run.memory_kind = reading(device).kind
    run.final_loss = run.losses[-1][1] if run.losses else None
    pm.zero_grad(set_to_none=True)
    if error is not None or job.keep_run:  # the trainer's cycles (a failed run's traceback too); a probe
        gc.collect()                       # run (lr=auto, %peft profile) leaves it to its caller
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not job.keep_run:
        pass
    elif run.status == "interrupted" and checkpoint:
        set_resume(run.run_id, {"args": job.args, "examples": job.examples, "eval_set": job.eval_set,
                                "tokenizer": job.tokenizer, "checkpoint": checkpoint, "autosave": job.autosave,
                                "fingerprints": job.fingerprints})
    elif run.status == "completed":
        set_resume(run.run_id, None)
    if error is not None:
        run.status, run.message = error
    events.emit("run_end", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, status=run.status,
                step=run.steps_done, total_steps=run.total_steps, loss=run.final_loss, elapsed_s=run.seconds,
                peak_memory=run.peak_memory, message=run.message)


def _warn_if_too_big(peft_model: Any, st: Any, run: Run, args: dict[str, Any], examples: Any, task: str,
                     peft_type: str) -> None:
    """Before starting, ask the memory plan whether the run fits; record a warning if not.

    The estimate is for the longest batch the data can produce (what decides an OOM),
    costs ~0.2 s on a meta-device trace, and never stops the run: estimates can be wrong,
    and the OOM handler is there if it really does not fit.
    """
    from ..planning.plan import check_fit

    seq = -(-examples.longest // 8) * 8
    batch = int(args.get("per_device_train_batch_size", DEFAULT_BATCH)) * examples.sequences_per_row
    verdict = check_fit(peft_model, batch=batch, seq=seq,
                        grad_accum=int(args.get("gradient_accumulation_steps", 1)),
                        gradient_checkpointing=bool(args.get("gradient_checkpointing") or st.kbit_prepared),
                        optim=str(args.get("optim", "adamw")),
                        fused_loss=loss_path.choose(peft_model, task, peft_type, args, examples,
                                                    device_of(peft_model)).fused)
    if verdict.fits is False:
        run.warnings.append(f"may not fit: {verdict.message}")


def _latest_checkpoint(output_dir: str | None) -> str | None:
    """The newest ``checkpoint-N`` folder of a run (transformers' own lookup), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir or not os.path.isdir(output_dir):
        return None
    return get_last_checkpoint(output_dir)
