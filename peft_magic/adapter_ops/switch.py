"""Several adapters on one model: make one active, switch all off / on, delete one.

Every action updates the shared state (active adapter, off / on) and emits an ``adapter``
event, so ``%peft show``, the panel and the status bar agree.
"""

from __future__ import annotations

from typing import Any

from .. import peft_view, stack
from ..state import ModelState
from .announce import emit_adapter
from .find import method_name, peft_or_fail, pick_adapter
from .results import LifecycleResult


def set_off(pm: Any, st: ModelState) -> None:
    """Switch the adapters off and record it (the model computes the base model)."""
    peft_view.adapters_off(pm)
    st.adapters_off = True


def set_on(pm: Any, st: ModelState) -> None:
    """Switch the adapters back on and record it."""
    peft_view.adapters_on(pm)
    st.adapters_off = False


def use_adapter(model: Any, name: str) -> LifecycleResult:
    """Make adapter ``name`` the active one (and switch adapters back on if they were off).

    The adapter keeps its trainability: one loaded for inference stays frozen.
    """
    st, pm = peft_or_fail(model, "switch between")
    name = pick_adapter(pm, name)
    cfg = pm.peft_config[name]
    notes = []
    if st.adapters_off:
        set_on(pm, st)
        notes.append("adapters were switched off; they are on again")
    with stack.quiet():
        pm.set_adapter(name, inference_mode=bool(getattr(cfg, "inference_mode", False)))
    method = method_name(cfg, st, name)
    emit_adapter(st, pm, name, method, "activated")
    return LifecycleResult(pm, "activated", name, f"active adapter: '{name}' ({method})", notes)


def adapters_off(model: Any) -> LifecycleResult:
    """Switch every adapter off: the model computes exactly what the base model computes.

    Nothing is removed; ``adapters_on`` (``%peft on``) switches them back on.
    """
    st, pm = peft_or_fail(model, "switch off")
    if st.adapters_off:
        return LifecycleResult(pm, "off", None, "adapters are already off — nothing changed")
    set_off(pm, st)
    emit_adapter(st, pm, None, None, "off")
    return LifecycleResult(pm, "off", None, "adapters off: the model now computes the base model "
                           "(%peft on to switch them back on)")


def adapters_on(model: Any) -> LifecycleResult:
    """Switch adapters back on after ``adapters_off`` (``%peft off``)."""
    st, pm = peft_or_fail(model, "switch on")
    if not st.adapters_off:
        return LifecycleResult(pm, "on", None, "adapters are already on — nothing changed")
    set_on(pm, st)
    active = peft_view.active_adapters(pm)
    emit_adapter(st, pm, active[0] if active else None, None, "on")
    return LifecycleResult(pm, "on", None, "adapters on; active: " + ", ".join(f"'{a}'" for a in active))


def delete_adapter(model: Any, name: str) -> LifecycleResult:
    """Remove adapter ``name``. Removing the last one returns the plain base model."""
    st, pm = peft_or_fail(model, "delete")
    name = pick_adapter(pm, name)
    method = method_name(pm.peft_config[name], st, name)
    if len(pm.peft_config) == 1:
        from .attach import detach

        if st.adapters_off:
            set_on(pm, st)
        base = detach(pm)
        st.adapters.pop(name, None)
        st.adapters_off = False
        emit_adapter(st, base, name, method, "deleted")
        return LifecycleResult(base, "deleted", name, f"deleted {method} adapter '{name}'; the model is the plain "
                               f"base model again ({type(base).__name__})")
    was_active = name in peft_view.active_adapters(pm)
    with stack.quiet():
        pm.delete_adapter(name)
    st.adapters.pop(name, None)
    notes = []
    if was_active:
        notes.append(f"'{name}' was active; active now: "
                     + ", ".join(f"'{a}'" for a in peft_view.active_adapters(pm)))
    emit_adapter(st, pm, name, method, "deleted")
    return LifecycleResult(pm, "deleted", name, f"deleted {method} adapter '{name}'; left: "
                           + ", ".join(f"'{a}'" for a in pm.peft_config), notes)
