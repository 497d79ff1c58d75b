"""Train the attached adapter with transformers' ``Trainer``, done right for PEFT.

What plain ``Trainer`` gets wrong for PEFT is fixed here, each in one place:

* **AdaLoRA** only reallocates ranks if ``update_and_allocate`` is called every step,
  which ``Trainer`` never does → a callback calls it after each optimizer step, and the
  schedule's ``total_step`` is set to the run's real length.
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

The engine prints nothing: progress goes out as events (``callbacks``), and the run is
recorded in ``state`` for ``%peft runs``, model cards and the status bar.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _heavy, events, peft_view
from ..errors import PeftMagicError
from ..memory import PeakSampler, device_of, reading
from ..model.builtins import cache_dir
from ..model.quantized import disable_cpu_4bit_repacking
from ..peft_methods.quirks import default_lr
from ..state import Run, add_run, is_peft_model, next_run_id, resume_record, runs, set_resume, state_for
from . import data as data_mod
from . import speed as speed_mod
from .args import DEFAULT_BATCH, normalize_args, planned_steps, trainer_arguments
from .callbacks import InterruptToStop, make_callbacks
from .failures import classify

DEFAULT_MAX_LEN = 512


@dataclass
class _Job:
    """Everything one run needs, whether new or resumed."""

    peft_model: Any
    st: Any
    run: Run
    adapter: str
    peft_type: str
    task: str
    args: dict[str, Any]
    examples: Any
    eval_examples: Any
    tokenizer: Any
    resume_from: str | None = None
    profile: Any = None  # a profiling.ProfileRequest: profile a window of steps
    keep_run: bool = True  # False (%peft profile): the run is not kept in runs(), nor resumable


def _find_peft(model: Any) -> Any:
    if is_peft_model(model):
        return model
    st = state_for(model)
    if st is not None and st.peft_model is not None:
        return st.peft_model
    raise PeftMagicError("the model has no adapter to train", "attach one first, e.g. %peft lora r=8")


def _runs_dir() -> Path:
    return cache_dir().parent / "runs"


def _label_names(peft_model: Any, task: str) -> list[str] | None:
    """A classifier's own label names (not transformers' placeholder LABEL_0 …)."""
    base_cfg = getattr(peft_model.get_base_model(), "config", None)
    if task != "SEQ_CLS" or base_cfg is None or not getattr(base_cfg, "id2label", None):
        return None
    names = [base_cfg.id2label[i] for i in sorted(base_cfg.id2label)]
    return None if all(n.startswith("LABEL_") for n in names) else names


def _new_job(peft_model: Any, st: Any, adapter: str, peft_type: str, task: str, method: str, data: Any,
             tokenizer: Any, output_dir: str | None, settings: dict[str, Any], keep_run: bool = True) -> _Job:
    args = normalize_args(settings)
    if data is None:
        raise PeftMagicError("which data?", "data=VARIABLE or a .jsonl/.json/.csv/.txt path")
    max_len = int(args.pop("max_len", DEFAULT_MAX_LEN))
    eval_spec = args.pop("eval", None)
    args.pop("data", None)
    examples = data_mod.tokenize(data, tokenizer, max_len=max_len, task=task,
                                 label_names=_label_names(peft_model, task))
    eval_examples = None
    if isinstance(eval_spec, float) and not isinstance(eval_spec, bool):
        examples, eval_examples = data_mod.split_eval(examples, eval_spec)
    elif eval_spec is not None:
        eval_examples = data_mod.tokenize(eval_spec, tokenizer, max_len=max_len, task=task, split="validation",
                                          label_names=examples.label_names)
    args.setdefault("learning_rate", default_lr(peft_type))
    args.setdefault("per_device_train_batch_size", DEFAULT_BATCH)
    if "max_steps" not in args and "num_train_epochs" not in args:
        args["num_train_epochs"] = 1.0
    run = Run(run_id=next_run_id(), model_id=st.model_id, adapter=adapter, method=method, settings=dict(settings),
              total_steps=0, started_at=time.time())
    run.output_dir = output_dir or str(_runs_dir() / f"run-{run.run_id}-{time.strftime('%Y%m%d-%H%M%S')}")
    if keep_run:
        add_run(run)
    return _Job(peft_model, st, run, adapter, peft_type, task, args, examples, eval_examples, tokenizer,
                keep_run=keep_run)


def _resumed_job(peft_model: Any, st: Any, adapter: str, peft_type: str, task: str, data: Any,
                 settings: dict[str, Any]) -> _Job:
    prev = next((r for r in reversed(runs()) if r.model_id == st.model_id and r.adapter == adapter
                 and r.status == "interrupted" and resume_record(r.run_id) is not None), None)
    if prev is None:
        raise PeftMagicError("no interrupted run of this adapter to resume", "start a new run without --resume")
    if data is not None or settings:
        raise PeftMagicError("--resume continues the interrupted run as it was: give no data or settings")
    saved = resume_record(prev.run_id)
    return _Job(peft_model, st, prev, adapter, peft_type, task, dict(saved["args"]), saved["examples"],
                saved["eval"], saved["tokenizer"], saved["checkpoint"])


def train(model: Any, data: Any = None, *, tokenizer: Any = None, adapter: str | None = None,
          resume: bool = False, output_dir: str | None = None, profile: Any = False, trace: str | None = None,
          keep_run: bool = True, **settings: Any) -> Run:
    """Train the active adapter of ``model`` on ``data``; returns the :class:`~peft_magic.state.Run`.

    ``data``: a list of str or dicts, a DataFrame, a ``datasets.Dataset``/``DatasetDict``,
    or a .jsonl/.json/.csv/.txt path (see ``training/data.py`` for the recognised shapes).
    ``settings``: ``steps``, ``epochs``, ``lr``, ``batch``, ``grad_accum``, ``max_len``,
    ``eval`` (data or a fraction to hold out) and any ``TrainingArguments`` field.
    ``resume=True`` continues this model's last interrupted run from its checkpoint.
    ``profile=True`` (or a ``profiling.ProfileRequest``) profiles a window of steps into
    ``run.profile``; ``trace=DIR`` also writes its Chrome / Perfetto trace. ``compile=True``
    and ``checkpointing=True`` are settings (``training/speed.py`` measures what they do).

    Training errors that the user can act on (bad data, out of memory) raise
    :class:`PeftMagicError` after the model has been made usable again; an interrupt does
    not raise — the run comes back with ``status == "interrupted"``.
    """
    _heavy.ensure()
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
    speed_mod.check(peft_type, method, settings)
    if resume:
        job = _resumed_job(peft_model, st, name, peft_type, task, data, settings)
    else:
        job = _new_job(peft_model, st, name, peft_type, task, method, data, tokenizer, output_dir, settings, keep_run)
    job.profile = speed_mod.profile_request(profile, trace, job)
    return _run_trainer(job)


def _prepare_adalora(job: _Job, steps: int) -> None:
    cfg = job.peft_model.peft_config[job.adapter]
    if cfg.tinit >= steps - cfg.tfinal:
        raise PeftMagicError(f"adalora's schedule (tinit={cfg.tinit}, tfinal={cfg.tfinal}) does not fit in "
                             f"{steps} steps", "train for more steps or attach with smaller tinit/tfinal")
    peft_view.adalora_set_total_step(job.peft_model, steps)


def _make_trainer(job: _Job, training_args: Any, collator: Any, callbacks: list[Any]) -> Any:
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(model=job.peft_model, args=training_args, train_dataset=job.examples,
                          eval_dataset=job.eval_examples, data_collator=collator, processing_class=None,
                          callbacks=callbacks)
    for cb in (PrinterCallback, ProgressCallback):  # we own the display
        trainer.remove_callback(cb)
    if (peft_view.is_prompt_learning(job.peft_model.peft_config[job.adapter]) and job.task == "CAUSAL_LM"
            and hasattr(trainer, "_loss_shifts_labels")):
        # Virtual tokens come first, so every real label is a prediction target.
        trainer._loss_shifts_labels = False
    return trainer


def _run_trainer(job: _Job) -> Run:
    """Build the Trainer, train under the interrupt handler and the memory sampler, then
    leave the model usable whatever happened, and record the outcome."""
    pm, run = job.peft_model, job.run
    device = device_of(pm)
    if device == "cpu":
        disable_cpu_4bit_repacking(pm)  # a no-op unless a 4-bit model ran inference first
    tok = job.tokenizer
    collator = data_mod.Collator(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0),
                                 classify=(job.task == "SEQ_CLS"))
    steps = planned_steps(job.args, len(job.examples))
    is_adalora = job.peft_type == "ADALORA"
    if is_adalora:
        _prepare_adalora(job, steps)
    training_args = trainer_arguments(job.args, output_dir=run.output_dir, device=device, model=pm, steps=steps,
                                      has_eval=job.eval_examples is not None)
    interrupt = InterruptToStop()
    run.status, run.message = "running", None
    if job.resume_from is None:
        _warn_if_too_big(pm, job.st, run, job.args, job.examples)
    sampler = PeakSampler(device, interval=0.1)
    trainer = _make_trainer(job, training_args, collator,
                            make_callbacks(run, interrupt, collator, device, sampler, pm, is_adalora))
    speed = speed_mod.install(job, trainer, collator, device, job.profile)
    was_training = pm.training
    error = _train_guarded(trainer, job, sampler, interrupt)
    speed.finish()
    run.steps_done = trainer.state.global_step
    run.total_steps = trainer.state.max_steps or run.total_steps
    trainer = None
    if not was_training:
        pm.eval()
    _finish(job, device, sampler, error)
    if error is not None:
        raise PeftMagicError(run.message or "training failed")
    return run


def _train_guarded(trainer: Any, job: _Job, sampler: PeakSampler,
                   interrupt: InterruptToStop) -> tuple[str, str] | None:
    """``trainer.train()`` with the cache off; (status, message) of a failure, or None."""
    pm, run = job.peft_model, job.run
    use_cache = getattr(getattr(pm, "config", None), "use_cache", None)
    if use_cache is not None:
        pm.config.use_cache = False
    error = None
    try:
        with sampler, interrupt, warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def _finish(job: _Job, device: str, sampler: PeakSampler, error: tuple[str, str] | None) -> None:
    """Record the outcome, free what the run held, keep what ``--resume`` needs."""
    import torch

    pm, run = job.peft_model, job.run
    checkpoint = _latest_checkpoint(run.output_dir) if run.status == "interrupted" else None
    if error is None and run.status == "running":
        run.status = "completed"
    run.peak_memory = sampler.peak
    run.memory_kind = reading(device).kind
    run.final_loss = run.losses[-1][1] if run.losses else None
    pm.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not job.keep_run:
        pass
    elif run.status == "interrupted" and checkpoint:
        set_resume(run.run_id, {"args": job.args, "examples": job.examples, "eval": job.eval_examples,
                                "tokenizer": job.tokenizer, "checkpoint": checkpoint})
    elif run.status == "completed":
        set_resume(run.run_id, None)
    if error is not None:
        run.status, run.message = error
    events.emit("run_end", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, status=run.status,
                step=run.steps_done, total_steps=run.total_steps, loss=run.final_loss, elapsed_s=run.seconds,
                peak_memory=run.peak_memory, message=run.message)


def _warn_if_too_big(peft_model: Any, st: Any, run: Run, args: dict[str, Any], examples: Any) -> None:
    """Before starting, ask the memory plan whether the run fits; record a warning if not.

    The estimate is for the longest batch the data can produce (what decides an OOM),
    costs ~0.2 s on a meta-device trace, and never stops the run: estimates can be wrong,
    and the OOM handler is there if it really does not fit.
    """
    from ..planning.plan import check_fit

    longest = max((len(r["input_ids"]) for r in examples.rows), default=1)
    seq = -(-longest // 8) * 8
    verdict = check_fit(peft_model, batch=int(args.get("per_device_train_batch_size", DEFAULT_BATCH)), seq=seq,
                        grad_accum=int(args.get("gradient_accumulation_steps", 1)),
                        gradient_checkpointing=bool(args.get("gradient_checkpointing") or st.kbit_prepared),
                        optim=str(args.get("optim", "adamw")))
    if verdict.fits is False:
        run.warnings.append(f"may not fit: {verdict.message}")


def _latest_checkpoint(output_dir: str | None) -> str | None:
    if not output_dir or not os.path.isdir(output_dir):
        return None
    cps = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir()]
    if not cps:
        return None
    return str(max(cps, key=lambda p: int(p.name.split("-")[-1])))
