"""Load a model and its tokenizer from a built-in name, a local folder or a hub id.

Why a wrapper around ``from_pretrained``: the notebook user wants one line that picks
the right Auto class for the task, the right dtype and device for the machine, a
tokenizer that can pad, and — for QLoRA — the bitsandbytes settings everyone copies
from the QLoRA paper (NF4, double quantization, a compute dtype the device supports).
Failures must read as one line: a typo'd folder, a hub id without network.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _heavy
from ..errors import PeftMagicError, first_line
from ..peft_methods.discovery import normalize_task

_TASK_AUTO = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}

_DTYPES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}


@dataclass
class LoadResult:
    """What ``load`` returns: the model, its tokenizer and how it was loaded."""

    model: Any
    tokenizer: Any
    source: str  # what the user asked for
    path: str  # where it was read from
    task: str
    bits: int | None
    dtype: str
    device: str
    seconds: float
    builtin: str | None = None
    note: str | None = None

    def __repr__(self) -> str:
        from ..memory import fmt_bytes

        params = sum(p.numel() for p in self.model.parameters())
        quant = f", {self.bits}-bit" if self.bits else ""
        tok = "" if self.tokenizer is not None else " (no tokenizer found)"
        return (f"Loaded {self.source} ({type(self.model).__name__}, {params / 1e6:.1f}M params, {self.dtype}"
                f"{quant}, {self.device}, {fmt_bytes(_footprint(self.model))}) in {self.seconds:.1f} s{tok}"
                + (f" ({self.note})" if self.note else ""))

    def _repr_html_(self) -> str:
        from ..display.html import escape

        return f"<div class='peft-magic'><b>peft_magic</b> · {escape(repr(self))}</div>"


def _footprint(model: Any) -> int:
    try:
        return int(model.get_memory_footprint())
    except Exception:
        return sum(p.numel() * p.element_size() for p in model.parameters())


def infer_task(model: Any) -> str | None:
    """The peft task type a model's class implies (``LlamaForCausalLM`` → ``CAUSAL_LM``)."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        task = getattr(next(iter(peft_config.values())), "task_type", None)
        if task:
            return str(getattr(task, "value", task))
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if name.endswith("ForTokenClassification"):
        return "TOKEN_CLS"
    if name.endswith("ForQuestionAnswering"):
        return "QUESTION_ANS"
    if name.endswith(("ForSeq2SeqLM", "ForConditionalGeneration")):
        return "SEQ_2_SEQ_LM" if getattr(cfg, "is_encoder_decoder", False) else "CAUSAL_LM"
    if cfg is not None and name.endswith("Model"):
        return "FEATURE_EXTRACTION"
    return None


def _task_from_config(config: Any) -> str | None:
    for arch in getattr(config, "architectures", None) or []:
        for suffix, task in (("ForCausalLM", "CAUSAL_LM"), ("LMHeadModel", "CAUSAL_LM"),
                             ("ForSequenceClassification", "SEQ_CLS"), ("ForTokenClassification", "TOKEN_CLS"),
                             ("ForQuestionAnswering", "QUESTION_ANS"), ("ForMaskedLM", "FEATURE_EXTRACTION")):
            if arch.endswith(suffix):
                return task
        if arch.endswith("ForConditionalGeneration"):
            return "SEQ_2_SEQ_LM" if getattr(config, "is_encoder_decoder", False) else "CAUSAL_LM"
        if arch.endswith("Model"):
            return "FEATURE_EXTRACTION"
    return None


def auto_class_for_task(task: str, config: Any = None) -> Any:
    import transformers

    return getattr(transformers, _TASK_AUTO.get(task, "AutoModelForCausalLM"))


def pick_device(device: str | None = None) -> str:
    """``auto`` → ``cuda`` if present, else ``mps``, else ``cpu``."""
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str | None, device: str) -> str:
    """``auto``: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU and MPS."""
    import torch

    if dtype and dtype != "auto":
        key = dtype.lower()
        if key not in _DTYPES:
            raise PeftMagicError(f"unknown dtype '{dtype}'", "use bf16, fp16, fp32 or auto")
        return _DTYPES[key]
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def bnb_config(bits: int, device: str) -> Any:
    """The QLoRA recipe: NF4 with double quantization, compute in the device's best dtype.

    On CPU the compute dtype is fp32: bitsandbytes' CPU kernels are exact there and
    bf16 is emulated (slow) on CPUs without AVX512-BF16.
    """
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise PeftMagicError(f"{bits}-bit loading needs bitsandbytes, which is not installed",
                             "pip install bitsandbytes")
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.float32
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def _looks_local(source: str) -> bool:
    """A path the user meant as a folder (``./x``, ``/x``, ``~/x``), not a hub id."""
    return source.startswith((".", "/", "~"))


def load(source: str, *, bits: int | None = None, dtype: str | None = None, task: str | None = None,
         labels: int | None = None, device: str | None = None, trust_remote_code: bool = False) -> LoadResult:
    """Load ``source`` (built-in name, local folder or hub id) with its tokenizer.

    ``bits`` 4 or 8 loads through bitsandbytes for QLoRA; ``labels`` N loads a
    sequence-classification head with N labels; ``task`` overrides the task the config
    implies. Raises :class:`PeftMagicError` with one line on any failure.
    """
    from . import builtins as builtin_models

    t0 = time.perf_counter()
    if bits not in (None, 4, 8):
        raise PeftMagicError(f"bits must be 4 or 8, got {bits}")
    _heavy.ensure()
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    builtin = builtin_models.resolve_builtin(source)
    note = None
    if builtin is not None:
        if not builtin_models.is_materialized(builtin.name):
            note = f"built once into {builtin_models.cache_dir()}; later loads are fast"
        path = str(builtin_models.materialize(builtin.name))
    else:
        expanded = Path(source).expanduser()
        if expanded.exists():
            path = str(expanded)
        elif _looks_local(source):
            raise PeftMagicError(f"no such folder: {source}",
                                 "give a folder saved with save_pretrained, or a built-in: "
                                 + ", ".join(builtin_models.BUILTINS))
        else:
            path = source

    try:
        with _heavy.no_hf_progress():
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # OSError / HF hub errors / ValueError
        if builtin is None and not Path(path).exists():
            raise PeftMagicError(
                f"could not load '{source}': it is not a local folder and the Hugging Face Hub is not reachable "
                f"({first_line(e)[:120]})",
                "pass a local folder, or a built-in: " + ", ".join(builtin_models.BUILTINS),
            ) from None
        raise PeftMagicError(f"could not read the config of '{source}': {first_line(e)}") from None

    if labels is not None:
        if labels < 1:
            raise PeftMagicError(f"labels must be ≥ 1, got {labels}")
        task_type = "SEQ_CLS" if task is None else normalize_task(task)
    else:
        task_type = normalize_task(task) if task else (
            _task_from_config(config) if builtin is None else normalize_task(builtin.task)
        ) or "CAUSAL_LM"

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    import torch

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dt), "trust_remote_code": trust_remote_code}
    if labels is not None:
        kwargs["num_labels"] = labels
    if bits:
        kwargs["quantization_config"] = bnb_config(bits, dev)
        kwargs["device_map"] = {"": 0} if dev == "cuda" else {"": dev}
    auto = auto_class_for_task(task_type, config)
    try:
        with _heavy.no_hf_progress(), _quiet_load():
            model = auto.from_pretrained(path, **kwargs)
    except Exception as e:
        raise PeftMagicError(f"could not load '{source}' as {auto.__name__}: {first_line(e)}") from None
    if not bits and dev != "cpu":
        model = model.to(dev)
    if bits == 4 and dev == "cpu":
        disable_cpu_4bit_repacking(model)

    tokenizer = None
    try:
        with _heavy.no_hf_progress(), _quiet_load():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:
        tokenizer = None
    if tokenizer is not None:
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id

    if builtin is not None:
        # Saved adapters should name the real model, not our cache folder.
        hub_name = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
                    "minilm": "sentence-transformers/all-MiniLM-L6-v2"}.get(builtin.name, f"peft_magic/{builtin.name}")
        model.name_or_path = hub_name
        model.config._name_or_path = hub_name

    from ..state import state_for

    st = state_for(model, create=True)
    st.source = source
    st.path = path
    st.bits = bits

    return LoadResult(model=model, tokenizer=tokenizer, source=source, path=path, task=task_type, bits=bits,
                      dtype=dt, device=dev,
                      seconds=time.perf_counter() - t0, builtin=builtin.name if builtin else None, note=note)


class _quiet_load:
    """Silence load-time warnings that are not actionable in a notebook (e.g. tied weights)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)
        self._cm.__exit__(*exc)
        return False


def disable_cpu_4bit_repacking(model: Any) -> int:
    """Keep bitsandbytes 4-bit layers in their trainable layout on CPU; returns how many were fixed.

    On CPUs with AVX512-BF16, bitsandbytes repacks a ``Linear4bit`` weight into an
    inference-only layout the first time it runs in eval mode without gradients (a
    generate call, an evaluation). Training afterwards backpropagates through an op
    with no autograd kernel: the gradients of the adapter come out wrong (we measured
    errors as large as the gradients themselves). We switch the repacking off for the
    layers of models we train, and undo it where it already happened (the undo is
    slightly lossy — about 0.3% on the dequantized weights — because the double-
    quantization state is re-quantized, so preventing it at load time is the real fix).
    """
    fixed = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        qs = getattr(weight, "quant_state", None)
        if qs is not None and getattr(qs, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, qs)
            if hasattr(module, "quant_state"):
                module.quant_state = weight.quant_state
            fixed += 1
    return fixed
