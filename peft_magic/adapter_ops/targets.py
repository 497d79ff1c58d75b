"""The target-module explorer: which layers an adapter can go on, and what a pattern hits.

Why: ``target_modules`` is the setting people get wrong most — a typo'd name, a GPT-2
``c_attn`` where a Llama has ``q_proj``, a regex that matches three layers of thirty.
peft only complains when *nothing* matches. This module lists the candidate layers
grouped by name, and evaluates a pattern with peft's own matching
(``check_target_module_exists``, and ``all-linear`` expanded by peft itself on a
skeleton), so what it shows is exactly what an attach would do.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .. import peft_view
from ..errors import PeftMagicError, did_you_mean
from ..fmt import fmt_targets, strip_peft_prefix
from ..model.skeleton import attach_on_skeleton, can_skeleton, skeleton_of
from ..peft_methods.behaviour import behaviour
from ..rendering import HtmlRepr

_ADAPTABLE = ("Linear", "Conv1D", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Linear4bit", "Linear8bitLt",
              "MultiheadAttention")


@dataclass
class TargetGroup:
    """All modules that share a last name component (``q_proj``) and a kind."""

    name: str
    kind: str
    count: int
    shape: str  # "576→576" or "mixed"
    params: int  # total parameters over the group
    default: bool = False  # peft's default target for this architecture
    matched: int = 0  # how many of the group a pattern matched


@dataclass
class TargetReport(HtmlRepr):
    """What ``%peft targets`` shows; also a plain data object for code."""

    model_type: str
    groups: list[TargetGroup]
    default_targets: list[str] | str | None
    pattern: Any = None
    matched: list[str] = field(default_factory=list)  # full module names a pattern matched
    unmatched: list[str] = field(default_factory=list)  # requested names that match nothing
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"Adaptable layers of {self.model_type} (peft default: {fmt_targets(self.default_targets)})"]
        w = max([len(g.name) for g in self.groups] + [4])
        lines.append(f"  {'name':<{w}}  {'kind':<12} {'count':>5}  {'shape':<14} {'params':>10}"
                     + ("  matched" if self.pattern is not None else ""))
        for g in self.groups:
            mark = "*" if g.default else " "
            row = f"{mark} {g.name:<{w}}  {g.kind:<12} {g.count:>5}  {g.shape:<14} {g.params:>10,}"
            if self.pattern is not None:
                row += f"  {g.matched}/{g.count}"
            lines.append(row)
        lines.append("  * = peft's default target for this architecture")
        if self.pattern is not None:
            lines.append(f"pattern {fmt_targets(self.pattern)} matches {len(self.matched)} modules")
        for msg in self.warnings:
            lines.append(f"warning: {msg}")
        return "\n".join(lines)


def _kind(module: Any) -> str:
    return type(module).__name__


def _shape(module: Any) -> str:
    for a, b in (("in_features", "out_features"), ("num_embeddings", "embedding_dim"),
                 ("in_channels", "out_channels")):
        if hasattr(module, a) and hasattr(module, b):
            return f"{getattr(module, a)}→{getattr(module, b)}"
    w = getattr(module, "weight", None)
    if w is not None and getattr(w, "ndim", 0) == 2:  # Conv1D stores (in, out)
        return f"{w.shape[0]}→{w.shape[1]}"
    return "?"


def candidate_modules(model: Any) -> "OrderedDict[str, Any]":
    """Leaf modules an adapter can attach to, by full name (peft wrappers unwrapped)."""
    out: OrderedDict[str, Any] = OrderedDict()
    skip_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        if peft_view.is_tuner_layer(module):
            out[strip_peft_prefix(name)] = peft_view.base_layer(module)
            skip_prefixes.append(name + ".")
            continue
        if _kind(module) in _ADAPTABLE and not list(module.children()):
            out[strip_peft_prefix(name)] = module
    return out


def default_targets(model_type: str, peft_type: str = "LORA") -> list[str] | None:
    """peft's per-architecture default ``target_modules`` for a method, or ``None``."""
    own = behaviour(peft_type).default_targets
    if own is not None:
        return own(model_type)
    return peft_view.default_target_modules(model_type, peft_type)


def _model_type(model: Any) -> str:
    base = model
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        base = get_base()
    cfg = getattr(base, "config", None)
    return getattr(cfg, "model_type", None) or type(base).__name__


def _expand_all_linear(model: Any) -> list[str]:
    """Full names that peft's ``all-linear`` would target, computed by peft on a skeleton."""
    from peft import LoraConfig

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not can_skeleton(base):
        return []
    pm = attach_on_skeleton(skeleton_of(base), LoraConfig(target_modules="all-linear", r=1))
    return peft_view.targeted_module_names(pm)


def explore(model: Any, pattern: Any = None, peft_type: str = "LORA") -> TargetReport:
    """Group the adaptable layers of ``model`` and evaluate ``pattern`` against them.

    ``pattern``: ``None`` (just list), a list of names (peft's suffix matching), a
    regex string (peft's full match), or ``"all-linear"``.
    """
    mods = candidate_modules(model)
    model_type = _model_type(model)
    defaults = default_targets(model_type, peft_type)
    groups: OrderedDict[tuple[str, str], TargetGroup] = OrderedDict()
    shapes: dict[tuple[str, str], set[str]] = {}
    for full, mod in mods.items():
        short = full.rsplit(".", 1)[-1]
        key = (short, _kind(mod))
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        if key not in groups:
            groups[key] = TargetGroup(short, _kind(mod), 0, "", 0, default=bool(defaults and short in defaults))
            shapes[key] = set()
        g = groups[key]
        g.count += 1
        g.params += params
        shapes[key].add(_shape(mod))
    for key, g in groups.items():
        g.shape = next(iter(shapes[key])) if len(shapes[key]) == 1 else "mixed"

    report = TargetReport(model_type, list(groups.values()), defaults if defaults is not None else "all-linear")
    if pattern is None:
        return report

    report.pattern = pattern
    if pattern in ("all-linear", "all_linear"):
        matched = set(_expand_all_linear(model))
    else:
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as e:
                raise PeftMagicError(f"invalid regex '{pattern}': {e}") from None
        matched = {n for n in mods if peft_view.target_matches(pattern, n)}
    report.matched = [n for n in mods if n in matched]
    for full in report.matched:
        short = full.rsplit(".", 1)[-1]
        for g in report.groups:
            if g.name == short and g.kind == _kind(mods[full]):
                g.matched += 1
    if isinstance(pattern, (list, tuple, set)):
        for name in pattern:
            if not any(peft_view.target_matches([name], n) for n in mods):
                report.unmatched.append(name)
        if report.unmatched:
            names = sorted({g.name for g in report.groups})
            for name in report.unmatched:
                hint = did_you_mean(name, names)
                report.warnings.append(f"'{name}' matches no layer" + (f" ({hint})" if hint else ""))
    if not report.matched:
        report.warnings.append(f"pattern {fmt_targets(pattern)} matches no layer")
    for g in report.groups:
        if 0 < g.matched < g.count:
            report.warnings.append(f"'{g.name}' matched only {g.matched} of {g.count} layers")
    return report

