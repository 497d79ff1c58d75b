"""The notebook's namespace as the faces see it: which variable holds the model, binding
results back to it, and the tokenizer that goes with it.

Shared by the magics and the panel so both find the same model and rebind it the same
way — which is what makes them one state: an attach from the panel rebinds ``model``
exactly as ``%peft lora`` does, and the engine remembers the variable for each model.
No IPython import: a namespace is a plain dict.
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import PeftMagicError
from .state import all_states, state_for


def is_model(obj: Any) -> bool:
    """A torch module (checked without importing torch: no model exists before it is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def model_var(ns: dict[str, Any], explicit: str | None = None) -> str:
    """The variable holding the model: ``explicit``, else ``model``, else the one the engine
    last bound, else the only model in the namespace (``model`` when none)."""
    if explicit:
        return explicit
    if "model" in ns:
        return "model"
    known = [s.variable for s in all_states() if s.variable and s.variable in ns]
    if known:
        return known[-1]
    models = [k for k, v in ns.items() if not k.startswith("_") and is_model(v)]
    return models[0] if len(models) == 1 else "model"


def get_model(ns: dict[str, Any], var: str) -> Any:
    """The model in ``var``; one line when it is missing or not a model."""
    if var not in ns:
        raise PeftMagicError(f"no variable '{var}' in the notebook",
                             "load a model with %peft load smollm2 (or pass --model NAME)")
    obj = ns[var]
    if not is_model(obj):
        raise PeftMagicError(f"'{var}' is a {type(obj).__name__}, not a torch model",
                             "pass --model NAME for the variable that holds your model")
    return obj


def bind_model(ns: dict[str, Any], var: str, model: Any) -> None:
    """Put ``model`` in ``var`` and remember that variable for it (later commands and the
    panel find the model by it)."""
    if ns.get(var) is not model:
        ns[var] = model
    st = state_for(model)
    if st is not None:
        st.variable = var


def tokenizer_var(var: str) -> str:
    """Where ``%peft load --as VAR`` puts the tokenizer: ``tokenizer`` for ``model``, else ``VAR_tokenizer``."""
    return "tokenizer" if var == "model" else f"{var}_tokenizer"


def find_tokenizer(ns: dict[str, Any], var: str, explicit: str | None = None) -> Any:
    """The tokenizer that goes with model variable ``var`` (``explicit`` names one)."""
    if explicit:
        if explicit not in ns:
            raise PeftMagicError(f"no variable '{explicit}' in the notebook")
        return ns[explicit]
    for name in (f"{var}_tokenizer", "tokenizer"):
        if name in ns:
            return ns[name]
    return None
