"""What one training run needs — its data tokenized, its settings checked, its record —
whether it starts now or continues one that stopped.

Three ways a run begins: new (:func:`new_job`); continuing an interrupted run of this
kernel from the checkpoint it kept in memory (``--resume`` with no data:
:func:`resumed_in_kernel`); and continuing from a checkpoint on disk, in this kernel or a
new one after a crash or a disconnect (``--resume`` with the same cells re-run:
:func:`resumed_from_disk`), which refuses in one line when the base model, the method's
settings, the data or the training settings are not those of the checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import PeftMagicError
from ..model.properties import label_names
from ..peft_methods.behaviour import default_lr
from ..state import Run, add_run, next_run_id, resume_record, runs
from ..tasks import data as data_mod
from ..tasks.families import describe, family
from . import checkpoints
from .args import DEFAULT_BATCH, normalize_args
from .preference import request as preference_request

DEFAULT_MAX_LEN = 512


@dataclass
class Job:
    """Everything one run needs, whether new or resumed."""

    peft_model: Any
    st: Any
    run: Run
    adapter: str
    peft_type: str
    task: str
    args: dict[str, Any]
    examples: Any
    eval_set: Any  # inference.evaluate.EvalSet, or None without eval=
    tokenizer: Any
    resume_from: str | None = None
    profile: Any = None  # a profiling.ProfileRequest: profile a window of steps
    keep_run: bool = True  # False (%peft profile): the run is not kept in runs(), nor resumable
    autosave: Any = None  # checkpoints.Autosave: when and where the run writes checkpoints
    fingerprints: Any = None  # checkpoints.fingerprints: what a resume must find unchanged

    @property
    def eval_examples(self) -> Any:
        return self.eval_set.examples if self.eval_set is not None else None


def _label_names(peft_model: Any, task: str) -> list[str] | None:
    """A classifier's own label names (not transformers' placeholder LABEL_0 …)."""
    return label_names(peft_model) if task in ("SEQ_CLS", "TOKEN_CLS") else None


def _name_labels(peft_model: Any, task: str, examples: Any) -> None:
    """A head with placeholder names (LABEL_0 …) takes the data's label names, so evaluation
    and prediction speak in them ("PER", not "LABEL_1")."""
    names = examples.label_names
    cfg = getattr(peft_model.get_base_model(), "config", None)
    if _label_names(peft_model, task) or not names or cfg is None or \
            int(getattr(cfg, "num_labels", 0) or 0) != len(names):
        return
    cfg.id2label = dict(enumerate(names))
    cfg.label2id = {n: i for i, n in enumerate(names)}


def _check_labels(peft_model: Any, task: str, examples: Any) -> None:
    """A classifier head must have room for every label the data has."""
    if task not in ("SEQ_CLS", "TOKEN_CLS"):
        return
    n = int(getattr(getattr(peft_model.get_base_model(), "config", None), "num_labels", 0) or 0)
    names = examples.label_names
    if names is None:
        ids = [r["labels"] for r in examples.rows] if task == "SEQ_CLS" else \
            [x for r in examples.rows for x in r["labels"] if x != -100]
        need = max(ids, default=-1) + 1
    else:
        need = len(names)
    if n and need > n:
        shown = f" ({', '.join(names)})" if names else ""
        flag = ",".join(names) if names else str(need)
        head = "token-cls" if task == "TOKEN_CLS" else "seq-cls"
        raise PeftMagicError(f"the model's head has {n} labels but the data has {need}{shown}",
                             f"load it with --task {head} --labels {flag}")


def _data_and_eval(data: Any, eval_spec: Any, task: str) -> tuple[list[Any], str, list[Any] | None, str | None]:
    """Training records and held-out records (a fraction of the data, or other data)."""
    records, fp = data_mod.to_records(data)
    if isinstance(eval_spec, float) and not isinstance(eval_spec, bool):
        train, held = data_mod.split_records(records, eval_spec)
        return train, f"{fp}:train:{eval_spec}", held, f"{fp}:eval:{eval_spec}"
    if eval_spec is not None:
        held, efp = data_mod.to_records(eval_spec, "validation")
        return records, fp, held, efp
    return records, fp, None, None


def new_job(peft_model: Any, st: Any, adapter: str, peft_type: str, task: str, method: str, data: Any,
            tokenizer: Any, settings: dict[str, Any], keep_run: bool = True, autosave: bool = True,
            folder: str | None = None, register: bool = True) -> Job:
    """A new run: settings checked, data tokenized (cached), the record started (and added
    to ``runs()`` unless ``register`` is False or the run is not kept)."""
    from ..inference.evaluate import build_eval_set

    if data is None:
        raise PeftMagicError("which data?", "data=VARIABLE or a .jsonl/.json/.csv/.txt path")
    if tokenizer is None:
        raise PeftMagicError("training needs a tokenizer and none was found",
                             "load the model with %peft load, or pass --tokenizer VAR")
    family(task)
    records, fp, held, held_fp = _data_and_eval(data, settings.get("eval"), task)
    # preference data or objective=: TRL's trainer for the objective (training/preference.py)
    args = normalize_args(settings, preference_request(records, settings, task, held))
    save = checkpoints.plan(args, adapter, autosave and keep_run, folder)
    max_len = int(args.pop("max_len", DEFAULT_MAX_LEN))
    stride = args.pop("stride", None)
    args.pop("eval", None)
    args.pop("data", None)
    names = _label_names(peft_model, task) or data_mod.class_label_names(data, task)
    examples = data_mod.tokenize_records(records, fp, tokenizer, max_len=max_len, task=task, label_names=names,
                                         stride=stride)
    _check_labels(peft_model, task, examples)
    _name_labels(peft_model, task, examples)
    eval_set = None if held is None else build_eval_set(held, held_fp, tokenizer, task, max_len=max_len,
                                                        label_names=examples.label_names, stride=stride)
    args.setdefault("learning_rate", default_lr(peft_type, method))
    args.setdefault("per_device_train_batch_size", DEFAULT_BATCH)
    run = Run(run_id=next_run_id(), model_id=st.model_id, adapter=adapter, method=method, settings=dict(settings),
              total_steps=0, started_at=time.time(), task=task, data=describe(examples))
    run.learning_rate = float(args["learning_rate"])
    if eval_set is not None:
        run.data += f" · eval on {len(held):,} held-out examples"
    run.output_dir = str(save.folder)
    job = Job(peft_model, st, run, adapter, peft_type, task, args, examples, eval_set, tokenizer,
              keep_run=keep_run, autosave=save)
    if save.enabled:
        job.fingerprints = checkpoints.fingerprints(peft_model, adapter, examples, job.eval_examples,
                                                    dict(args, max_len=max_len, stride=stride))
    if keep_run and register:
        add_run(run)
    return job


def resumed_in_kernel(peft_model: Any, st: Any, adapter: str, peft_type: str, task: str) -> Job | None:
    """The last interrupted run of this adapter in this kernel, as it was (None: there is none)."""
    prev = next((r for r in reversed(runs()) if r.model_id == st.model_id and r.adapter == adapter
                 and r.status == "interrupted" and resume_record(r.run_id) is not None), None)
    if prev is None:
        return None
    saved = resume_record(prev.run_id)
    return Job(peft_model, st, prev, adapter, peft_type, task, dict(saved["args"]), saved["examples"],
               saved["eval_set"], saved["tokenizer"], saved["checkpoint"], autosave=saved.get("autosave"),
               fingerprints=saved.get("fingerprints"))


def resumed_from_disk(peft_model: Any, st: Any, adapter: str, peft_type: str, task: str, method: str, data: Any,
                      tokenizer: Any, settings: dict[str, Any], where: str | None, processes: int) -> Job:
    """Continue the newest checkpoint of this adapter on disk (``where``: a checkpoint, a run
    folder, or a folder of runs): the cells re-run in a new kernel give the same model,
    adapter, data and settings; anything else is refused in one line, nothing changed."""
    ckpt = checkpoints.find(where or settings.get("save_to"), adapter)
    marker = checkpoints.read_marker(ckpt)
    if int(marker.get("processes", 1)) != processes:
        n = int(marker.get("processes", 1))
        raise PeftMagicError(f"cannot resume: the checkpoint was written by {n} process{'es' if n > 1 else ''}, "
                             f"this run would use {processes}",
                             f"resume with --processes {n}" if n > 1 else "resume without --processes / --gpus")
    probe = dict(settings, save_to=str(ckpt.parent.parent))
    job = new_job(peft_model, st, adapter, peft_type, task, method, data, tokenizer, probe, folder=str(ckpt.parent),
                  register=False)
    checkpoints.check(marker, job.fingerprints, method, ckpt)
    checkpoints.discard_incomplete(ckpt.parent)
    checkpoints.restore(job.run, marker)
    job.run.output_dir = str(ckpt.parent)
    job.resume_from = str(ckpt)
    add_run(job.run)
    return job
