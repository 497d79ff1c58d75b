"""A peft config dataclass's fields as a user sees them: name, kind, default, help.

Why: the magics' ``key=value`` parsing, ``%peft help METHOD`` and the panel's generated
form all need the same view of a config — which fields are user settings (not peft's
bookkeeping), what kind of value each takes (so text can be converted and a widget
chosen), its default and its help text (from peft's own ``metadata["help"]``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any

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


def strip_optional(ann: Any) -> tuple[Any, bool]:
    """``Optional[X]`` → ``(X, True)``; anything else → ``(ann, False)``."""
    if typing.get_origin(ann) is typing.Union:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) != len(typing.get_args(ann))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional
    return ann, False


def allows(info: FieldInfo, typ: type) -> bool:
    """Whether the field's (non-optional) annotation names ``typ`` among its options."""
    return typ in typing.get_args(strip_optional(info.annotation)[0])


_SIMPLE_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}


def list_item_type(info: FieldInfo) -> Any:
    """The item type of a list field (``list[int]`` → ``int``); ``str`` for names and for
    ``str | list[str]``, ``Any`` where the annotation does not say."""
    ann, _ = strip_optional(info.annotation)
    options = typing.get_args(ann) if typing.get_origin(ann) is typing.Union else (ann,)
    for option in options:
        if typing.get_origin(option) in (list, tuple):
            args = typing.get_args(option)
            return args[0] if args else Any
    return str


def _union_kind(args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    kinds = {field_kind(a)[0] for a in args}
    if kinds <= {"list", "str"} and "list" in kinds:
        return "list", ()
    if kinds == {"list", "int"}:
        return "int_or_list", ()
    if kinds == {"int", "float"}:
        return "float", ()
    if "bool" in kinds and kinds <= {"bool", "choice", "str"}:
        return "choice", (True, False) + tuple(c for a in args for c in field_kind(a)[1])
    if "choice" in kinds and kinds <= {"choice", "str"}:
        return "choice", tuple(c for a in args for c in field_kind(a)[1])
    return "other", ()


def field_kind(ann: Any) -> tuple[str, tuple[Any, ...]]:
    """The kind of value an annotation takes, and its choices for Literal / Enum."""
    ann, _ = strip_optional(ann)
    origin = typing.get_origin(ann)
    if ann in _SIMPLE_KINDS:
        return _SIMPLE_KINDS[ann], ()
    if origin is typing.Literal:
        return "choice", typing.get_args(ann)
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return "choice", tuple(m.value for m in ann)
    if origin in (list, tuple):
        return "list", ()
    if origin is dict or ann is dict:
        return "dict", ()
    if origin is typing.Union:
        return _union_kind(typing.get_args(ann))
    return "other", ()


def clean_help(text: Any) -> str:
    """peft's help metadata as one plain line (links reduced to their text)."""
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
    """The user-settable fields of a config dataclass (peft's, or ``TrainingArguments``), in order."""
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
        kind, choices = field_kind(ann)
        _, optional = strip_optional(ann)
        out[f.name] = FieldInfo(
            name=f.name, annotation=ann, default=default, help=clean_help(f.metadata.get("help", "")),
            kind=kind, choices=choices, optional=optional, common=f.name in COMMON_FIELDS,
        )
    return out


def changed_settings(config: Any, skip: frozenset[str] = INTERNAL_FIELDS) -> dict[str, Any]:
    """The fields of a config object that differ from their defaults (what the user chose)."""
    out: dict[str, Any] = {}
    if not dataclasses.is_dataclass(config):
        return out
    for f in dataclasses.fields(config):
        if f.name in skip or f.name.startswith("_"):
            continue
        value = getattr(config, f.name, None)
        default = field_default(f)
        if isinstance(value, set):
            value = sorted(value)
        if isinstance(default, set):
            default = sorted(default)
        if value != default:
            out[f.name] = value
    return out
