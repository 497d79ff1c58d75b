"""Load a model and its tokenizer from a built-in name, a local folder or a hub id.

Why a wrapper around ``from_pretrained``: the notebook user wants one line that picks
the right Auto class for the task, the right dtype and device for the machine, a
tokenizer that can pad, and — for QLoRA — the bitsandbytes settings everyone copies
from the QLoRA paper (``quantized.bnb_config``). Failures must read as one line: a
typo'd folder, a hub id without network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stack
from ..errors import PeftMagicError, first_line
from ..fmt import fmt_bytes
from ..rendering import HtmlRepr
from ..state import state_for
from ..tasks.names import normalize_task
from . import source as sources
from .properties import DTYPES, auto_class_for_task, footprint, task_from_config
from .quantized import bnb_config, disable_cpu_4bit_repacking

#: the names saved adapters record for the built-ins (not our cache folder)
HUB_NAMES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class LoadResult(HtmlRepr):
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
        params = sum(p.numel() for p in self.model.parameters())
        quant = f", {self.bits}-bit" if self.bits else ""
        tok = "" if self.tokenizer is not None else " (no tokenizer found)"
        return (f"Loaded {self.source} ({type(self.model).__name__}, {params / 1e6:.1f}M params, {self.dtype}"
                f"{quant}, {self.device}, {fmt_bytes(footprint(self.model))}) in {self.seconds:.1f} s{tok}"
                + (f" ({self.note})" if self.note else ""))


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
        if key not in DTYPES:
            raise PeftMagicError(f"unknown dtype '{dtype}'", "use bf16, fp16, fp32 or auto")
        return DTYPES[key]
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


#: what a task head is called in messages
HEADS = {"CAUSAL_LM": "causal-LM", "SEQ_CLS": "sequence-classification", "SEQ_2_SEQ_LM": "sequence-to-sequence",
         "TOKEN_CLS": "token-classification", "QUESTION_ANS": "question-answering", "FEATURE_EXTRACTION": "encoder"}


def label_settings(labels: int | str | list[str] | None) -> dict[str, Any]:
    """``--labels 3`` or ``--labels neg,neu,pos`` → ``num_labels`` (and ``id2label`` / ``label2id``)."""
    if labels is None:
        return {}
    names: list[str] | None = None
    if isinstance(labels, str):
        text = labels.strip()
        if text.isdigit():
            labels = int(text)
        else:
            names = [x.strip() for x in text.split(",") if x.strip()]
    elif isinstance(labels, (list, tuple)):
        names = [str(x) for x in labels]
    if names is not None:
        if len(set(names)) != len(names):
            raise PeftMagicError(f"the label names repeat: {names}", "give each label once")
        if not names:
            raise PeftMagicError("--labels needs a number or names, e.g. --labels 3 or --labels neg,neu,pos")
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}
    if not isinstance(labels, int) or isinstance(labels, bool) or labels < 1:
        raise PeftMagicError(f"labels must be ≥ 1 (a count) or names, got {labels!r}")
    return {"num_labels": labels}


def _task_type(task: str | None, labels: Any, src: sources.Source, config: Any) -> str:
    if labels is not None:
        task_type = "SEQ_CLS" if task is None else normalize_task(task)
        if task_type not in ("SEQ_CLS", "TOKEN_CLS"):
            raise PeftMagicError(f"--labels is for classification heads, not a {HEADS.get(task_type, task_type)} "
                                 "head", "use it with --task seq-cls or --task token-cls")
        return task_type
    if task:
        return normalize_task(task)
    implied = normalize_task(src.builtin.task) if src.builtin is not None else task_from_config(config)
    return implied or "CAUSAL_LM"


#: files that ``save_pretrained`` of a tokenizer writes: a folder with none of them has no tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "vocab.txt",
                   "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def _has_no_tokenizer(path: str, error: Exception) -> bool:
    """A folder with no tokenizer file, or a hub repo whose tokenizer files are not there (``OSError``)."""
    folder = Path(path)
    if folder.is_dir():
        return not any((folder / name).exists() for name in TOKENIZER_FILES)
    return isinstance(error, OSError)


def _load_tokenizer(path: str, model: Any, trust_remote_code: bool, source: str) -> Any:
    """The tokenizer saved with the model, made able to pad.

    ``None`` only when the model has none (a folder without tokenizer files, a hub repo
    without them); the user then passes one with ``--tokenizer``. A tokenizer that is
    there but cannot be read raises with the cause: returning ``None`` would surface
    much later as "training needs a tokenizer", with the reason lost.
    """
    from transformers import AutoTokenizer

    try:
        with stack.no_hf_progress(), stack.quiet(streams=False):
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        if _has_no_tokenizer(path, e):
            return None
        raise PeftMagicError(f"could not load the tokenizer of '{source}': {type(e).__name__}: {first_line(e)}",
                             "check its tokenizer files, or load a tokenizer yourself and pass it with --tokenizer"
                             ) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def _head_error(auto: Any, task_type: str, config: Any, source: str, e: BaseException) -> PeftMagicError:
    """One line for a failed load; "this architecture has no such head" said plainly."""
    msg = first_line(e)
    if "Unrecognized configuration class" in msg:
        model_type = getattr(config, "model_type", "this")
        hint = {"SEQ_2_SEQ_LM": "use an encoder-decoder model (e.g. tiny-t5, a T5 or BART checkpoint)",
                "CAUSAL_LM": "use a decoder model (e.g. smollm2, tiny-llama)"}.get(
            task_type, "choose another --task, or another model")
        return PeftMagicError(f"{model_type} models have no {HEADS.get(task_type, task_type)} head "
                              f"({auto.__name__} does not support them)", hint)
    return PeftMagicError(f"could not load '{source}' as {auto.__name__}: {msg}")


def load(source: str, *, bits: int | None = None, dtype: str | None = None, task: str | None = None,
         labels: int | str | list[str] | None = None, device: str | None = None,
         trust_remote_code: bool = False) -> LoadResult:
    """Load ``source`` (built-in name, local folder or hub id) with its tokenizer.

    ``bits`` 4 or 8 loads through bitsandbytes for QLoRA; ``task`` picks the head
    (causal-lm, seq-cls, seq2seq, token-cls, qa; default: what the config implies);
    ``labels`` is the classifier's label count or names (``3`` or ``"neg,neu,pos"``) —
    alone it means a sequence-classification head. Raises :class:`PeftMagicError` with
    one line on any failure.
    """
    t0 = time.perf_counter()
    if bits not in (None, 4, 8):
        raise PeftMagicError(f"bits must be 4 or 8, got {bits}")
    stack.ensure()
    import torch

    builtin = sources.builtins.resolve_builtin(source)
    note = None
    if builtin is not None and not sources.builtins.is_materialized(builtin.name):
        note = f"built once into {sources.builtins.cache_dir()}; later loads are fast"
    src = sources.resolve(source)
    config = sources.read_config(src, trust_remote_code=trust_remote_code)
    task_type = _task_type(task, labels, src, config)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dt), "trust_remote_code": trust_remote_code,
                              **label_settings(labels)}
    if bits:
        kwargs["quantization_config"] = bnb_config(bits, dev)
        kwargs["device_map"] = {"": 0} if dev == "cuda" else {"": dev}
    auto = auto_class_for_task(task_type)
    try:
        with stack.no_hf_progress(), stack.quiet(streams=False):
            model = auto.from_pretrained(src.path, **kwargs)
    except Exception as e:
        raise _head_error(auto, task_type, config, source, e) from None
    if not bits and dev != "cpu":
        model = model.to(dev)
    if bits == 4 and dev == "cpu":
        disable_cpu_4bit_repacking(model)
    tokenizer = _load_tokenizer(src.path, model, trust_remote_code, source)
    if src.builtin is not None:
        # Saved adapters should name the real model, not our cache folder.
        hub_name = HUB_NAMES.get(src.builtin.name, f"peft_magic/{src.builtin.name}")
        model.name_or_path = hub_name
        model.config._name_or_path = hub_name
    st = state_for(model, create=True)
    st.source, st.path, st.bits = source, src.path, bits
    return LoadResult(model=model, tokenizer=tokenizer, source=source, path=src.path, task=task_type, bits=bits,
                      dtype=dt, device=dev, seconds=time.perf_counter() - t0,
                      builtin=src.builtin.name if src.builtin else None, note=note)
