"""Every PEFT method of the installed peft, found at run time, with friendly names.

Why discovered and not listed: peft adds methods in nearly every release (45 in 0.21);
a hard-coded list is stale the day it ships. We walk peft's own registry
(``PeftType`` and ``PEFT_TYPE_TO_CONFIG_MAPPING``, filled by ``register_peft_method``),
so a method added to peft — or registered by a plugin, like our bottleneck adapters —
is available the moment it is installed.

On top of the registry this module holds what the registry does not know:

* friendly aliases (``qlora``, ``dora``, ``prefix``, ``p-tuning`` …) and the settings an
  alias implies (``dora`` is LoRA with ``use_dora=True``);
* short key aliases (``alpha`` → ``lora_alpha``) resolved against the method's own
  config fields, so a key is never silently sent to the wrong field;
* conversion of the user's text values to the field's declared type, with one-line
  errors that name the key and the expected type;
* defaults that adapt to the model where peft's fixed defaults cannot fit it (VBLoRA's
  vector length must divide the layer width, prompt methods need a token count, …);
* capabilities read from peft's classes: can it merge, does it run on a bitsandbytes
  quantized base, is it prompt-based.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import importlib.util
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError, did_you_mean

# ----------------------------------------------------------------------------- static facts

#: alias → (PeftType name, preset settings, needs a quantized base)
METHOD_ALIASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "qlora": ("LORA", {}, True),
    "dora": ("LORA", {"use_dora": True}, False),
    "rslora": ("LORA", {"use_rslora": True}, False),
    "pissa": ("LORA", {"init_lora_weights": "pissa"}, False),
    "olora": ("LORA", {"init_lora_weights": "olora"}, False),
    "prefix": ("PREFIX_TUNING", {}, False),
    "prompt": ("PROMPT_TUNING", {}, False),
    "p-tuning": ("P_TUNING", {}, False),
    "ptuning": ("P_TUNING", {}, False),
    "llama_adapter": ("ADAPTION_PROMPT", {}, False),
    "adaption": ("ADAPTION_PROMPT", {}, False),
    "multitask_prompt": ("MULTITASK_PROMPT_TUNING", {}, False),
    "mpt": ("MULTITASK_PROMPT_TUNING", {}, False),
    "layernorm": ("LN_TUNING", {}, False),
    "ln": ("LN_TUNING", {}, False),
    "tokens": ("TRAINABLE_TOKENS", {}, False),
    "houlsby": ("BOTTLENECK", {"placement": "houlsby"}, False),
    "pfeiffer": ("BOTTLENECK", {"placement": "pfeiffer"}, False),
    "adapter": ("BOTTLENECK", {}, False),
    "adapters": ("BOTTLENECK", {}, False),
}

#: key alias → candidate real field names, first existing one wins
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "alpha": ("lora_alpha", "alpha"),
    "dropout": ("lora_dropout", "dropout", "module_dropout", "rank_dropout", "adapter_dropout"),
    "target": ("target_modules",),
    "targets": ("target_modules",),
    "modules": ("target_modules",),
    "exclude": ("exclude_modules",),
    "tokens": ("num_virtual_tokens", "token_indices"),
    "virtual_tokens": ("num_virtual_tokens",),
    "rank": ("r",),
    "save": ("modules_to_save",),
    "layers": ("layers_to_transform",),
    "init": ("init_lora_weights", "init_weights", "prompt_tuning_init"),
    "size": ("bottleneck_size",),
    "reduction": ("reduction_factor",),
    "encoder_hidden": ("encoder_hidden_size",),
}

#: fields the user never sets by hand (filled by peft or by us)
INTERNAL_FIELDS = frozenset({
    "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
    "task_type", "megatron_config", "megatron_core", "runtime_config",
})

#: fields shown first in the panel and in help, per method family
COMMON_FIELDS = (
    "r", "lora_alpha", "alpha", "lora_dropout", "dropout", "target_modules", "num_virtual_tokens",
    "use_dora", "bottleneck_size", "placement", "non_linearity", "init_r", "target_r", "total_step",
    "feedforward_modules", "modules_to_save", "prefix_projection", "encoder_hidden_size",
    "prompt_tuning_init", "prompt_tuning_init_text", "adapter_len", "adapter_layers", "block_size",
    "boft_block_size", "oft_block_size", "n_frequency", "vector_length", "num_vectors", "projection_prng_key",
)

DESCRIPTIONS: dict[str, str] = {
    "LORA": "Low-rank update matrices (A·B) added to chosen layers; the default choice.",
    "ADALORA": "LoRA whose rank budget is re-allocated across layers during training.",
    "LOHA": "Low-rank Hadamard product update (LyCORIS); higher rank per parameter than LoRA.",
    "LOKR": "Low-rank Kronecker product update (LyCORIS); very few parameters.",
    "VERA": "Shared frozen random matrices with small trainable scaling vectors per layer.",
    "PVERA": "Probabilistic VeRA: VeRA with a learned distribution over the scaling vectors.",
    "DELORA": "Decoupled LoRA: LoRA with a bounded, normalised update strength.",
    "GRALORA": "Granular LoRA: the weight split into blocks, each with its own small LoRA.",
    "RANDLORA": "Full-rank update from a sum of shared random low-rank bases with trainable scales.",
    "VBLORA": "LoRA built from a shared vector bank, composed with learned top-k mixtures.",
    "UNILORA": "LoRA whose parameters are all drawn from one shared trainable vector.",
    "TINYLORA": "An extremely small LoRA variant for tight parameter budgets.",
    "HIRA": "High-rank adaptation: a Hadamard product of low-rank matrices with the frozen weight.",
    "GLORA": "Generalised LoRA: learned scaling, shift and low-rank terms per layer.",
    "LILY": "Low-rank interconnected adapters shared across layers through a router.",
    "XLORA": "Mixture of already-trained LoRA experts with a learned per-token gating.",
    "SHIRA": "Sparse high-rank adapter: trains a sparse subset of the frozen weights.",
    "MISS": "Matrix shard sharing: a cheap structured update shared within each weight.",
    "PEANUT": "Weight-aware LoRA-like adapter whose update depends on the frozen weight.",
    "DEFT": "Decompositional efficient fine-tuning of the weight matrices.",
    "PROMPT_TUNING": "Learns virtual token embeddings prepended to every input (soft prompt).",
    "MULTITASK_PROMPT_TUNING": "One shared soft prompt plus a low-rank per-task component.",
    "P_TUNING": "Soft prompt produced by a small trainable encoder (MLP or LSTM).",
    "PREFIX_TUNING": "Learns key/value vectors prepended at every attention layer.",
    "ADAPTION_PROMPT": "LLaMA-Adapter: gated prompts added to the top attention layers.",
    "CPT": "Context-aware prompt tuning for few-shot in-context examples.",
    "CARTRIDGE": "A trained KV-cache prefix (cartridge) that compresses a long context.",
    "IA3": "Learned rescaling vectors for keys, values and feed-forward activations; tiny.",
    "BOFT": "Butterfly-factorised orthogonal transform of the frozen weights.",
    "OFT": "Orthogonal fine-tuning: block-diagonal orthogonal transform of the weights.",
    "HRA": "Householder reflections applied to the frozen weights.",
    "FOURIERFT": "Trains a few spectral coefficients of the weight update (Fourier domain).",
    "WAVEFT": "Trains sparse wavelet coefficients of the weight update.",
    "C3A": "Circular convolution adapter: block-circulant weight updates via FFT.",
    "LN_TUNING": "Trains only the LayerNorm / RMSNorm parameters.",
    "BEFT": "Bias-efficient fine-tuning: trains added bias terms of value projections.",
    "FROD": "Hierarchical joint decomposition of layer weights with a small trained core.",
    "OSF": "Orthogonal subspace fine-tuning for continual learning.",
    "ROAD": "Rotation adapter: trains 2-D rotations of the weight outputs.",
    "TRAINABLE_TOKENS": "Trains only selected rows of the token embedding (e.g. new tokens).",
    "POLY": "Polytropon: a per-task routed mixture of LoRA modules (needs task ids).",
    "SHADOW": "A parallel shadow network alongside the frozen layers.",
    "SUPERTUNING": "Super-tuning: a small set of supervised tuning parameters.",
    "PSOFT": "Orthogonal fine-tuning in the principal subspace of the weights.",
    "ADAMSS": "Adaptive multi-subspace adapters (needs scikit-learn).",
    "BOTTLENECK": "Houlsby / Pfeiffer bottleneck adapters after attention and/or MLP outputs.",
}

#: task spelling accepted from users → peft TaskType value
TASK_ALIASES: dict[str, str] = {
    "causal_lm": "CAUSAL_LM", "causal": "CAUSAL_LM", "clm": "CAUSAL_LM", "lm": "CAUSAL_LM",
    "text_generation": "CAUSAL_LM",
    "seq_cls": "SEQ_CLS", "classification": "SEQ_CLS", "sequence_classification": "SEQ_CLS", "cls": "SEQ_CLS",
    "seq2seq": "SEQ_2_SEQ_LM", "seq_2_seq_lm": "SEQ_2_SEQ_LM", "seq2seq_lm": "SEQ_2_SEQ_LM",
    "token_cls": "TOKEN_CLS", "token_classification": "TOKEN_CLS", "ner": "TOKEN_CLS",
    "question_ans": "QUESTION_ANS", "qa": "QUESTION_ANS", "question_answering": "QUESTION_ANS",
    "feature_extraction": "FEATURE_EXTRACTION", "features": "FEATURE_EXTRACTION", "embedding": "FEATURE_EXTRACTION",
}


def normalize_task(task: str | None) -> str | None:
    """``"seq-cls"`` / ``"SEQ_CLS"`` / ``"classification"`` → ``"SEQ_CLS"``; ``None`` stays."""
    if task is None:
        return None
    key = str(task).strip().lower().replace("-", "_").replace(" ", "_")
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    if key.upper() in set(TASK_ALIASES.values()):
        return key.upper()
    raise PeftMagicError(
        f"unknown task '{task}'",
        "use one of causal-lm, seq-cls, seq2seq, token-cls, qa, feature-extraction "
        + (f"({did_you_mean(key, TASK_ALIASES)})" if did_you_mean(key, TASK_ALIASES) else ""),
    )


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class FieldInfo:
    """A config field as a user sees it: name, type, default, help, and allowed choices."""

    name: str
    annotation: Any
    default: Any
    help: str
    kind: str  # "int" | "float" | "bool" | "str" | "choice" | "list" | "dict" | "int_or_list" | "other"
    choices: tuple[Any, ...] = ()
    optional: bool = False
    common: bool = False


@dataclass(frozen=True)
class MethodInfo:
    """One PEFT method of the installed peft (or registered by a plugin)."""

    peft_type: str  # "LORA"
    name: str  # canonical user name: "lora", "prefix_tuning"
    config_cls: type
    family: str  # "LoRA family" | "prompt-based" | "other"
    description: str
    is_prompt_learning: bool
    can_merge: bool
    supports_quantized: bool
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def fields(self) -> dict[str, FieldInfo]:
        return config_fields(self.config_cls)


@dataclass(frozen=True)
class MethodSpec:
    """What a user asked for: a method plus what its alias implies (``dora`` → LoRA + use_dora)."""

    requested: str  # as typed, normalised: "qlora"
    info: MethodInfo
    preset: dict[str, Any] = field(default_factory=dict)
    needs_quantized: bool = False

    @property
    def name(self) -> str:
        return self.requested


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def _import_peft():
    """Import peft (slow: 5–7 s) and our own plugin methods, once."""
    from .. import _heavy

    _heavy.ensure()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING


def _family(peft_type: str, is_prompt: bool) -> str:
    if is_prompt or peft_type in ("ADAPTION_PROMPT", "CPT", "CARTRIDGE"):
        return "prompt-based"
    if "LORA" in peft_type or peft_type in ("LOHA", "LOKR", "VERA", "PVERA", "HIRA", "LILY", "SHIRA", "MISS",
                                           "PEANUT", "DEFT", "FROD"):
        return "LoRA family"
    return "other"


def _can_merge(config_cls: type, is_prompt: bool, peft_type: str) -> bool:
    """Whether the method's layers implement ``merge`` (prompt methods never can).

    Read from peft's layer classes: a tuner layer that does not override
    ``BaseTunerLayer.merge`` cannot be merged into the base weights.
    """
    if is_prompt or peft_type in ("ADAPTION_PROMPT", "XLORA", "POLY", "BOTTLENECK"):
        return False
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    pkg = config_cls.__module__.rsplit(".", 1)[0]
    try:
        mod = importlib.import_module(pkg + ".layer")
    except ImportError:
        return False
    layers = [c for c in vars(mod).values()
              if inspect.isclass(c) and issubclass(c, BaseTunerLayer) and c is not BaseTunerLayer]
    return any(getattr(c, "merge", None) is not BaseTunerLayer.merge for c in layers)


def _supports_quantized(config_cls: type, peft_type: str) -> bool:
    pkg = config_cls.__module__.rsplit(".", 1)[0]
    if peft_type == "BOTTLENECK":
        return True  # our adapters sit beside the quantized layers and never touch their weights
    try:
        return importlib.util.find_spec(pkg + ".bnb") is not None
    except (ImportError, ValueError):
        return False


def _is_prompt(config_cls: type) -> bool:
    try:
        from peft.config import PromptLearningConfig

        return issubclass(config_cls, PromptLearningConfig)
    except ImportError:
        return False


def _tuner_doc(peft_type: str) -> str:
    try:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        doc = inspect.getdoc(PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)) or ""
    except ImportError:
        doc = ""
    first = doc.split("\n")[0].strip()
    return first if first and "base tuner model" not in first else ""


@functools.lru_cache(maxsize=1)
def _registry_snapshot(keys: tuple[str, ...]) -> dict[str, MethodInfo]:
    mapping = _import_peft()
    out: dict[str, MethodInfo] = {}
    alias_of: dict[str, list[str]] = {}
    for alias, (pt, _, _) in METHOD_ALIASES.items():
        alias_of.setdefault(pt, []).append(alias)
    for key in keys:
        cls = mapping[key]
        pt = key.value if isinstance(key, enum.Enum) else str(key)
        prompt = _is_prompt(cls)
        out[pt] = MethodInfo(
            peft_type=pt,
            name=pt.lower(),
            config_cls=cls,
            family=_family(pt, prompt),
            description=DESCRIPTIONS.get(pt) or _tuner_doc(pt) or (inspect.getdoc(cls) or pt).split("\n")[0],
            is_prompt_learning=prompt,
            can_merge=_can_merge(cls, prompt, pt),
            supports_quantized=_supports_quantized(cls, pt),
            aliases=tuple(sorted(alias_of.get(pt, []))),
        )
    return out


def registry() -> dict[str, MethodInfo]:
    """All methods, keyed by PeftType name (``"LORA"``), in peft's registry order."""
    mapping = _import_peft()
    return _registry_snapshot(tuple(mapping.keys()))


def resolve_method(name: str) -> MethodSpec:
    """Turn what the user typed (``LoRA``, ``qlora``, ``p-tuning``, ``prefix_tuning``) into a spec."""
    key = _norm(name)
    reg = registry()
    if key in METHOD_ALIASES:
        pt, preset, needs_q = METHOD_ALIASES[key]
        if pt in reg:
            return MethodSpec(key, reg[pt], dict(preset), needs_q)
    if key.upper() in reg:
        return MethodSpec(key, reg[key.upper()])
    # "prefix_tuning" spelled "prefixtuning", "loha" etc.
    compact = {k.replace("_", ""): k for k in reg}
    if key.replace("_", "").upper() in compact:
        pt = compact[key.replace("_", "").upper()]
        return MethodSpec(pt.lower(), reg[pt])
    names = [m.name for m in reg.values()] + list(METHOD_ALIASES)
    hint = did_you_mean(key, names)
    raise PeftMagicError(
        f"unknown PEFT method '{name}'" + (f": {hint}" if hint else ""),
        "see %peft methods for all methods",
    )


# ----------------------------------------------------------------------------- fields


def _strip_optional(ann: Any) -> tuple[Any, bool]:
    if typing.get_origin(ann) is typing.Union:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) != len(typing.get_args(ann))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional
    return ann, False


def _kind(ann: Any) -> tuple[str, tuple[Any, ...]]:
    ann, _ = _strip_optional(ann)
    origin = typing.get_origin(ann)
    if ann is bool:
        return "bool", ()
    if ann is int:
        return "int", ()
    if ann is float:
        return "float", ()
    if ann is str:
        return "str", ()
    if origin is typing.Literal:
        return "choice", typing.get_args(ann)
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return "choice", tuple(m.value for m in ann)
    if origin in (list, tuple):
        return "list", ()
    if origin is dict or ann is dict:
        return "dict", ()
    if origin is typing.Union:
        args = typing.get_args(ann)
        kinds = {_kind(a)[0] for a in args}
        if kinds <= {"list", "str"} and "list" in kinds:
            return "list", ()
        if kinds == {"list", "int"}:
            return "int_or_list", ()
        if kinds == {"int", "float"}:
            return "float", ()
        if "bool" in kinds and kinds <= {"bool", "choice", "str"}:
            choices: list[Any] = [True, False]
            for a in args:
                k, ch = _kind(a)
                choices += list(ch)
            return "choice", tuple(choices)
        if "choice" in kinds and kinds <= {"choice", "str"}:
            choices = []
            for a in args:
                choices += list(_kind(a)[1])
            return "choice", tuple(choices)
    return "other", ()


def _clean_help(text: Any) -> str:
    if isinstance(text, (tuple, list)):  # a stray comma in peft's metadata makes a tuple
        text = "".join(map(str, text))
    text = re.sub(r"<a href='[^']*'>([^<]*)</a>", r"\1", text or "")
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    return " ".join(text.split())


def field_default(f: dataclasses.Field, missing: Any = dataclasses.MISSING) -> Any:
    """A dataclass field's default value (calling its factory), or ``missing``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        try:
            return f.default_factory()  # type: ignore[misc]
        except Exception:
            return missing
    return missing


@functools.lru_cache(maxsize=None)
def config_fields(config_cls: type) -> dict[str, FieldInfo]:
    """The user-settable fields of a peft config dataclass, in declaration order."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:
        hints = {}
    out: dict[str, FieldInfo] = {}
    for f in dataclasses.fields(config_cls):
        if f.name in INTERNAL_FIELDS or f.name.startswith("_"):
            continue
        ann = hints.get(f.name, f.type)
        default = field_default(f, None)
        if isinstance(default, enum.Enum):
            default = default.value
        kind, choices = _kind(ann)
        _, optional = _strip_optional(ann)
        out[f.name] = FieldInfo(
            name=f.name, annotation=ann, default=default, help=_clean_help(f.metadata.get("help", "")),
            kind=kind, choices=choices, optional=optional, common=f.name in COMMON_FIELDS,
        )
    return out


_REGEX_CHARS = re.compile(r"[.*+?\[\]()|^$\\{}]")


def _type_name(kind: str, choices: tuple[Any, ...]) -> str:
    return {
        "int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
        "list": "a name or a list of names", "dict": "a dict like {'a': 1}",
        "int_or_list": "an integer or a list of integers",
    }.get(kind, "one of " + ", ".join(repr(c) for c in choices) if choices else "a Python literal")


def coerce_value(method: str, info: FieldInfo, value: Any) -> Any:
    """Convert a parsed user value to the field's type, or raise one line naming the key.

    Accepts what a user naturally types: ``8`` for a float, ``"true"`` for a bool, a
    bare name where a list is wanted (``target=q_proj`` → ``["q_proj"]``), and keeps a
    regex or ``all-linear`` as the string peft expects.
    """
    kind = info.kind

    def bad() -> PeftMagicError:
        shown = repr(value) if not isinstance(value, str) else f"'{value}'"
        return PeftMagicError(f"invalid value for {method} '{info.name}': expected {_type_name(kind, info.choices)}, "
                              f"got {shown}")

    if value is None:
        if info.optional or info.default is None:
            return None
        raise bad()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad()
    if kind == "int":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad()
    if kind == "float":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            allows_int = int in typing.get_args(_strip_optional(info.annotation)[0])
            return value if (allows_int and isinstance(value, int)) else float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad()
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if kind == "choice":
        for c in info.choices:
            if value == c and type(value) is type(c):
                return c
        if isinstance(value, str):
            for c in info.choices:
                if isinstance(c, str) and c.lower() == value.lower():
                    return c
                if isinstance(c, bool) and value.lower() == str(c).lower():
                    return c
            if any(isinstance(c, str) and "[" in c for c in info.choices):  # 'pissa_niter_[number of iters]'
                return value
        raise bad()
    if kind == "list":
        if isinstance(value, (list, tuple, set)):
            if not all(isinstance(v, str) for v in value):
                return [str(v) for v in value]
            return list(value)
        if isinstance(value, str):
            allows_str = str in typing.get_args(_strip_optional(info.annotation)[0])
            if allows_str and (value in ("all-linear", "all_linear") or _REGEX_CHARS.search(value)):
                return "all-linear" if value == "all_linear" else value
            return [v.strip() for v in value.split(",") if v.strip()]  # module names never hold commas
        raise bad()
    if kind == "int_or_list":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise bad()
    if kind == "dict":
        if isinstance(value, dict):
            return value
        raise bad()
    return value


def resolve_key(method: str, fields: dict[str, FieldInfo], key: str) -> str:
    """Map a user key to a real field name, or raise ``unknown key … did you mean``."""
    k = key.strip().replace("-", "_")
    if k in fields:
        return k
    for cand in KEY_ALIASES.get(k.lower(), ()):
        if cand in fields:
            return cand
    if k.lower() in fields:
        return k.lower()
    valid = list(fields) + [a for a, cands in KEY_ALIASES.items() if any(c in fields for c in cands)]
    hint = did_you_mean(k, valid)
    raise PeftMagicError(
        f"unknown key '{key}' for {method}" + (f": {hint}" if hint else ""),
        None if hint else f"see %peft help {method} for its settings",
    )


def normalize_settings(spec: MethodSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """Resolve key aliases and coerce values; the result uses real field names only."""
    fields = spec.info.fields
    out: dict[str, Any] = {}
    for key, value in settings.items():
        real = resolve_key(spec.requested, fields, key)
        if real in out:
            raise PeftMagicError(f"'{key}' sets {spec.requested} '{real}' a second time")
        out[real] = coerce_value(spec.requested, fields[real], value)
    return out


# ----------------------------------------------------------------------------- adaptive defaults


def _linear_dims(model_config: Any) -> list[int]:
    """Hidden and intermediate widths of a transformers config (what layer sizes divide)."""
    dims = []
    for attr in ("hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "d_ff"):
        v = getattr(model_config, attr, None)
        if isinstance(v, int) and v > 0:
            dims.append(v)
    heads = getattr(model_config, "num_attention_heads", None)
    kv = getattr(model_config, "num_key_value_heads", None)
    hidden = getattr(model_config, "hidden_size", None)
    if isinstance(heads, int) and isinstance(kv, int) and isinstance(hidden, int) and heads:
        dims.append(hidden // heads * kv)
    return dims


def _largest_pow2_divisor(dims: list[int], cap: int) -> int:
    g = 0
    for d in dims:
        g = math.gcd(g, d)
    p = 1
    while p * 2 <= cap and g % (p * 2) == 0:
        p *= 2
    return p


def adaptive_defaults(spec: MethodSpec, model_config: Any, explicit: dict[str, Any], layer_count: int | None) -> dict:
    """Defaults that fit this model where peft's fixed defaults would fail or be useless.

    Only fields the user did not set are filled; each rule says why in a comment.
    """
    fields = spec.info.fields
    pt = spec.info.peft_type
    d: dict[str, Any] = {}
    dims = _linear_dims(model_config) if model_config is not None else []

    def want(name: str) -> bool:
        return name in fields and name not in explicit and name not in spec.preset

    # Prompt methods: peft has no default token count (None), which crashes at attach.
    if want("num_virtual_tokens") and fields["num_virtual_tokens"].default is None:
        d["num_virtual_tokens"] = 20
    if pt == "P_TUNING" and want("encoder_hidden_size") and dims:
        d["encoder_hidden_size"] = dims[0]
    # LLaMA-Adapter: peft requires explicit length and layer count.
    if pt == "ADAPTION_PROMPT":
        if want("adapter_len") and fields["adapter_len"].default is None:
            d["adapter_len"] = 10
        if want("adapter_layers") and fields["adapter_layers"].default is None:
            n = getattr(model_config, "num_hidden_layers", None) or layer_count or 1
            d["adapter_layers"] = max(1, min(n, 8))
    # AdaLoRA needs the schedule length up front; training overrides it with the real one.
    if pt == "ADALORA" and want("total_step") and fields["total_step"].default is None:
        d["total_step"] = 1000
    # Block / vector sizes must divide the layer widths; peft's defaults (256, 64) do not
    # divide e.g. SmolLM2's 576 or a tiny test model's 64.
    if dims:
        if pt == "VBLORA" and want("vector_length"):
            d["vector_length"] = _largest_pow2_divisor(dims, min(256, fields["vector_length"].default or 256))
        if pt == "C3A" and want("block_size"):
            d["block_size"] = _largest_pow2_divisor(dims, min(256, fields["block_size"].default or 256))
        if pt == "ROAD" and want("group_size"):
            d["group_size"] = _largest_pow2_divisor(dims, min(64, fields["group_size"].default or 64))
        smallest = min(dims)
        if pt == "WAVEFT" and want("n_frequency"):
            default = fields["n_frequency"].default or 2592
            d["n_frequency"] = min(default, max(1, smallest * smallest // 4))
        if pt == "SHIRA" and want("r"):
            default = fields["r"].default or 32
            d["r"] = min(default, max(1, smallest // 4))
    # X-LoRA refuses a model whose config has the cache on.
    return d


# ----------------------------------------------------------------------------- %peft methods


@dataclass
class MethodsReport:
    """Every available method, grouped by family; what ``%peft methods`` shows."""

    methods: list[MethodInfo]
    peft_version: str

    def families(self) -> list[str]:
        order = ["LoRA family", "prompt-based", "other"]
        present = {m.family for m in self.methods}
        return [f for f in order if f in present] + sorted(present - set(order))

    def __repr__(self) -> str:
        lines = [f"{len(self.methods)} PEFT methods (peft {self.peft_version}); merge = can merge into the base, "
                 "kbit = runs on a 4/8-bit base"]
        w = max(len(m.name) for m in self.methods)
        for fam in self.families():
            lines.append(f"{fam}:")
            for m in self.methods:
                if m.family == fam:
                    flags = ("merge" if m.can_merge else "     ") + " " + ("kbit" if m.supports_quantized else "    ")
                    alias = f" (also: {', '.join(m.aliases)})" if m.aliases else ""
                    lines.append(f"  {m.name:<{w}}  {flags}  {m.description}{alias}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from ..display.html import methods_html

        return methods_html(self)


def list_methods() -> MethodsReport:
    """All methods of the installed peft (plus ours), for ``%peft methods`` and the panel."""
    import peft

    return MethodsReport(list(registry().values()), peft.__version__)
