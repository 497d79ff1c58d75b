"""Train the attached adapter with transformers' ``Trainer``, done right for PEFT.

Why ``Trainer`` and not our own loop: it is the well-kept, well-known implementation
(mixed precision, gradient accumulation with correct loss scaling, schedulers, length-
grouped sampling, checkpoints); we drive it with callbacks. What plain ``Trainer`` gets
wrong for PEFT is fixed here, each in one place:

* **AdaLoRA** only reallocates ranks if ``update_and_allocate`` is called every step,
  which ``Trainer`` never does → :class:`_AdaLoraCallback` calls it after each optimizer
  step (before ``zero_grad``, where peft's docs say), and the schedule's ``total_step``
  is set to the run's real length.
* **Prompt / p-tuning loss** is reported too high: ``Trainer`` normalises a causal-LM
  loss by the number of labels *after the first position of each row* (the position no
  token predicts), but with virtual tokens in front even the first real token is
  predicted, so the sum is divided by too small a count. For prompt-learning models we
  count every real label.
* **Interrupts** (the notebook's stop button): a SIGINT handler turns the first
  interrupt into "stop at the next step boundary and checkpoint", so the adapter keeps
  what it learned and ``resume`` continues exactly; a second interrupt stops at once.
* **Out of memory**: caught; the trainer, its optimizer and the traceback's frames are
  dropped and the allocator cache emptied, so the model stays usable and the kernel
  never needs a restart; the message says what to change.

Progress goes out as events (``events.py``), throttled once at the source; renderers
draw them. The engine prints nothing.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import threading
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import _heavy, events
from ..errors import PeftMagicError, did_you_mean, first_line
from ..memory import PeakSampler, device_of, fmt_bytes, reading
from ..state import Run, add_run, is_peft_model, runs, state_for

#: short names a user types → TrainingArguments fields
ALIASES = {
    "steps": "max_steps", "epochs": "num_train_epochs", "lr": "learning_rate",
    "batch": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps", "accum": "gradient_accumulation_steps",
    "warmup": "warmup_steps", "wd": "weight_decay", "scheduler": "lr_scheduler_type",
    "eval_batch": "per_device_eval_batch_size", "checkpointing": "gradient_checkpointing",
    "optim": "optim", "seed": "seed",
}
#: settings that are ours, not TrainingArguments fields
OWN_KEYS = ("max_len", "eval", "data", "packing_off")

_RUN_IDS = iter(range(1, 10**9))
_RESUME: dict[int, dict[str, Any]] = {}  # run_id → what --resume needs


def default_lr(peft_type: str) -> float:
    """Learning rates that work for a quick experiment, by method family.

    Low-rank updates like 2e-4 (the QLoRA paper's and peft's examples); prompt-based
    methods train a few embeddings from scratch and need 1e-2 – 3e-2; IA3 scales
    activations (3e-3 in its paper); bottleneck adapters 1e-3 (Houlsby et al.).
    """
    if peft_type in ("PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"):
        return 3e-2
    if peft_type in ("PREFIX_TUNING", "ADAPTION_PROMPT", "CARTRIDGE", "CPT"):
        return 1e-2
    if peft_type in ("IA3", "LN_TUNING", "BEFT"):
        return 3e-3
    if peft_type in ("BOTTLENECK", "VERA", "PVERA", "FOURIERFT", "WAVEFT", "VBLORA", "TINYLORA", "UNILORA"):
        return 1e-3
    return 2e-4


def _training_fields() -> dict[str, Any]:
    from transformers import TrainingArguments

    from ..peft_methods.discovery import config_fields

    return config_fields(TrainingArguments)


def normalize_args(settings: dict[str, Any]) -> dict[str, Any]:
    """Resolve aliases and check every key against TrainingArguments (with did-you-mean)."""
    from ..peft_methods.discovery import coerce_value

    fields = _training_fields()
    out: dict[str, Any] = {}
    for key, value in settings.items():
        real = ALIASES.get(key, key)
        if real in OWN_KEYS:
            out[real] = value
            continue
        if real not in fields:
            hint = did_you_mean(key, list(fields) + list(ALIASES) + list(OWN_KEYS))
            raise PeftMagicError(f"unknown training setting '{key}'" + (f": {hint}" if hint else ""),
                                 None if hint else "see %peft help train")
        out[real] = coerce_value("train", fields[real], value)
    for key in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps"):
        if key in out and isinstance(out[key], int) and out[key] < 1:
            raise PeftMagicError(f"{key} must be ≥ 1, got {out[key]}")
    if "learning_rate" in out and not out["learning_rate"] > 0:
        raise PeftMagicError(f"lr must be > 0, got {out['learning_rate']}")
    if "num_train_epochs" in out and not out["num_train_epochs"] > 0:
        raise PeftMagicError(f"epochs must be > 0, got {out['num_train_epochs']}")
    return out


# ----------------------------------------------------------------------------- callbacks


class _InterruptToStop:
    """First SIGINT: stop at the next step boundary. Second: stop now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._prev: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _InterruptToStop:
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._prev)


def _make_callbacks(run: Run, interrupt: _InterruptToStop, collator: Any, device: str, sampler: PeakSampler,
                    peft_model: Any, adapter: str, is_adalora: bool):
    seconds_before, tokens_before = run.seconds, run.tokens  # non-zero when resuming
    from transformers import TrainerCallback

    throttle = events.Throttle(rate=4.0)
    window: list[tuple[float, int]] = []
    ema = {"value": None, "n": 0}

    class Progress(TrainerCallback):
        """Turns Trainer's hooks into our events; cheap enough to run every step."""

        t_start = 0.0
        base_step = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t_start = time.perf_counter()
            self.base_step = state.global_step
            run.total_steps = state.max_steps
            window.clear()
            window.append((time.perf_counter(), collator.tokens))
            events.emit("run_start", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter,
                        method=run.method, total_steps=run.total_steps, settings=dict(run.settings),
                        resumed_from=self.base_step or None, warnings=list(run.warnings))

        def _payload(self, state) -> dict[str, Any]:
            now = time.perf_counter()
            elapsed = seconds_before + (now - self.t_start)
            if collator.tokens != window[-1][1]:  # a new batch was seen since the last reading
                window.append((now, collator.tokens))
            while len(window) > 2 and now - window[1][0] > 10.0:  # keep ~10 s of history
                window.pop(0)
            (ta, ka), (tb, kb) = window[0], window[-1]
            tps = (kb - ka) / (tb - ta) if tb > ta else 0.0
            done = state.global_step - self.base_step
            rate = done / (now - self.t_start) if done and now > self.t_start else 0.0
            eta = (state.max_steps - state.global_step) / rate if rate > 0 else None
            mem = reading(device)
            if not mem.kind == "CUDA":
                mem.peak = max(sampler.peak, mem.used)
            run.steps_done = state.global_step
            run.seconds = elapsed
            run.tokens = collator.tokens + tokens_before
            return dict(run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, step=state.global_step,
                        total_steps=state.max_steps, epoch=state.epoch, loss=run.losses[-1][1] if run.losses else None,
                        loss_smooth=ema["value"], lr=run.last_lr, tokens_per_s=tps, elapsed_s=elapsed, eta_s=eta,
                        memory=mem.as_dict(), status="training")

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                loss = float(logs["loss"])
                run.losses.append((state.global_step, loss))
                ema["n"] += 1
                beta = 0.9
                ema["raw"] = beta * ema.get("raw", 0.0) + (1 - beta) * loss
                ema["value"] = ema["raw"] / (1 - beta ** ema["n"])  # bias-corrected, like TensorBoard
            if "learning_rate" in logs:
                run.last_lr = float(logs["learning_rate"])
            if "eval_loss" in logs:
                run.eval_losses.append((state.global_step, float(logs["eval_loss"])))
                events.emit("eval", run_id=run.run_id, step=state.global_step, eval_loss=float(logs["eval_loss"]))

        def on_step_end(self, args, state, control, **kw):
            if throttle.due():  # build the event (memory reading, rates) only when it will be shown
                throttle.offer("progress", **self._payload(state))
            else:
                run.steps_done = state.global_step
            if interrupt.requested and state.global_step < state.max_steps:
                run.status = "interrupted"
                run.message = f"interrupted at step {state.global_step}/{state.max_steps}"
                control.should_training_stop = True
                control.should_save = True  # a checkpoint to resume from (adapter, optimizer, scheduler, rng)
            return control

        def on_train_end(self, args, state, control, **kw):
            throttle.flush()
            events.emit("progress", **self._payload(state))  # the final state, always

    class AdaLora(TrainerCallback):
        """AdaLoRA's rank reallocation, which Trainer never calls by itself."""

        def on_optimizer_step(self, args, state, control, **kw):
            peft_model.base_model.update_and_allocate(state.global_step)

    cbs = [Progress()]
    if is_adalora:
        cbs.append(AdaLora())
    return cbs


# ----------------------------------------------------------------------------- train


def _find_peft(model: Any) -> Any:
    if is_peft_model(model):
        return model
    st = state_for(model)
    if st is not None and st.peft_model is not None:
        return st.peft_model
    raise PeftMagicError("the model has no adapter to train", "attach one first, e.g. %peft lora r=8")


def _runs_dir() -> Path:
    from ..model.builtins import cache_dir

    return cache_dir().parent / "runs"


def _precision(model: Any, device: str) -> dict[str, bool]:
    import torch

    if not device.startswith("cuda"):
        return {}
    dtypes = {p.dtype for p in model.parameters() if p.dtype.is_floating_point}
    if torch.bfloat16 in dtypes or (torch.cuda.is_bf16_supported() and torch.float16 not in dtypes):
        return {"bf16": True}
    return {"fp16": True}


def train(model: Any, data: Any = None, *, tokenizer: Any = None, adapter: str | None = None,
          resume: bool = False, output_dir: str | None = None, **settings: Any) -> Run:
    """Train the active adapter of ``model`` on ``data``; returns the :class:`~peft_magic.state.Run`.

    ``data``: a list of str or dicts, a DataFrame, a ``datasets.Dataset``/``DatasetDict``,
    or a .jsonl/.json/.csv/.txt path (see ``data.py`` for the recognised shapes).
    ``settings``: ``steps``, ``epochs``, ``lr``, ``batch``, ``grad_accum``, ``max_len``,
    ``eval`` (data or a fraction to hold out) and any ``TrainingArguments`` field.
    ``resume=True`` continues this model's last interrupted run from its checkpoint.

    Training errors that the user can act on (bad data, out of memory) raise
    :class:`PeftMagicError` after the model has been made usable again; an interrupt does
    not raise — the run comes back with ``status == "interrupted"``.
    """
    _heavy.ensure()
    peft_model = _find_peft(model)
    st = state_for(peft_model, create=True)
    name = adapter or peft_model.active_adapter
    if isinstance(name, list):
        name = name[0]
    if name not in peft_model.peft_config:
        raise PeftMagicError(f"no adapter '{name}' on this model", f"adapters: {', '.join(peft_model.peft_config)}")
    if adapter and adapter != peft_model.active_adapter:
        peft_model.set_adapter(adapter)
    config = peft_model.peft_config[name]
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    task = str(getattr(config.task_type, "value", config.task_type) or "CAUSAL_LM")
    record = st.adapters.get(name)
    method = record.method if record else peft_type.lower()

    resume_from = None
    if resume:
        prev = next((r for r in reversed(runs()) if r.model_id == st.model_id and r.adapter == name
                     and r.status == "interrupted" and r.run_id in _RESUME), None)
        if prev is None:
            raise PeftMagicError("no interrupted run of this adapter to resume", "start a new run without --resume")
        saved = _RESUME[prev.run_id]
        if data is not None or settings:
            raise PeftMagicError("--resume continues the interrupted run as it was: give no data or settings")
        args = dict(saved["args"])
        examples, eval_examples, tok = saved["examples"], saved["eval"], saved["tokenizer"]
        resume_from = saved["checkpoint"]
        run = prev
    else:
        args = normalize_args(settings)
        if data is None:
            raise PeftMagicError("which data?", "data=VARIABLE or a .jsonl/.json/.csv/.txt path")
        tok = tokenizer
        max_len = int(args.pop("max_len", 512))
        eval_spec = args.pop("eval", None)
        args.pop("data", None)
        from . import data as data_mod

        label_names = None
        base_cfg = getattr(peft_model.get_base_model(), "config", None)
        if task == "SEQ_CLS" and base_cfg is not None and getattr(base_cfg, "id2label", None):
            names = [base_cfg.id2label[i] for i in sorted(base_cfg.id2label)]
            if not all(n.startswith("LABEL_") for n in names):
                label_names = names
        examples = data_mod.tokenize(data, tok, max_len=max_len, task=task, label_names=label_names)
        eval_examples = None
        if isinstance(eval_spec, float) and not isinstance(eval_spec, bool):
            examples, eval_examples = data_mod.split_eval(examples, eval_spec)
        elif eval_spec is not None:
            eval_examples = data_mod.tokenize(eval_spec, tok, max_len=max_len, task=task, split="validation",
                                              label_names=examples.label_names)
        args.setdefault("learning_rate", default_lr(peft_type))
        args.setdefault("per_device_train_batch_size", 8)
        if "max_steps" not in args and "num_train_epochs" not in args:
            args["num_train_epochs"] = 1.0
        run = Run(run_id=next(_RUN_IDS), model_id=st.model_id, adapter=name, method=method,
                  settings={k: v for k, v in {**settings}.items()}, total_steps=0, started_at=time.time())
        run.output_dir = output_dir or str(_runs_dir() / f"run-{run.run_id}-{time.strftime('%Y%m%d-%H%M%S')}")
        add_run(run)
    return _run_trainer(peft_model, st, run, name, peft_type, task, args, examples, eval_examples, tok, resume_from)


def _run_trainer(peft_model: Any, st: Any, run: Run, name: str, peft_type: str, task: str, args: dict[str, Any],
                 examples: Any, eval_examples: Any, tok: Any, resume_from: str | None) -> Run:
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .data import Collator

    device = device_of(peft_model)
    if device == "cpu":
        from ..model.load import disable_cpu_4bit_repacking

        disable_cpu_4bit_repacking(peft_model)  # a no-op unless a 4-bit model ran inference first
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    collator = Collator(pad_id, classify=(task == "SEQ_CLS"))
    n_steps_hint = args.get("max_steps") or math.ceil(
        len(examples) / (args["per_device_train_batch_size"] * args.get("gradient_accumulation_steps", 1))
        * float(args.get("num_train_epochs", 1)))
    is_adalora = peft_type == "ADALORA"
    if is_adalora:
        total = int(n_steps_hint)
        cfg = peft_model.peft_config[name]
        if cfg.tinit >= total - cfg.tfinal:
            raise PeftMagicError(f"adalora's schedule (tinit={cfg.tinit}, tfinal={cfg.tfinal}) does not fit in "
                                 f"{total} steps", "train for more steps or attach with smaller tinit/tfinal")
        cfg.total_step = total
        peft_model.base_model.rankallocator.set_total_step(total)

    targs = dict(
        output_dir=run.output_dir, report_to="none", disable_tqdm=True, save_strategy="no",
        logging_steps=1 if n_steps_hint <= 2000 else max(1, int(n_steps_hint) // 1000), logging_first_step=True,
        remove_unused_columns=False, label_names=["labels"], train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, use_cpu=device == "cpu", save_only_model=False,
        **_precision(peft_model, device),
    )
    if eval_examples is not None:
        targs.update(eval_strategy="steps", eval_steps=max(1, int(n_steps_hint) // 5),
                     per_device_eval_batch_size=args.get("per_device_train_batch_size", 8))
    targs.update(args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            training_args = TrainingArguments(**targs)
    except (ValueError, TypeError) as e:
        raise PeftMagicError(f"invalid training settings: {first_line(e)}") from None

    interrupt = _InterruptToStop()
    run.status = "running"
    run.message = None
    if resume_from is None:
        _warn_if_too_big(peft_model, st, run, args, examples)
    sampler = PeakSampler(device, interval=0.1)
    trainer = None
    error: tuple[str, str] | None = None
    use_cache = getattr(getattr(peft_model, "config", None), "use_cache", None)
    was_training = peft_model.training
    with contextlib.ExitStack() as stack:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(model=peft_model, args=training_args, train_dataset=examples,
                              eval_dataset=eval_examples, data_collator=collator, processing_class=None,
                              callbacks=_make_callbacks(run, interrupt, collator, device, sampler, peft_model,
                                                        name, is_adalora))
        for cb in (PrinterCallback, ProgressCallback):  # we own the display
            trainer.remove_callback(cb)
        if peft_model.peft_config[name].is_prompt_learning and task == "CAUSAL_LM" and hasattr(
                trainer, "_loss_shifts_labels"):
            # Virtual tokens come first, so every real label is a prediction target.
            trainer._loss_shifts_labels = False
        if use_cache is not None:
            peft_model.config.use_cache = False
        stack.enter_context(sampler)
        stack.enter_context(interrupt)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except KeyboardInterrupt:
            run.status = "interrupted"
            run.message = f"stopped immediately at step {run.steps_done}/{run.total_steps} (second interrupt)"
        except Exception as e:  # noqa: BLE001 — classified below, never swallowed silently
            error = _classify(e, run, args)
            traceback.clear_frames(e.__traceback__)
            del e
    # Out of the except blocks: the exception (and its frames) are gone; now drop the rest.
    if use_cache is not None:
        peft_model.config.use_cache = use_cache
    checkpoint = _latest_checkpoint(run.output_dir) if run.status == "interrupted" else None
    if error is None and run.status == "running":
        run.status = "completed"
    run.steps_done = trainer.state.global_step if trainer is not None else run.steps_done
    run.total_steps = trainer.state.max_steps if trainer is not None and trainer.state.max_steps else run.total_steps
    run.peak_memory = sampler.peak
    run.memory_kind = reading(device).kind
    run.final_loss = run.losses[-1][1] if run.losses else None
    trainer = None
    peft_model.zero_grad(set_to_none=True)
    if not was_training:
        peft_model.eval()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if run.status == "interrupted" and checkpoint:
        _RESUME[run.run_id] = {"args": args, "examples": examples, "eval": eval_examples, "tokenizer": tok,
                               "checkpoint": checkpoint}
    elif run.run_id in _RESUME and run.status == "completed":
        del _RESUME[run.run_id]
    if error is not None:
        run.status, run.message = error
    events.emit("run_end", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, status=run.status,
                step=run.steps_done, total_steps=run.total_steps, loss=run.final_loss, elapsed_s=run.seconds,
                peak_memory=run.peak_memory, message=run.message)
    if error is not None:
        raise PeftMagicError(run.message or "training failed")
    return run


def _warn_if_too_big(peft_model: Any, st: Any, run: Run, args: dict[str, Any], examples: Any) -> None:
    """Before starting, ask the memory plan whether the run fits; record a warning if not.

    The estimate is for the longest batch the data can produce (what decides an OOM),
    costs ~0.2 s on a meta-device trace, and never stops the run: estimates can be wrong,
    and the OOM handler is there if it really does not fit.
    """
    from ..planning.plan import check_fit

    longest = max((len(r["input_ids"]) for r in examples.rows), default=1)
    seq = -(-longest // 8) * 8
    verdict = check_fit(peft_model, batch=int(args.get("per_device_train_batch_size", 8)), seq=seq,
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


def _is_oom(e: BaseException) -> bool:
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(e, MemoryError) or (oom_types and isinstance(e, oom_types)):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def _classify(e: BaseException, run: Run, args: dict[str, Any]) -> tuple[str, str]:
    """(status, one-line message) for an exception raised inside ``trainer.train``."""
    where = f"at step {run.steps_done}/{run.total_steps}"
    if _is_oom(e):
        batch = args.get("per_device_train_batch_size", 8)
        tips = []
        if batch > 1:
            tips.append(f"batch={max(1, batch // 2)} grad_accum={2 * args.get('gradient_accumulation_steps', 1)}")
        tips.append("a smaller max_len")
        if not args.get("gradient_checkpointing"):
            tips.append("gradient_checkpointing=True")
        tips.append("loading the model in 4-bit (%peft load … --4bit)")
        peak = f" (peak {fmt_bytes(run.peak_memory)})" if run.peak_memory else ""
        return "oom", (f"out of memory {where}{peak}; the model and adapter are intact — try "
                       + ", ".join(tips))
    return "error", f"training failed {where}: {type(e).__name__}: {first_line(e)}"


def run_table() -> list[dict[str, Any]]:
    """Every run of this kernel as plain dicts (for code and ``%peft runs``)."""
    return [asdict(r) for r in runs()]


class RunsReport:
    """Every run of this kernel (``%peft runs``): a table and the loss curves together."""

    def __init__(self, run_list: list[Run]) -> None:
        self.runs = run_list

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, i: int) -> Run:
        return self.runs[i]

    def rows(self) -> list[list[str]]:
        out = []
        for r in self.runs:
            first = f"{r.losses[0][1]:.4f}" if r.losses else "–"
            final = f"{r.final_loss:.4f}" if r.final_loss is not None else "–"
            settings = " ".join(f"{k}={v}" for k, v in r.settings.items() if k not in ("data", "eval"))
            peak = f"{fmt_bytes(r.peak_memory)} {r.memory_kind or ''}".strip() if r.peak_memory else "–"
            saved = ", ".join(r.saved_to) if r.saved_to else ""
            out.append([str(r.run_id), f"{r.method} '{r.adapter}'", settings, f"{r.steps_done}/{r.total_steps}",
                        first, final, peak, f"{r.seconds:.1f} s", r.status, saved])
        return out

    HEADERS = ["run", "adapter", "settings", "steps", "first loss", "final loss", "peak memory", "time", "status",
               "saved to"]

    def __repr__(self) -> str:
        if not self.runs:
            return "no training runs in this kernel yet — %peft train data=… starts one"
        rows = [self.HEADERS] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADERS))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def _repr_html_(self) -> str:
        from ..svg import line_chart
        from ..display.html import table, wrap

        if not self.runs:
            return wrap("<div class='pm-dim'>no training runs in this kernel yet</div>")
        chart = line_chart([(f"run {r.run_id}: {r.method} '{r.adapter}'", r.losses) for r in self.runs],
                           smooth_first=False, width=520, height=160)
        return wrap(table(self.HEADERS, self.rows()) + chart)


def runs_report() -> RunsReport:
    """All runs of this kernel, oldest first."""
    return RunsReport(runs())
