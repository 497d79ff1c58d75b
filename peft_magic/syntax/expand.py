"""``{expr}`` and ``$name`` in a ``%peft`` line: Python values, expanded by our own rule.

Why not IPython's expansion: IPython expands every ``{…}`` it can evaluate before a magic
sees its line, so a regex quantifier is corrupted (``[0-9]{1}`` arrives as ``[0-9]1``,
``{1,2}`` as ``(1, 2)``) and a target pattern silently matches nothing. The ``%peft``
magic turns IPython's expansion off (``@no_var_expand``) and applies this rule instead,
which keeps what people like (``r={n}``, ``steps=$steps``) and never touches a pattern:

* ``{expr}`` is replaced by ``str(value)`` when ``expr`` is a Python expression that
  evaluates in the notebook's namespace — **except** a regex quantifier (``{3}``,
  ``{1,2}``, ``{2,}``, ``{,4}``: digits and at most one comma), which always stays as
  written. Braces that do not evaluate (a dict literal, an undefined name) stay as written.
* ``$name`` is replaced by ``str(value)`` when ``name`` is a variable in the namespace;
  otherwise (``q_proj$``, ``$undefined``) it stays as written.
* ``{{`` and ``}}`` stand for a literal ``{`` and ``}``; ``$$`` for a literal ``$``.

Only the magic's line is expanded; a ``%%peft`` cell body is read as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

QUANTIFIER = re.compile(r"^\s*\d*\s*(,\s*\d*\s*)?$")
_NAME = re.compile(r"[A-Za-z_]\w*")

__all__ = ["expand", "QUANTIFIER"]


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``start`` (nested braces and quotes
    inside count), or -1."""
    depth, quote, i = 0, None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _evaluates(expr: str, ns: Mapping[str, Any], evaluate: Callable[[str], Any] | None) -> tuple[bool, Any]:
    if not expr.strip() or QUANTIFIER.match(expr):
        return False, None
    try:
        code = compile(expr.strip(), "<%peft line>", "eval")
    except SyntaxError:
        return False, None
    try:
        return True, (evaluate(expr) if evaluate else eval(code, dict(ns)))  # noqa: S307 — the user's own kernel
    except Exception:  # noqa: BLE001 — not a value: the text stays as the user wrote it
        return False, None


def expand(line: str, ns: Mapping[str, Any], evaluate: Callable[[str], Any] | None = None) -> str:
    """``line`` with ``{expr}`` and ``$name`` replaced by their values (module docstring)."""
    out: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        nxt = line[i + 1] if i + 1 < len(line) else ""
        if ch in "{}$" and nxt == ch:
            out.append(ch)
            i += 2
            continue
        if ch == "{":
            end = _closing(line, i)
            if end > i:
                ok, value = _evaluates(line[i + 1:end], ns, evaluate)
                out.append(str(value) if ok else line[i:end + 1])
                i = end + 1
                continue
        if ch == "$":
            m = _NAME.match(line, i + 1)
            if m and m.group(0) in ns:
                out.append(str(ns[m.group(0)]))
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)
