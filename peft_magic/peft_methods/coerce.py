"""The user's text values → the types a config field declares, with one-line errors.

Why: a magic line gives strings and Python literals; peft's configs want ints, floats,
bools, lists, Literals. Each field *kind* (``fields.field_kind``) has one converter in
:data:`CONVERTERS`; a converter returns the converted value or :data:`BAD`, and the
error always names the method, the key and the type expected. Users type what is
natural: ``8`` for a float, ``"true"`` for a bool, a bare name where a list is wanted
(``target=q_proj`` → ``["q_proj"]``), and a regex or ``all-linear`` stays the string
peft expects.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from typing import Any

from ..errors import PeftMagicError, did_you_mean
from .aliases import KEY_ALIASES
from .fields import FieldInfo, allows, list_item_type

BAD = object()  # a converter's "this value does not fit"
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_REGEX_CHARS = re.compile(r"[.*+?\[\]()|^$\\{}]")


def _to_bool(info: FieldInfo, v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in _TRUE + _FALSE:
        return v.lower() in _TRUE
    return BAD


def _to_int(info: FieldInfo, v: Any) -> Any:
    if isinstance(v, bool):
        return BAD
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    return BAD


def _to_float(info: FieldInfo, v: Any) -> Any:
    if isinstance(v, bool):
        return BAD
    if isinstance(v, (int, float)):
        return v if (isinstance(v, int) and allows(info, int)) else float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return BAD


def _to_str(info: FieldInfo, v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return BAD


def _to_choice(info: FieldInfo, v: Any) -> Any:
    for c in info.choices:
        if v == c and type(v) is type(c):
            return c
    if isinstance(v, str):
        for c in info.choices:
            if isinstance(c, (str, bool)) and str(c).lower() == v.lower():
                return c
        if any(isinstance(c, str) and "[" in c for c in info.choices):  # 'pissa_niter_[number of iters]'
            return v
    return BAD


def _to_list(info: FieldInfo, v: Any) -> Any:
    item = list_item_type(info)
    if item is not str:  # token ids, masks, layer pairs: the items keep their type
        if isinstance(v, str):
            items: Any = [x for x in v.strip("[]() ").split(",") if x.strip()]
        else:
            items = [v] if isinstance(v, int) and not isinstance(v, bool) else v
        if not isinstance(items, (list, tuple)):
            return BAD
        out = [_to_item(item, x) for x in items]
        return BAD if any(x is BAD for x in out) else out
    if isinstance(v, (list, tuple, set)):
        return list(v) if all(isinstance(x, str) for x in v) else [str(x) for x in v]
    if isinstance(v, str):
        if allows(info, str) and (v in ("all-linear", "all_linear") or _REGEX_CHARS.search(v)):
            return "all-linear" if v == "all_linear" else v
        return [x.strip() for x in v.split(",") if x.strip()]  # module names never hold commas
    return BAD


def _to_item(item: Any, x: Any) -> Any:
    """One list item as the list's declared item type (int, or a tuple of ints)."""
    if item is int:
        return _to_int(None, x.strip() if isinstance(x, str) else x)  # type: ignore[arg-type]
    if typing.get_origin(item) is tuple and isinstance(x, (list, tuple)):
        parts = typing.get_args(item)
        if len(parts) == len(x) and all(t is int for t in parts):
            got = tuple(_to_int(None, y) for y in x)  # type: ignore[arg-type]
            return BAD if BAD in got else got
    return x if item is Any else BAD


def _to_int_or_list(info: FieldInfo, v: Any) -> Any:
    if isinstance(v, bool):
        return BAD
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return list(v)
    return BAD


def _to_dict(info: FieldInfo, v: Any) -> Any:
    return v if isinstance(v, dict) else BAD


#: field kind → converter; kinds not listed ("other") take the value as it is
CONVERTERS: dict[str, Callable[[FieldInfo, Any], Any]] = {
    "bool": _to_bool, "int": _to_int, "float": _to_float, "str": _to_str, "choice": _to_choice,
    "list": _to_list, "int_or_list": _to_int_or_list, "dict": _to_dict,
}

_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
               "list": "a name or a list of names", "dict": "a dict like {'a': 1}",
               "int_or_list": "an integer or a list of integers"}


def _item_name(item: Any) -> str:
    if typing.get_origin(item) is tuple:
        return "pairs like [[0, 4], [2, 5]]" if typing.get_args(item) == (int, int) else "tuples"
    return getattr(item, "__name__", str(item))


def type_name(kind: str, choices: tuple[Any, ...]) -> str:
    """What a value of ``kind`` looks like, for an error message."""
    if kind in _TYPE_NAMES:
        return _TYPE_NAMES[kind]
    return "one of " + ", ".join(repr(c) for c in choices) if choices else "a Python literal"


def coerce_value(method: str, info: FieldInfo, value: Any) -> Any:
    """Convert a parsed user value to the field's type, or raise one line naming the key."""
    if value is None:
        if info.optional or info.default is None:
            return None
        out = BAD
    else:
        convert = CONVERTERS.get(info.kind)
        out = convert(info, value) if convert is not None else value
    if out is BAD:
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        item = list_item_type(info) if info.kind == "list" else str
        want = type_name(info.kind, info.choices) if item is str else \
            ("a list of integers like [5, 6, 7]" if item is int else f"a list of {_item_name(item)}")
        raise PeftMagicError(f"invalid value for {method} '{info.name}': expected {want}, got {shown}")
    return out


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


def normalize_settings(spec: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Resolve key aliases and coerce values of a ``MethodSpec``'s settings; the result uses
    real field names only."""
    fields = spec.info.fields
    out: dict[str, Any] = {}
    for key, value in settings.items():
        real = resolve_key(spec.requested, fields, key)
        if real in out:
            raise PeftMagicError(f"'{key}' sets {spec.requested} '{real}' a second time")
        out[real] = coerce_value(spec.requested, fields[real], value)
    return out
