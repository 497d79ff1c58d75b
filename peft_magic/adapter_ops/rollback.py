"""Undo a failed change to a model: what an attach may alter, recorded and put back.

Why: peft modifies the user's model in place, and an attach that fails halfway (a method
without 4-bit support, a layer type it cannot wrap, ``r=0``, a target that matches
nothing) leaves wrapped layers, changed ``requires_grad`` flags, dtypes and hooks behind.
A snapshot taken before, restored on failure, keeps the promise that a failed command
changes nothing.

The snapshot is structural: every module's children, parameters, buffers and hooks, as
the dicts ``torch.nn.Module`` keeps them in (about 2 ms for a 135M model). Restoring those
dicts puts back the very module objects the model had, whatever peft replaced, so a fresh
attach needs no dry run first (which cost as much as the attach itself).
"""

from __future__ import annotations

import contextlib
from typing import Any

from .. import peft_view, stack
from ..model.properties import is_checkpointing, is_quantized_param
from ..model.quantized import disable_cpu_4bit_repacking
from ..state import ModelState

#: the per-module dicts torch keeps a model's structure and hooks in
_TREE = ("_modules", "_parameters", "_buffers")
_EMPTY: frozenset = frozenset()
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def snapshot(base: Any) -> dict[str, Any]:
    """What a failed attach might change on the base model, to put back.

    One walk of the module tree, and copies of the non-empty dicts only (most are empty):
    the walk and the allocations are the whole cost of a snapshot."""
    requires_grad: dict[str, bool] = {}
    dtype: dict[str, Any] = {}
    modules, saved = [], []
    seen: set[int] = set()
    for mname, m in base.named_modules():
        d = m.__dict__
        modules.append(m)
        for key in _TREE:
            if d[key]:
                saved.append((m, key, dict(d[key])))
        for key in _HOOKS:
            if d.get(key):
                saved.append((m, key, set(d[key])))
        for pname, p in d["_parameters"].items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                name = f"{mname}.{pname}" if mname else pname
                requires_grad[name], dtype[name] = p.requires_grad, p.dtype
    return {
        "requires_grad": requires_grad,
        "dtype": dtype,
        "had_peft_config": "peft_config" in base.__dict__,
        "peft_config": base.__dict__.get("peft_config"),
        "gc": is_checkpointing(base),
        "modules": modules,
        "saved": saved,
    }


def _restore_tree(snap: dict[str, Any]) -> None:
    """Every module's children, parameters and buffers back to the objects they were; hooks
    added since the snapshot removed (dicts not saved were empty)."""
    before = {(id(m), key): value for m, key, value in snap.get("saved", ())}
    for module in snap.get("modules", ()):
        d = module.__dict__
        for key in _TREE:
            was = before.get((id(module), key), {})
            now = d[key]
            if now != was or list(now) != list(was):
                now.clear()
                now.update(was)
        for key in _HOOKS:
            now = d.get(key)
            if now:
                was = before.get((id(module), key), _EMPTY)
                for k in [k for k in now if k not in was]:
                    del now[k]


def restore_grads(base: Any, snap: dict[str, Any]) -> None:
    """Put the ``requires_grad`` flags back as they were."""
    for n, p in base.named_parameters():
        if n in snap["requires_grad"]:
            p.requires_grad_(snap["requires_grad"][n])


def restore(base: Any, snap: dict[str, Any]) -> None:
    """Take every peft wrapper off ``base`` and put structure, hooks, flags, dtypes and
    checkpointing back."""
    _restore_tree(snap)
    peft_view.strip_tuner_layers(base)
    for n, p in base.named_parameters():
        if n in snap["dtype"] and p.dtype != snap["dtype"][n] and not is_quantized_param(p):
            p.data = p.data.to(snap["dtype"][n])
    restore_grads(base, snap)
    if snap["had_peft_config"]:
        base.__dict__["peft_config"] = snap["peft_config"]
    else:
        base.__dict__.pop("peft_config", None)
    if not snap["gc"] and is_checkpointing(base):
        with contextlib.suppress(Exception):
            base.gradient_checkpointing_disable()
    with contextlib.suppress(Exception):
        if hasattr(base, "disable_input_require_grads") and not snap["gc"]:
            base.disable_input_require_grads()


def prepare_kbit(base: Any, st: ModelState) -> bool:
    """peft's k-bit preparation (once per model); True when it ran now."""
    from peft import prepare_model_for_kbit_training

    if st.kbit_prepared:
        return False
    disable_cpu_4bit_repacking(base)
    with stack.quiet():
        prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                         gradient_checkpointing_kwargs={"use_reentrant": False})
    st.kbit_prepared = True
    return True
