"""Which methods a plan compares, and which of the user's settings go to which method.

``%peft plan lora qlora r=16 tokens=20`` gives ``r`` to the LoRA rows and ``tokens`` to
prompt methods; a key no requested method has is one line with did-you-mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError, did_you_mean
from ..fmt import short_dtype
from ..peft_methods.aliases import KEY_ALIASES
from ..peft_methods.behaviour import behaviour
from ..peft_methods.coerce import normalize_settings, resolve_key
from ..peft_methods.discovery import resolve_method

PLAN_KEYS = ("batch", "seq", "grad_accum", "optim", "dtype", "attn", "goal", "task", "gpu", "checkpointing",
             "measure", "gpus", "strategy", "zero", "fused_loss", "objective")
DEFAULT_METHODS = ("full", "lora", "qlora", "prompt", "prefix", "bottleneck")
FULL_NAMES = ("full", "full-ft", "full_ft", "finetune", "full-finetune")


@dataclass
class Request:
    """One method to plan, with the settings that apply to it."""

    method: str  # as given, lower case
    spec: Any = None  # MethodSpec; None for full fine-tuning
    settings: dict[str, Any] = field(default_factory=dict)
    quantized: bool = False


def resolve_requests(methods: list[str], settings: dict[str, Any], explicit: bool) -> list[Request]:
    """Method names → requests, with each setting given to the methods that have it."""
    out: list[Request] = []
    for name in methods:
        key = name.strip().lower()
        if key in FULL_NAMES:
            out.append(Request("full"))
            continue
        try:
            spec = resolve_method(key)
        except PeftMagicError:
            if not explicit:
                continue  # e.g. bottleneck adapters not available in this install: skip quietly
            raise
        out.append(Request(key, spec, quantized=bool(spec.needs_quantized)))
    used: set[str] = set()
    for req in out:
        if req.spec is None:
            continue
        mine = {}
        for k, v in settings.items():
            try:
                resolve_key(req.spec.requested, req.spec.info.fields, k)
            except PeftMagicError:
                continue
            mine[k] = v
            used.add(k)
        req.settings = normalize_settings(req.spec, mine)
    unused = [k for k in settings if k not in used]
    if unused:
        names = ", ".join(r.method for r in out if r.spec is not None) or "full fine-tuning"
        known = {f for r in out if r.spec is not None for f in r.spec.info.fields} | set(KEY_ALIASES) | set(PLAN_KEYS)
        hint = did_you_mean(unused[0], known)
        raise PeftMagicError(f"'{unused[0]}' is not a setting of {names}" + (f": {hint}" if hint else ""),
                             None if hint else "plan settings are batch=, seq=, grad_accum=, optim=, dtype=, attn=, "
                                               "goal=; other keys go to the methods (r=, alpha=, tokens=, target=, …)")
    return out


def label_for(req: Request, peft_config: Any, dtype: str) -> str:
    """A row's name in the table: ``LoRA r=8 (bf16)``, ``QLoRA r=8 (4-bit NF4)`` …"""
    d = short_dtype(dtype)
    if req.spec is None:
        return f"full fine-tuning ({d})"
    row = behaviour(req.spec.info.peft_type)
    if row.label is not None:
        return row.label(peft_config, bool(req.quantized), d)
    if req.spec.info.is_prompt_learning and getattr(peft_config, "num_virtual_tokens", None):
        return f"{req.method} ({peft_config.num_virtual_tokens} tokens, {d})"
    return f"{req.method} ({d})"


class ConfigHolder:
    """Stands in for a model in ``build_config`` (which reads only ``.config``)."""

    def __init__(self, config: Any) -> None:
        self.config = config
