"""The ``%peft …`` line equivalent to what the panel is about to do.

Why the panel shows a line at all: the panel is where people who do not know the magic
syntax start; the line teaches it, and pasting it into a cell must give *exactly* the
adapter the panel gives. So the line is not a pretty-print that might drift from the
parser: every value is rendered in the most readable spelling that the magic's own
parser (``syntax.read``) reads back to the same setting after the engine's own
normalisation (``peft_methods.coerce.normalize_settings``); a value with no readable
spelling falls back to a quoted Python literal, which always round-trips.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ..errors import PeftMagicError
from ..peft_methods.aliases import SHORT_NAMES
from ..peft_methods.coerce import normalize_settings, resolve_key
from ..peft_methods.discovery import MethodInfo, MethodSpec, resolve_method
from .read import parse_line, parse_value

#: short key aliases shown in the line where they resolve to the same field
SHORT_KEYS = ("alpha", "dropout", "target", "tokens")

_PLAIN = re.compile(r"^[A-Za-z_][\w\-./]*$")


def method_word(info: MethodInfo) -> str:
    """What a user types for ``info``: ``lora``, ``prefix``, ``p-tuning``, ``loha`` …"""
    word = SHORT_NAMES.get(info.peft_type)
    if word is not None:
        try:
            if resolve_method(word).info.peft_type == info.peft_type:
                return word
        except PeftMagicError:
            pass
    return info.name


def short_key(spec: MethodSpec, real: str) -> str:
    """The shortest key that the parser maps to field ``real`` for this method."""
    fields = spec.info.fields
    for alias in SHORT_KEYS:
        try:
            if resolve_key(spec.requested, fields, alias) == real:
                return alias
        except PeftMagicError:
            continue
    return real


def _candidates(value: Any) -> list[str]:
    """Spellings of ``value`` from most to least readable."""
    out: list[str] = []
    if isinstance(value, bool) or value is None:
        out.append(repr(value))
    elif isinstance(value, (int, float)):
        out.append(repr(value))
    elif isinstance(value, str):
        if _PLAIN.match(value):
            out.append(value)
        out.append(shlex.quote(value))
    elif isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(isinstance(v, str) and _PLAIN.match(v) for v in items):
            out.append(",".join(items))
        if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            out.append(",".join(repr(v) for v in items) if len(items) > 1 else f"[{items[0]!r}]")
    elif isinstance(value, dict) and value and all(isinstance(k, str) and _PLAIN.match(k) for k in value):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            out.append("{" + ", ".join(f"{k}: {v!r}" for k, v in value.items()) + "}")
    out.append(shlex.quote(repr(value)))
    return out


def _same(spec: MethodSpec, key: str, parsed: Any, value: Any) -> bool:
    try:
        a = normalize_settings(spec, {key: parsed})
        b = normalize_settings(spec, {key: value})
    except PeftMagicError:
        return False
    return a == b and all(type(a[k]) is type(b[k]) for k in a)


def render_setting(spec: MethodSpec, real: str, value: Any) -> str:
    """``key=value`` for one setting, guaranteed to parse back to the same setting."""
    key = short_key(spec, real)
    for cand in _candidates(value):
        token = f"{key}={cand}"
        try:
            parsed = parse_line(token).settings
        except PeftMagicError:
            continue
        if list(parsed) == [key] and _same(spec, key, parsed[key], value):
            return token
    raise PeftMagicError(f"the value of '{real}' cannot be written on a %peft line", "set it in Python instead")


def _flag_value(value: str) -> str:
    return value if _PLAIN.match(value) else shlex.quote(value)


def attach_line(word: str, settings: dict[str, Any], *, name: str = "default", task: str | None = None,
                var: str = "model") -> str:
    """The ``%peft METHOD key=value … [--model V] [--name A] [--task T]`` line for an attach.

    ``settings`` are normalised field names and values; the result is checked by parsing
    it with the magic's own parser, so what is shown is what the magic would do.
    """
    spec = resolve_method(word)
    parts = ["%peft", word] + [render_setting(spec, k, v) for k, v in settings.items()]
    if var != "model":
        parts += ["--model", _flag_value(var)]
    if name != "default":
        parts += ["--name", _flag_value(name)]
    if task:
        parts += ["--task", _flag_value(task)]
    line = " ".join(parts)
    back = parse_line(" ".join(parts[2:]), frozenset({"--model", "--name", "--task"}))
    if normalize_settings(spec, back.settings) != normalize_settings(spec, settings):  # pragma: no cover - guard
        raise PeftMagicError("the panel could not write these settings as a %peft line", "set them in Python")
    return line


def command_line(command: str, positionals: list[str], settings: dict[str, Any],
                 flags: dict[str, Any] | None = None) -> str:
    """A line for a non-attach command (``%peft train data=texts steps=50``, ``%peft save DIR``).

    Plain values (numbers, names) are written bare, anything else as a quoted literal;
    each is checked against the parser's own value reading.
    """
    parts = ["%peft", command] + [_flag_value(p) for p in positionals]
    for key, value in settings.items():
        for cand in _candidates(value):
            try:
                parsed = parse_line(f"{key}={cand}").settings
            except PeftMagicError:
                continue
            if parsed.get(key) == value and type(parsed.get(key)) is type(value):
                parts.append(f"{key}={cand}")
                break
        else:
            parts.append(f"{key}={shlex.quote(repr(value))}")
    for flag, value in (flags or {}).items():
        if value is True:
            parts.append(flag)
        elif value not in (None, False, ""):
            parts += [flag, _flag_value(str(value))]
    return " ".join(parts)


def read_text_value(text: str) -> Any:
    """What a user typed into a text box, read the way the magic reads ``key=TEXT``."""
    return parse_value(text)
