"""Finding a model's adapters and naming their methods.

Shared by every adapter operation, so that "which PeftModel wraps this model?", "which
adapter did the user mean?" and "what do we call this adapter's method?" each have one
answer (telling the faces that an adapter changed is ``announce``).
"""

from __future__ import annotations

from typing import Any

from .. import peft_view, stack
from ..errors import PeftMagicError, did_you_mean
from ..model.properties import require_model
from ..peft_methods.aliases import SHORT_NAMES
from ..peft_methods.behaviour import behaviour
from ..state import ModelState, peft_model_for, state_for


def peft_or_fail(model: Any, what: str) -> tuple[ModelState, Any]:
    """The state and the PeftModel of ``model``; a one-line error when it has no adapters."""
    stack.ensure()
    require_model(model)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    if pm is None or not peft_view.configs(pm):
        merged = f" (its adapters {', '.join(st.merged)} were merged into the weights)" if st.merged else ""
        raise PeftMagicError(f"this model has no adapters to {what}{merged}",
                             "attach one with %peft lora … or load one with %peft load-adapter DIR")
    return st, pm


def pick_adapter(pm: Any, name: str | None) -> str:
    """``name`` checked against the model's adapters (did-you-mean); ``None``: the active one."""
    if name is None:
        act = peft_view.active_adapters(pm)
        return act[0] if act else next(iter(pm.peft_config))
    if name not in pm.peft_config:
        hint = did_you_mean(name, pm.peft_config)
        raise PeftMagicError(f"no adapter '{name}' on this model" + (f": {hint}" if hint else ""),
                             "the adapters are: " + ", ".join(pm.peft_config))
    return name


def check_adapter_name(name: Any) -> None:
    """Adapter names become file and tensor names: letters, digits, '_' and '-' only."""
    if not name or not str(name).replace("_", "").replace("-", "").isalnum():
        raise PeftMagicError(f"invalid adapter name '{name}'", "use letters, digits, '_' or '-'")


def method_name(cfg: Any, st: ModelState | None, name: str | None = None) -> str:
    """How to call an adapter's method: as it was attached, else the friendliest alias."""
    if st is not None and name is not None and name in st.adapters:
        return st.adapters[name].method
    pt = peft_view.peft_type(cfg)
    name_of = behaviour(pt).name
    if name_of is not None:
        return name_of(cfg, st.bits if st is not None else None)
    return SHORT_NAMES.get(pt, pt.lower())
