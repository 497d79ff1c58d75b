"""Every PEFT method of the installed peft, found at run time, resolved from what users type.

Why discovered and not listed: peft adds methods in nearly every release (45 in 0.21);
a hard-coded list is stale the day it ships. We walk peft's own registry (filled by
``register_peft_method``), so a method added to peft — or registered by a plugin, like
our bottleneck adapters — is available the moment it is installed. Capabilities (can it
merge, does it run on a 4/8-bit base, is it prompt-based) are read from peft's classes,
corrected by ``behaviour`` where peft's classes do not tell the whole truth.
"""

from __future__ import annotations

import enum
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

from .. import peft_view
from ..errors import PeftMagicError, did_you_mean
from .aliases import METHOD_ALIASES, normalize_name
from .behaviour import behaviour, family_of
from .fields import FieldInfo, config_fields


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


def _describe(peft_type: str, config_cls: type) -> MethodInfo:
    q = behaviour(peft_type)
    prompt = peft_view.is_prompt_config_class(config_cls)
    can_merge = False if prompt else (q.can_merge if q.can_merge is not None
                                      else peft_view.layers_can_merge(config_cls))
    kbit = q.kbit if q.kbit is not None else peft_view.has_bnb_layers(config_cls)
    description = q.description or peft_view.tuner_doc(peft_type) or (inspect.getdoc(config_cls)
                                                                       or peft_type).split("\n")[0]
    aliases = tuple(sorted(a for a, (pt, _, _) in METHOD_ALIASES.items() if pt == peft_type))
    return MethodInfo(peft_type=peft_type, name=peft_type.lower(), config_cls=config_cls,
                      family=family_of(peft_type, prompt), description=description, is_prompt_learning=prompt,
                      can_merge=can_merge, supports_quantized=kbit, aliases=aliases)


@functools.lru_cache(maxsize=1)
def _registry_snapshot(keys: tuple[Any, ...]) -> dict[str, MethodInfo]:
    mapping = peft_view.config_mapping()
    out: dict[str, MethodInfo] = {}
    for key in keys:
        pt = key.value if isinstance(key, enum.Enum) else str(key)
        out[pt] = _describe(pt, mapping[key])
    return out


def registry() -> dict[str, MethodInfo]:
    """All methods, keyed by PeftType name (``"LORA"``), in peft's registry order."""
    return _registry_snapshot(tuple(peft_view.config_mapping().keys()))


def method_info(peft_type: str) -> MethodInfo | None:
    """The method of a peft type (``None`` for one this peft does not know)."""
    return registry().get(peft_type)


def resolve_method(name: str) -> MethodSpec:
    """Turn what the user typed (``LoRA``, ``qlora``, ``p-tuning``, ``prefix_tuning``) into a spec."""
    key = normalize_name(name)
    reg = registry()
    if key in METHOD_ALIASES:
        pt, preset, needs_q = METHOD_ALIASES[key]
        if pt in reg:
            return MethodSpec(key, reg[pt], dict(preset), needs_q)
    if key.upper() in reg:
        return MethodSpec(key, reg[key.upper()])
    compact = {k.replace("_", ""): k for k in reg}  # "prefixtuning", "p_tuning" spelled "ptuning"…
    if key.replace("_", "").upper() in compact:
        pt = compact[key.replace("_", "").upper()]
        return MethodSpec(pt.lower(), reg[pt])
    names = [m.name for m in reg.values()] + list(METHOD_ALIASES)
    hint = did_you_mean(key, names)
    raise PeftMagicError(
        f"unknown PEFT method '{name}'" + (f": {hint}" if hint else ""),
        "see %peft methods for all methods",
    )
