"""Preference tuning — DPO, IPO, ORPO, SimPO, KTO — on TRL's trainers, inside peft_magic's run.

``%peft train data=prefs objective=dpo`` is an ordinary run (``training/run.py``): the same
callbacks (progress events, the stop button → a checkpoint at a step boundary, ``--resume``),
the OOM handler, the memory sampler, the ``Run`` record, the status bar and ``%peft runs``.
Only the trainer differs: TRL's, for the objective, built here. The losses are TRL's; the
readouts (loss, rewards chosen / rejected, margin, preference accuracy) are the values TRL
logs, never recomputed (``readouts``).

What is ours around TRL, each for a reason:

* **The reference policy is the base model with the adapter switched off**, and no second
  model is in memory. TRL 1.16, handed a ``PeftModel`` without ``ref_model``, copies the adapter
  named ``"default"`` into a frozen ``"ref"`` adapter (and fails when no adapter has that
  name: ``%peft compare`` names its candidates otherwise) — a reference that ``%peft evaluate``
  (rewards of the adapter against the base) would not share, and that a resumed run would take
  from the half-trained adapter. So we hand TRL ``ref_model=``:class:`AdapterOff`, a view of the
  user's own model that runs it with its adapters disabled (no parameters of its own).
* **The user's objects are given back as they were**: TRL switches dropout off, patches the
  base model's ``forward`` with its fused LM head, tags the model and sets the tokenizer's pad
  token; :class:`Borrowed` records each and puts it back when training ends (or fails).
* **Settings** are checked against the objective's TRL config dataclass (did-you-mean over
  it and ``TrainingArguments``), and the notebook defaults of every run stay (no gradient
  checkpointing or bf16 unless asked, logging every step, our display); TRL's telemetry
  ping is off (no network at run time).
* The **tokens/s** readout counts the real tokens of TRL's own batches (:class:`Counting`).
* **On the CPU, TRL's fused LM head scores only the positions that have a target**
  (:func:`_targets_only`), as it already does on CUDA: the prompt's positions, most of a
  preference sequence, get no logits. The same losses; a DPO step on SmolLM2 0.77× plain
  TRL's on the same CPU, and 2.8 GB against 3.5 GB at the peak (``bench/bench_preference.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError, did_you_mean, first_line
from ..stack import stack_warnings_off
from ..peft_methods.coerce import coerce_value
from ..peft_methods.fields import config_fields
from ..tasks.preference import DEFAULT_OBJECTIVE, OBJECTIVES, SHAPES, Objective, detect_preference, objective_info

#: objective → (module, trainer class, config class, the settings the objective stands for)
TRL_CLASSES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "dpo": ("trl.trainer.dpo_trainer", "DPOTrainer", "DPOConfig", {}),
    "ipo": ("trl.trainer.dpo_trainer", "DPOTrainer", "DPOConfig", {"loss_type": ["ipo"]}),
    "kto": ("trl.trainer.kto_trainer", "KTOTrainer", "KTOConfig", {}),
    # ORPO and CPO (whose loss_type="simpo", cpo_alpha=0 is SimPO) are in trl.experimental in 1.16
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", {}),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", {"loss_type": "simpo", "cpo_alpha": 0.0}),
}
#: TRL config fields that are not the user's to set here: the model is already loaded, and
#: the length limit is ``max_len`` as in every run
NOT_SETTINGS = {"model_init_kwargs", "trust_remote_code", "max_length", "pad_token", "padding_value",
                "is_encoder_decoder", "generate_during_eval", "dataset_num_proc"}
#: what TRL logs → the readout's name (train logs as is, eval logs with ``eval_`` in front)
READOUTS = {"rewards/chosen": "chosen", "rewards/rejected": "rejected", "rewards/margins": "margin",
            "rewards/accuracies": "accuracy"}


def readouts(logs: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The preference readouts TRL logged (``rewards/margins`` → ``margin`` …), as logged."""
    return {name: float(logs[prefix + key]) for key, name in READOUTS.items() if prefix + key in logs}


@contextlib.contextmanager
def _trl_quiet():
    """TRL's warnings (the experimental-module notice, deprecations), its loggers below
    ERROR and the ``datasets.map`` progress bars of its tokenizing, for one call only."""
    from datasets.utils import logging as ds_logging

    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    logger = logging.getLogger("trl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"trl(\.|$)")
            warnings.filterwarnings("ignore", message=r".*TRL_EXPERIMENTAL_SILENCE")
            yield
    finally:
        logger.setLevel(level)
        if bars:
            ds_logging.enable_progress_bar()


@contextlib.contextmanager
def _targets_only():
    """TRL's fused LM head, on the CPU too, runs only on the positions with a target.

    Why: TRL 1.16's fused head (``model(..., labels=…, fused_lm_head=True)``, which DPO, IPO
    and KTO call for the policy and the reference) gathers the positions whose label is not
    -100 only where ``trl.trainer.utils._use_triton`` says yes (CUDA / XPU with Triton), and
    elsewhere projects every position through the vocabulary-sized head and masks the
    result, so that compiled backends (Neuron) keep one tile shape. Our CPU runs are eager:
    nothing recompiles, and the prompt, which has no target, is most of a preference
    sequence (SmolLM2's chat template with its system prompt: ~30 of ~40 tokens). Gathering
    first is the same arithmetic on fewer rows: DPO on SmolLM2 + LoRA, 4 pairs a step, one
    thread: 13.7 s against 19.3 s for 4 steps, the same losses to 6 digits; on the
    benchmark's longer pairs 0.77× plain TRL's step time (``bench/bench_preference.py``).
    For this run only; a TRL without that switch trains as it would."""
    import sys

    utils = sys.modules.get("trl.trainer.utils")
    decide = getattr(utils, "_use_triton", None)
    if not callable(decide):
        yield
        return

    def compact(device: Any) -> bool:
        return getattr(device, "type", None) == "cpu" or decide(device)

    utils._use_triton = compact
    try:
        yield
    finally:
        utils._use_triton = decide


def _classes(name: str) -> tuple[type, type]:
    module, trainer, config, _ = TRL_CLASSES[name]
    try:
        with _trl_quiet():
            mod = importlib.import_module(module)
    except ImportError:
        raise PeftMagicError("preference tuning needs TRL, which is not installed",
                             'pip install "trl>=1.16"  (or peft_magic[prefs])') from None
    return getattr(mod, trainer), getattr(mod, config)


# ----------------------------------------------------------------------------- settings


@dataclass
class Preference:
    """One preference run's objective and its checked settings (kept in the run's ``args``,
    so ``--resume`` continues with the same objective)."""

    info: Objective
    shape: str  # the training data's: "paired" | "unpaired"
    settings: dict[str, Any] = field(default_factory=dict)  # the user's, checked against TRL's config

    @property
    def name(self) -> str:
        return self.info.name

    def fields(self) -> dict[str, Any]:
        """The objective's own settings: its TRL config's fields beyond ``TrainingArguments``."""
        from transformers import TrainingArguments

        base = config_fields(TrainingArguments)
        return {k: f for k, f in config_fields(_classes(self.name)[1]).items()
                if k not in base and k not in NOT_SETTINGS}

    def check(self, settings: dict[str, Any]) -> Preference:
        """Coerce the user's objective settings; one line for a setting the objective fixes."""
        own = self.fields()
        fixed = TRL_CLASSES[self.name][3]
        out = {}
        for key, value in settings.items():
            value = coerce_value(self.name, own[key], value)
            if key in fixed and value != fixed[key] and [value] != fixed[key]:
                raise PeftMagicError(f"objective={self.name} sets {key}={fixed[key]!r}",
                                     f"leave {key} out" + (f", or use objective=dpo with {key}=…"
                                                           if TRL_CLASSES[self.name][1] == "DPOTrainer" else ""))
            out[key] = value
        self.settings = out
        return self

    def unknown(self, key: str, training_fields: list[str]) -> PeftMagicError:
        """The one line for a key that is neither a training setting nor this objective's."""
        hint = did_you_mean(key, training_fields + list(self.fields()))
        return PeftMagicError(f"unknown setting '{key}' for {self.info.title} training" + (f": {hint}" if hint else ""),
                              None if hint else f"see %peft help train; {self.name}'s own settings are TRL's "
                                                f"{TRL_CLASSES[self.name][2]} fields (beta=, …)")

    # -- the config and the trainer

    def config(self, targs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
        """TRL's config class and its arguments: a notebook run's (``args.trainer_arguments``)
        with this objective's settings, and TRL's own defaults where they differ from a
        supervised run's put back (gradient checkpointing and bf16 off unless asked)."""
        cls = _classes(self.name)[1]
        out = dict(targs)
        # TRL's configs turn checkpointing on by default; a notebook run has it only when asked
        # (transformers ≥ 5.25 calls it activation_checkpointing, the old name a deprecated alias)
        asked = bool(out.pop("gradient_checkpointing", False) or out.pop("activation_checkpointing", False))
        new_name = "activation_checkpointing" in {f.name for f in dataclasses.fields(cls)}
        out["activation_checkpointing" if new_name else "gradient_checkpointing"] = asked
        if not out.get("fp16"):
            out.setdefault("bf16", False)
        out["beta"] = self.info.beta  # TRL's default but SimPO's (tasks/preference.py)
        out.update(TRL_CLASSES[self.name][3])
        out.update(self.settings)
        # TRL's datasets have no input_ids column to group lengths by; KTO pairs each completion with
        # its batch neighbour's for the KL estimate, so it reads the data in order (TRL's requirement)
        out["train_sampling_strategy"] = "sequential" if self.name == "kto" else "random"
        out["remove_unused_columns"] = self.name in ("dpo", "ipo", "kto")
        return cls, out

    def trainer(self, job: Any, training_args: Any, counter: Any, callbacks: list[Any]) -> Any:
        """TRL's trainer for the objective on the job's model and data, with our callbacks."""
        from datasets import Dataset

        examples, eval_set = job.examples, job.eval_set
        job.run.objective = self.name
        training_args.max_length = examples.max_len  # TRL cuts sequences where our tokenizing counted them cut
        trainer_cls = _ours(_classes(self.name)[0])
        kwargs: dict[str, Any] = {}
        if self.info.reference:
            kwargs["ref_model"] = adapter_off(job.peft_model)
        borrowed = Borrowed(job.peft_model, job.tokenizer)
        try:
            with _trl_quiet(), stack_warnings_off():
                trainer = trainer_cls(model=job.peft_model, args=training_args, processing_class=job.tokenizer,
                                      train_dataset=Dataset.from_list(examples.records),
                                      eval_dataset=Dataset.from_list(eval_set.examples.records) if eval_set else None,
                                      callbacks=callbacks, **kwargs)
        except (ValueError, TypeError, NotImplementedError, KeyError) as e:
            borrowed.restore()
            raise PeftMagicError(f"{self.info.title} cannot train this: {first_line(e)}") from None
        except BaseException:
            borrowed.restore()
            raise
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for cb in (PrinterCallback, ProgressCallback):  # we own the display
            trainer.remove_callback(cb)
        trainer._peft_magic_borrowed = borrowed
        trainer.data_collator = Counting(trainer.data_collator, counter)
        return trainer


def request(records: list[Any], settings: dict[str, Any], task: str = "CAUSAL_LM",
            held: list[Any] | None = None) -> Preference | None:
    """A preference run when ``objective=`` is given or the data is preference-shaped (the
    shape picks the objective: pairs → dpo, labelled completions → kto); None otherwise.
    ``held``: the ``eval=`` records, which must be preference data the objective reads too.
    Reads only the first record of each: every row is checked when it is tokenized."""
    name = settings.get("objective")
    if task != "CAUSAL_LM":
        if name is not None:
            raise PeftMagicError(f"objective={name} tunes a causal language model's preferences; this model is "
                                 f"a {task} model", "load a causal LM (the default task of %peft load)")
        return None
    shape = detect_preference(records) if records else None
    if name is None and shape is None:
        return None
    info = objective_info(name or DEFAULT_OBJECTIVE[shape])
    if shape is None:
        raise PeftMagicError(f"objective={info.name} trains on preference data, and this data is not",
                             f"accepted: {SHAPES}")
    if shape not in info.shapes:
        raise PeftMagicError(f"{info.title} learns from pairs (prompt + chosen + rejected); this data is unpaired "
                             "(prompt + completion + label)", "use objective=kto, or give pairs")
    if held and detect_preference(held) not in info.shapes:
        raise PeftMagicError(f"eval= for {info.title} must be preference data like the training data",
                             f"accepted: {SHAPES}")
    return Preference(info, shape)


# ----------------------------------------------------------------------------- around TRL


def _ours(cls: type) -> type:
    """TRL's trainer class, minus its telemetry ping and giving the user's objects back."""

    class Trainer(cls):  # type: ignore[misc, valid-type]
        def _send_telemetry(self) -> None:
            """No network at run time (TRL pings the hub when a trainer is built)."""

        def train(self, *args: Any, **kwargs: Any) -> Any:
            try:
                with _trl_quiet(), _targets_only():
                    return super().train(*args, **kwargs)
            finally:
                self._peft_magic_borrowed.restore()

    Trainer.__name__ = Trainer.__qualname__ = cls.__name__
    return Trainer


def adapter_off(peft_model: Any) -> Any:
    """The reference policy: ``peft_model`` itself, run with its adapters disabled.

    It holds no parameters and no module of its own (the model is not a submodule), so
    TRL's preparing of a reference model — dropout off, moving to the device, patching its
    ``forward`` — touches nothing; calling it runs the user's model under
    ``disable_adapter()``, the same forward TRL runs for the policy."""
    import torch

    class AdapterOff(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.__dict__["peft_model"] = peft_model
            self.config = peft_model.get_base_model().config

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            with peft_model.disable_adapter():
                return peft_model(*args, **kwargs)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # past whatever TRL put on ``forward``
            return AdapterOff.forward(self, *args, **kwargs)

    return AdapterOff()


class Borrowed:
    """What TRL changes on the user's model and tokenizer while it trains, to give back.

    TRL switches every dropout off (policy and reference must agree), patches the base
    model's ``forward`` with its fused LM head (log-probabilities without the full logits),
    adds its tags, mirrors the pad token onto the configs (and sets one on a tokenizer
    without), and with gradient checkpointing hooks the input embeddings."""

    def __init__(self, peft_model: Any, tokenizer: Any) -> None:
        import torch

        self.base = peft_model.get_base_model()
        self.tokenizer = tokenizer
        self.dropout = [(m, m.p) for m in peft_model.modules() if isinstance(m, torch.nn.Dropout)]
        self.forward = self.base.__dict__.get("forward")
        self.tags = self.base.__dict__.get("model_tags")
        self.tags = list(self.tags) if self.tags is not None else None
        self.pad = getattr(tokenizer, "pad_token", None)
        cfg = self.base.config.get_text_config() if hasattr(self.base.config, "get_text_config") else self.base.config
        self.config = cfg
        self.pad_ids = (getattr(cfg, "pad_token_id", None),
                        getattr(getattr(self.base, "generation_config", None), "pad_token_id", None))
        self.hooked = hasattr(self.base, "_require_grads_hook")
        self.done = False

    def restore(self) -> None:
        if self.done:
            return
        self.done = True
        for m, p in self.dropout:
            m.p = p
        if self.forward is None:
            self.base.__dict__.pop("forward", None)
        else:
            self.base.__dict__["forward"] = self.forward
        if self.tags is None:
            self.base.__dict__.pop("model_tags", None)
        else:
            self.base.model_tags = self.tags
        if self.tokenizer is not None and self.pad is None and getattr(self.tokenizer, "pad_token", None) is not None:
            self.tokenizer.pad_token = None
        self.config.pad_token_id = self.pad_ids[0]
        if getattr(self.base, "generation_config", None) is not None:
            self.base.generation_config.pad_token_id = self.pad_ids[1]
        if not self.hooked and hasattr(self.base, "_require_grads_hook"):
            self.base.disable_input_require_grads()


class Counting:
    """TRL's collator, counting the real tokens of each batch into the run's counter (the
    tokens/s readout): every sequence the step runs — chosen and rejected, or a completion
    and its KL partner."""

    def __init__(self, collator: Any, counter: Any) -> None:
        self.collator = collator
        self.counter = counter

    def __call__(self, examples: list[Any]) -> Any:
        batch = self.collator(examples)
        masks = [v for k, v in batch.items() if k == "attention_mask" or (
            k.endswith("attention_mask") and not k.startswith("prompt"))]
        self.counter.tokens += int(sum(int(m.sum()) for m in masks))
        return batch


__all__ = ["OBJECTIVES", "Preference", "READOUTS", "readouts", "request", "adapter_off", "Borrowed"]
