"""The notebook's namespace as the faces see it: which variable holds the model, binding
results back to it, and the tokenizer that goes with it.

Shared by the magics and the panel so both find the same model and rebind it the same
way — which is what makes them one state: an attach from the panel rebinds ``model``
exactly as ``%peft lora`` does, and the engine remembers the variable for each model.
No IPython import: a namespace is a plain dict.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Any

from .errors import PeftMagicError, first_line
from .state import all_states, state_for

#: how a value that names user data or a model is read (shown in the help of every command
#: that takes one): the first of these that works wins
VALUE_RULE = ("a Python expression evaluated in the notebook (a name, rows[8:], ds['train'], "
              "ds['train'].select(range(16)), cfg.data) wins; a string, or text that does not "
              "evaluate, is a file path; otherwise one line says what was tried")


def _compile(text: str) -> tuple[Any, str | None]:
    """``text`` compiled as one Python expression, or the reason it is not one."""
    try:
        return compile(text, "<%peft value>", "eval"), None
    except SyntaxError as e:
        return None, f"{e.msg}" if e.msg else "invalid syntax"


def resolve_value(ns: dict[str, Any], raw: str | None, parsed: Any, what: str) -> Any:
    """The value of a setting that names user data (``data=``, ``eval=``), by ``VALUE_RULE``.

    ``raw`` is the text as typed (quotes kept); ``parsed`` the literal the syntax reader made
    of it. A non-string literal (``eval=0.1``, ``data=["a", "b"]``) is itself the value. A
    string result of the expression is a path and must exist. Evaluating runs the user's
    own expression in the user's own namespace, as a cell would.
    """
    if not isinstance(parsed, str):
        return parsed
    text = (raw if raw is not None else parsed).strip()
    code, syntax = _compile(text)
    failure = None
    if code is not None:
        try:
            value = eval(code, ns)  # noqa: S307 — the user's expression, in the user's kernel
        except Exception as e:  # noqa: BLE001 — reported in one line below, unless a file matches
            failure = e
        else:
            if not isinstance(value, (str, os.PathLike)):
                return value
            if os.path.exists(os.path.expanduser(str(value))):
                return str(value)
            raise PeftMagicError(f"no such file: {value} (for {what}=)",
                                 "give a variable or expression holding the data, or a .jsonl/.json/.csv/.txt path")
    path = os.path.expanduser(parsed)
    if os.path.exists(path):
        return parsed
    if isinstance(failure, NameError) and text.isidentifier():
        raise PeftMagicError(f"no variable '{text}' in the notebook (and no file by that name) for {what}=",
                             "define it first, or give a path to a .jsonl/.json/.csv/.txt file")
    reason = f"{type(failure).__name__}: {first_line(failure)}" if failure is not None else \
        f"not a Python expression ({syntax})"
    raise PeftMagicError(f"{what}={text}: {reason}; and no file by that name",
                         "a variable or expression (rows[8:], ds['train']) or a .jsonl/.json/.csv/.txt path")


def input_value(ns: dict[str, Any], raw: str, text: str) -> Any:
    """An input given as one word (``%peft predict …``): quoted, it is that text; else a
    Python expression that evaluates in the notebook (``reviews``, ``texts[:4]``) is its
    value, and anything else is the text as typed."""
    if raw[:1] in ("'", '"'):
        return text
    if raw.isidentifier():  # a bare word is a variable of the notebook or the text (never a builtin)
        return ns.get(raw, text)
    code, _ = _compile(raw)
    if code is not None:
        try:
            return eval(code, ns)  # noqa: S307 — the user's expression, in the user's kernel
        except Exception:  # noqa: BLE001 — not a value: the word is the text to predict on
            pass
    return text


def _target(text: str) -> ast.expr | None:
    """``text`` parsed as an expression, or None."""
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None


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


def lookup(ns: dict[str, Any], ref: str, what: str) -> Any:
    """The object a ``--model`` / ``--tokenizer`` reference names: a variable, or a Python
    expression (``models['small']``, ``pipe.model``); one line when it names nothing."""
    if ref.isidentifier():
        if ref not in ns:
            raise PeftMagicError(f"no variable '{ref}' in the notebook",
                                 "load a model with %peft load smollm2 (or pass --model NAME)" if what == "model"
                                 else f"pass --{what} NAME for the variable that holds your {what}")
        return ns[ref]
    code, syntax = _compile(ref)
    if code is None:
        raise PeftMagicError(f"--{what} {ref}: not a Python expression ({syntax})",
                             "a variable name or an expression such as models['small']")
    try:
        return eval(code, ns)  # noqa: S307 — the user's expression, in the user's kernel
    except Exception as e:  # noqa: BLE001 — one line, the user's expression failed
        raise PeftMagicError(f"--{what} {ref}: {type(e).__name__}: {first_line(e)}") from None


def get_model(ns: dict[str, Any], var: str) -> Any:
    """The model in ``var`` (a variable or an expression); one line when it is missing or
    not a model."""
    obj = lookup(ns, var, "model")
    if not is_model(obj):
        raise PeftMagicError(f"'{var}' is a {type(obj).__name__}, not a torch model",
                             "pass --model NAME for the variable that holds your model")
    return obj


def bind_model(ns: dict[str, Any], var: str, model: Any) -> None:
    """Put ``model`` in ``var`` and remember that variable for it (later commands and the
    panel find the model by it). ``var`` may be an assignable expression (``models['a']``,
    ``self.model``): the wrapped model is assigned there, as ``x = …`` would."""
    if var.isidentifier():
        if ns.get(var) is not model:
            ns[var] = model
    else:
        node = _target(var)
        if isinstance(node, (ast.Subscript, ast.Attribute)) and lookup(ns, var, "model") is not model:
            scratch = "__peft_magic_bound__"
            ns[scratch] = model
            try:
                exec(compile(f"{var} = {scratch}", "<%peft --model>", "exec"), ns)  # noqa: S102 — user's target
            finally:
                ns.pop(scratch, None)
    st = state_for(model)
    if st is not None:
        st.variable = var


def tokenizer_var(var: str) -> str:
    """Where ``%peft load --as VAR`` puts the tokenizer: ``tokenizer`` for ``model``, else ``VAR_tokenizer``."""
    return "tokenizer" if var == "model" else f"{var}_tokenizer"


def find_tokenizer(ns: dict[str, Any], var: str, explicit: str | None = None) -> Any:
    """The tokenizer that goes with model variable ``var`` (``explicit`` names one)."""
    if explicit:
        return lookup(ns, explicit, "tokenizer")
    for name in ((f"{var}_tokenizer", "tokenizer") if var.isidentifier() else ("tokenizer",)):
        if name in ns:
            return ns[name]
    return None
