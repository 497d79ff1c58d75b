"""``%peft train`` settings → ``transformers.TrainingArguments``, checked key by key.

Users type short names (``steps``, ``lr``, ``batch``) and any ``TrainingArguments``
field; every key is checked against the real dataclass (with did-you-mean) and its value
converted to the field's type before a run starts, so a typo is one line, not a
``TypeError`` after the model was prepared. The defaults we choose for a notebook run
(logging every step, no checkpoints unless interrupted, our own display) are in
:func:`trainer_arguments`.
"""

from __future__ import annotations

import math
from typing import Any

from .. import stack
from ..errors import PeftMagicError, did_you_mean, first_line
from ..peft_methods.coerce import coerce_value
from ..peft_methods.fields import config_fields
from . import loss_path

#: short names a user types → TrainingArguments fields (and ``total_steps``, ours: see below)
ALIASES = {
    "steps": "total_steps", "max_steps": "total_steps", "epochs": "num_train_epochs", "lr": "learning_rate",
    "batch": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps", "accum": "gradient_accumulation_steps",
    "warmup": "warmup_steps", "wd": "weight_decay", "scheduler": "lr_scheduler_type",
    "eval_batch": "per_device_eval_batch_size", "checkpointing": "gradient_checkpointing",
    "optim": "optim", "seed": "seed",
    "compile": "torch_compile", "compile_backend": "torch_compile_backend", "compile_mode": "torch_compile_mode",
}
#: settings that are ours, not TrainingArguments fields. ``total_steps`` is the run's step
#: budget under one name from the user's ``steps=`` (or ``max_steps=``) to the display; only
#: :func:`trainer_arguments` hands it to transformers, as ``max_steps``. ``fused_loss``: which
#: loss the run computes (training/loss_path.py).
OWN_KEYS = ("max_len", "eval", "data", "stride", "total_steps", "save_every", "save_to", "keep", "fused_loss")
#: a preference run's objective (``objective=dpo``): its own settings are checked against its
#: TRL config (``training/preference.py``), and it travels in the args as a ``Preference``
OBJECTIVE = "objective"
DEFAULT_BATCH = 8


def _training_fields() -> dict[str, Any]:
    from transformers import TrainingArguments

    return config_fields(TrainingArguments)


def normalize_args(settings: dict[str, Any], preference: Any = None) -> dict[str, Any]:
    """Resolve aliases and check every key against TrainingArguments (with did-you-mean).

    ``preference`` (a ``training.preference.Preference``, for preference data or
    ``objective=``): keys that are not training settings are checked against the
    objective's own (``beta=`` …), and the checked objective is ``out["objective"]``."""
    fields = _training_fields()
    out: dict[str, Any] = {}
    own = preference.fields() if preference is not None else {}
    chosen: dict[str, Any] = {}
    for key, value in settings.items():
        real = ALIASES.get(key, key)
        if real in OWN_KEYS:
            out[real] = loss_path.setting(value) if real == "fused_loss" else value
            continue
        if real == OBJECTIVE and preference is not None:
            continue
        if real not in fields:
            if real in own:  # beta=, loss_type=, …: the objective's own (its TRL config's)
                chosen[real] = value
                continue
            if preference is not None:
                raise preference.unknown(key, list(fields) + list(ALIASES) + list(OWN_KEYS))
            hint = did_you_mean(key, list(fields) + list(ALIASES) + list(OWN_KEYS))
            raise PeftMagicError(f"unknown training setting '{key}'" + (f": {hint}" if hint else ""),
                                 None if hint else "see %peft help train")
        out[real] = coerce_value("train", fields[real], value)
    for key in ("total_steps", "per_device_train_batch_size", "gradient_accumulation_steps"):
        if key in out and isinstance(out[key], int) and out[key] < 1:
            raise PeftMagicError(f"{key} must be ≥ 1, got {out[key]}")
    if "learning_rate" in out and not out["learning_rate"] > 0:
        raise PeftMagicError(f"lr must be > 0, got {out['learning_rate']}")
    if "num_train_epochs" in out and not out["num_train_epochs"] > 0:
        raise PeftMagicError(f"epochs must be > 0, got {out['num_train_epochs']}")
    if preference is not None:
        out[OBJECTIVE] = preference.check(chosen)
    return out


def precision(model: Any, device: str) -> dict[str, bool]:
    """bf16 / fp16 mixed precision on GPUs (what the weights are in, else what the GPU has)."""
    import torch

    if not device.startswith("cuda"):
        return {}
    dtypes = {p.dtype for p in model.parameters() if p.dtype.is_floating_point}
    if torch.bfloat16 in dtypes or (torch.cuda.is_bf16_supported() and torch.float16 not in dtypes):
        return {"bf16": True}
    return {"fp16": True}


def total_steps(args: dict[str, Any], n_examples: int, processes: int = 1) -> int:
    """The run's step budget — computed here once per run, then read everywhere as
    ``args["total_steps"]`` / ``run.total_steps``: the user's ``steps``, else the steps of
    ``epochs`` (default 1) the way the Trainer counts them (batches per process, then
    optimizer steps per epoch, rounded up), so the Trainer gets exactly this number."""
    if args.get("total_steps"):
        return int(args["total_steps"])
    per_process = math.ceil(n_examples / max(1, processes))
    batches = math.ceil(per_process / args.get("per_device_train_batch_size", DEFAULT_BATCH))
    accum = args.get("gradient_accumulation_steps", 1)
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    return max(1, math.ceil(float(args.get("num_train_epochs", 1)) * per_epoch))


def trainer_arguments(args: dict[str, Any], *, output_dir: str, device: str, model: Any,
                      has_eval: bool, label_names: tuple[str, ...] = ("labels",)) -> Any:
    """The ``TrainingArguments`` of a notebook run: our display, logging every step (thinned
    for very long runs), length-grouped batches, no checkpoints unless interrupted; the step
    budget ``args["total_steps"]`` becomes transformers' ``max_steps`` here and nowhere else."""
    from transformers import TrainingArguments

    args = dict(args)
    steps = int(args.pop("total_steps"))
    preference = args.pop(OBJECTIVE, None)
    targs = dict(
        output_dir=output_dir, report_to="none", disable_tqdm=True, save_strategy="no",
        logging_steps=1 if steps <= 2000 else max(1, steps // 1000), logging_first_step=True,
        remove_unused_columns=False, label_names=list(label_names), train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, use_cpu=device == "cpu", save_only_model=False,
        **precision(model, device),
    )
    if has_eval:
        targs.update(eval_strategy="steps", eval_steps=max(1, steps // 5),
                     per_device_eval_batch_size=args.get("per_device_train_batch_size", DEFAULT_BATCH))
    targs.update({k: v for k, v in args.items() if k != "fused_loss"})  # ours (training/loss_path.py)
    targs["max_steps"] = steps
    config = TrainingArguments
    if preference is not None:  # TRL's config for the objective, with its settings
        config, targs = preference.config(targs)
    try:
        # quiet: TrainingArguments logs notices no one can act on in a notebook (compile=True
        # on a CPU or a T4: "the speedups for torchdynamo mostly come with GPU Ampere or higher")
        with stack.quiet(streams=False):
            return config(**targs)
    except (ValueError, TypeError) as e:
        raise PeftMagicError(f"invalid training settings: {first_line(e)}") from None
