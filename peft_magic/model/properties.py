"""Small facts about a model, read without changing it: task, dtype, quantization, sizes.

Each fact is derived in exactly one place, because several faces and engine modules ask
the same questions ("how many parameters, counting a 4-bit weight as two?", "which task
does this class imply?", "is gradient checkpointing on?") and must agree.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .. import stack
from ..errors import PeftMagicError

#: what a user may type for a dtype → torch's name
DTYPES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}

#: the transformers Auto class for each peft task type
TASK_AUTO = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}

_QUANTIZED_PARAMS = ("Params4bit", "Int8Params")


def require_model(model: Any) -> None:
    """One line instead of an AttributeError deep inside peft when ``model`` is not a model."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise PeftMagicError(f"expected a torch model, got {type(model).__name__}",
                             "load one with %peft load smollm2 (or any transformers model)")


def param_numel(p: Any) -> int:
    """Weights a parameter holds: a bitsandbytes 4-bit ``Params4bit`` packs two per element."""
    return p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)


def is_quantized_param(p: Any) -> bool:
    """A bitsandbytes 4/8-bit parameter (its dtype is storage, not the weights' precision)."""
    return p.__class__.__name__ in _QUANTIZED_PARAMS


def count_params(model: Any, trainable_only: bool = False) -> int:
    """Parameters of ``model`` (4-bit weights counted as the weights they hold)."""
    return sum(param_numel(p) for p in model.parameters() if p.requires_grad or not trainable_only)


def quantized_bits(model: Any) -> int | None:
    """4 or 8 when ``model`` was loaded through bitsandbytes, else ``None``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        return 4
    if getattr(base, "is_loaded_in_8bit", False):
        return 8
    return None


def quantization_of(model: Any) -> str | None:
    """``"4-bit"`` / ``"8-bit"`` / another quantization method's name / ``None``."""
    bits = quantized_bits(model)
    if bits:
        return f"{bits}-bit"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    method = getattr(base, "quantization_method", None)
    return str(getattr(method, "value", method)) if method else None


def is_checkpointing(model: Any) -> bool:
    """Whether gradient checkpointing is on (transformers renamed the attribute in 5.x)."""
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if attr in dir(type(model)):
            with stack.stack_warnings_off():
                return bool(getattr(model, attr, False))
    return False


def dtype_name(dtype: Any) -> str:
    """``"bf16"`` / ``torch.bfloat16`` → ``"bfloat16"``; one line for anything else."""
    text = str(dtype).replace("torch.", "").lower()
    if text not in DTYPES:
        raise PeftMagicError(f"unknown dtype '{dtype}'", "use bf16, fp16, fp32 or auto")
    return DTYPES[text]


def main_dtype(model: Any) -> str:
    """The dtype a model computes in: its 4-bit layers' compute dtype, else the dtype most
    of its floating-point weights have (``"float32"`` when it has none)."""
    for m in model.modules():
        compute = getattr(m, "compute_dtype", None)
        if compute is not None and type(m).__name__ == "Linear4bit":
            return str(compute).replace("torch.", "")
    counts = Counter(p.dtype for p in model.parameters() if p.dtype.is_floating_point)
    if not counts:
        return "float32"
    return str(max(counts, key=counts.get)).replace("torch.", "")


def footprint(model: Any) -> int:
    """Bytes of the weights (transformers' own count where it has one)."""
    try:
        return int(model.get_memory_footprint())
    except Exception:
        return sum(p.numel() * p.element_size() for p in model.parameters())


def model_name(model: Any) -> str | None:
    """The name a model was loaded under (hub id or folder), if it knows one."""
    return getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None) \
        or None


def model_label(model: Any) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct (LlamaForCausalLM)`` — for messages naming a model."""
    name = model_name(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = type(model).__name__
    return f"{name} ({cls})" if name else (f"a {model_type} model ({cls})" if model_type else cls)


_SUFFIX_TASKS = (("ForCausalLM", "CAUSAL_LM"), ("LMHeadModel", "CAUSAL_LM"), ("ForSequenceClassification", "SEQ_CLS"),
                 ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS"))


def infer_task(model: Any) -> str | None:
    """The peft task type a model implies: its adapters' task, else its class
    (``LlamaForCausalLM`` → ``CAUSAL_LM``)."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        task = getattr(next(iter(peft_config.values())), "task_type", None)
        if task:
            return str(getattr(task, "value", task))
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    for suffix, task in _SUFFIX_TASKS:
        if name.endswith(suffix):
            return task
    if name.endswith(("ForSeq2SeqLM", "ForConditionalGeneration")):
        return "SEQ_2_SEQ_LM" if getattr(cfg, "is_encoder_decoder", False) else "CAUSAL_LM"
    if cfg is not None and name.endswith("Model"):
        return "FEATURE_EXTRACTION"
    return None


def task_from_config(config: Any) -> str | None:
    """The task a transformers config's ``architectures`` imply, if any."""
    for arch in getattr(config, "architectures", None) or []:
        for suffix, task in _SUFFIX_TASKS + (("ForMaskedLM", "FEATURE_EXTRACTION"),):
            if arch.endswith(suffix):
                return task
        if arch.endswith("ForConditionalGeneration"):
            return "SEQ_2_SEQ_LM" if getattr(config, "is_encoder_decoder", False) else "CAUSAL_LM"
        if arch.endswith("Model"):
            return "FEATURE_EXTRACTION"
    return None


def default_task(config: Any) -> str:
    """The task to assume for a config: its architecture's, else seq2seq for an
    encoder-decoder, else causal LM."""
    return task_from_config(config) or ("SEQ_2_SEQ_LM" if getattr(config, "is_encoder_decoder", False)
                                        else "CAUSAL_LM")


def auto_class_for_task(task: str) -> Any:
    """``"SEQ_CLS"`` → ``transformers.AutoModelForSequenceClassification``."""
    import transformers

    return getattr(transformers, TASK_AUTO.get(task, "AutoModelForCausalLM"))


def label_names(model: Any) -> list[str] | None:
    """A classifier head's own label names, id order (``None`` for transformers' placeholder
    ``LABEL_0 …`` and for models without labels)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    id2label = getattr(cfg, "id2label", None)
    if not id2label:
        return None
    names = [id2label[i] for i in sorted(id2label)]
    return None if all(str(n).startswith("LABEL_") for n in names) else names
