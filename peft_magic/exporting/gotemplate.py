"""A small renderer for Go's text/template — the part of it Ollama's chat templates use —
and Ollama's way of filling a template from a conversation.

Why: an Ollama Modelfile's ``TEMPLATE`` is a Go template, and a template that differs
from the model's chat template by one newline makes the model answer worse (or not
stop). We check every translated template by rendering it here for a few conversations
and comparing with ``tokenizer.apply_chat_template``, before writing the Modelfile;
there is no Go (or Ollama) to ask, and no maintained Python package renders Go
templates.

Supported: text; ``{{ pipeline }}`` output; ``{{- … -}}`` trimming; ``{{/* comments */}}``;
``if`` / ``else if`` / ``else`` / ``end``; ``range`` (with ``$i, $v :=`` or not) and
``with``; fields ``.A.B``, ``$``, ``$.A``, ``$var``, ``.``; string and number literals;
parentheses; the functions ``eq ne not and or len slice``. Anything else is an error,
never a silent difference.

:func:`ollama_prompt` follows Ollama's own handling of a template without ``.Messages``
(the form we write): one execution per user turn with ``.System`` (first turn only),
``.Prompt`` and ``.Response``, and for the last turn the template cut at
``{{ .Response }}`` so that it ends where the model starts writing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """A template this renderer cannot read (or Go would reject)."""


# ----------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|:=|,|[^\s(),]+')


@dataclass
class Node:
    kind: str  # text | out | if | range | with
    text: str = ""
    expr: list[Any] = field(default_factory=list)
    branches: list[tuple[list[Any], list[Node]]] = field(default_factory=list)  # if: (cond, body) …
    body: list[Node] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # range $i, $v


def _lex(src: str) -> list[tuple[str, str]]:
    """(``text``, str) and (``action``, inner) pieces, with the trim markers applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = src.find("{{", pos)
        if start < 0:
            out.append(("text", src[pos:]))
            return out
        end = src.find("}}", start)
        if end < 0:
            raise TemplateError("unclosed action")
        text = src[pos:start]
        inner = src[start + 2:end]
        if inner.startswith("- ") or inner.startswith("-\n") or inner == "-":
            text = text.rstrip()
            inner = inner[1:]
        trim_after = inner.endswith(" -") or inner.endswith("\n-")
        if trim_after:
            inner = inner[:-1]
        out.append(("text", text))
        inner = inner.strip()
        if not (inner.startswith("/*") and inner.endswith("*/")):
            out.append(("action", inner))
        pos = end + 2
        if trim_after:
            while pos < len(src) and src[pos] in " \t\r\n":
                pos += 1


def _expr(tokens: list[str]) -> list[Any]:
    """Tokens of a pipeline → a nested list (parentheses become sub-lists)."""
    stack: list[list[Any]] = [[]]
    for t in tokens:
        if t == "(":
            stack.append([])
        elif t == ")":
            if len(stack) == 1:
                raise TemplateError("unbalanced )")
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(t)
    if len(stack) != 1:
        raise TemplateError("unbalanced (")
    return stack[0]


def parse(src: str) -> list[Node]:
    """Parse a template into a node tree."""
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node]]] = [(None, root)]
    for kind, piece in _lex(src):
        body = stack[-1][1]
        if kind == "text":
            if piece:
                body.append(Node("text", text=piece))
            continue
        tokens = _TOKEN.findall(piece)
        if not tokens:
            raise TemplateError("empty action")
        head = tokens[0]
        if head == "if":
            node = Node("if", branches=[(_expr(tokens[1:]), [])])
            body.append(node)
            stack.append((node, node.branches[0][1]))
        elif head in ("range", "with"):
            rest = tokens[1:]
            names: list[str] = []
            if ":=" in rest:
                i = rest.index(":=")
                names = [t for t in rest[:i] if t != ","]
                rest = rest[i + 1:]
            node = Node(head, expr=_expr(rest), names=names)
            body.append(node)
            stack.append((node, node.body))
        elif head == "else":
            node = stack[-1][0]
            if node is None:
                raise TemplateError("else outside if / range")
            stack.pop()
            if len(tokens) > 2 and tokens[1] == "if" and node.kind == "if":
                node.branches.append((_expr(tokens[2:]), []))
                stack.append((node, node.branches[-1][1]))
            else:
                stack.append((node, node.otherwise))
        elif head == "end":
            if len(stack) == 1:
                raise TemplateError("end without if / range")
            stack.pop()
        elif head in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"'{head}' is not supported here")
        else:
            body.append(Node("out", expr=_expr(tokens)))
    if len(stack) != 1:
        raise TemplateError("missing end")
    return root


# ----------------------------------------------------------------------------- rendering


def truthy(v: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings / lists / maps are false."""
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


class _Scope:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def var(self, name: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable {name}")


def _value(tok: Any, dot: Any, scope: _Scope) -> Any:
    if isinstance(tok, list):
        return _call(tok, dot, scope)
    if tok.startswith('"'):
        try:
            return json.loads(tok)  # Go's escapes (\n, \t, \", \\, \uXXXX) read as JSON's
        except ValueError:
            raise TemplateError(f"cannot read the string {tok}") from None
    if tok.startswith("`"):
        return tok[1:-1]
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    if tok in ("true", "false"):
        return tok == "true"
    if tok == "nil":
        return None
    if tok == ".":
        return dot
    if tok.startswith("$"):
        head, *rest = tok.split(".")
        obj = scope.var(head)
        for part in rest:
            obj = _field(obj, part)
        return obj
    if tok.startswith("."):
        obj = dot
        for part in tok[1:].split("."):
            obj = _field(obj, part)
        return obj
    raise TemplateError(f"cannot read '{tok}'")


def _call(expr: list[Any], dot: Any, scope: _Scope) -> Any:
    if not expr:
        raise TemplateError("empty pipeline")
    head = expr[0]
    args = expr[1:]
    if isinstance(head, str) and head in _FUNCS:
        return _FUNCS[head]([lambda a=a: _value(a, dot, scope) for a in args])
    if args:
        raise TemplateError(f"'{head}' is not a function")
    return _value(head, dot, scope)


def _and(args: list[Any]) -> Any:
    v: Any = True
    for a in args:
        v = a()
        if not truthy(v):
            return v
    return v


def _or(args: list[Any]) -> Any:
    v: Any = False
    for a in args:
        v = a()
        if truthy(v):
            return v
    return v


_FUNCS = {
    "eq": lambda a: any(a[0]() == x() for x in a[1:]),
    "ne": lambda a: a[0]() != a[1](),
    "not": lambda a: not truthy(a[0]()),
    "and": _and,
    "or": _or,
    "len": lambda a: len(a[0]() or []),
    "slice": lambda a: (a[0]() or [])[a[1]() if len(a) > 1 else 0:(a[2]() if len(a) > 2 else None)],
}


def _show(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _render(nodes: list[Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for n in nodes:
        if n.kind == "text":
            out.append(n.text)
        elif n.kind == "out":
            out.append(_show(_call(n.expr, dot, scope)))
        elif n.kind == "if":
            for cond, body in n.branches:
                if truthy(_call(cond, dot, scope)):
                    _render(body, dot, scope, out)
                    break
            else:
                _render(n.otherwise, dot, scope, out)
        elif n.kind == "with":
            v = _call(n.expr, dot, scope)
            _render(n.body if truthy(v) else n.otherwise, v if truthy(v) else dot, scope, out)
        elif n.kind == "range":
            items = _call(n.expr, dot, scope) or []
            if not items:
                _render(n.otherwise, dot, scope, out)
            for i, item in enumerate(items):
                frame = {}
                if len(n.names) == 2:
                    frame = {n.names[0]: i, n.names[1]: item}
                elif len(n.names) == 1:
                    frame = {n.names[0]: item}
                scope.vars.append(frame)
                try:
                    _render(n.body, item, scope, out)
                finally:
                    scope.vars.pop()


def render(template: str | list[Node], data: dict[str, Any]) -> str:
    """Execute ``template`` with ``data`` as its dot (as Go's ``Execute`` does)."""
    nodes = parse(template) if isinstance(template, str) else template
    out: list[str] = []
    _render(nodes, data, _Scope(data), out)
    return "".join(out)


def _mentions(expr: list[Any], name: str) -> bool:
    return any(_mentions(t, name) if isinstance(t, list) else
               (isinstance(t, str) and (t == f".{name}" or t.endswith(f".{name}") or f".{name}." in t))
               for t in expr)


def cut_at(nodes: list[Node], name: str = "Response") -> list[Node]:
    """The tree up to (not including) the first output of ``.name`` and everything after it,
    in document order — what Ollama executes for the turn the model answers."""
    cut = False

    def walk(ns: list[Node]) -> list[Node]:
        nonlocal cut
        kept: list[Node] = []
        for n in ns:
            if cut:
                break
            if n.kind == "out" and _mentions(n.expr, name):
                cut = True
                break
            if n.kind == "if":
                n = Node("if", branches=[(c, walk(b)) for c, b in n.branches], otherwise=walk(n.otherwise))
            elif n.kind in ("range", "with"):
                n = Node(n.kind, expr=n.expr, names=n.names, body=walk(n.body), otherwise=walk(n.otherwise))
            kept.append(n)
        return kept

    return walk(nodes)


def ollama_prompt(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """The prompt Ollama builds from ``messages`` with a ``.Prompt`` / ``.Response`` template.

    ``system`` is the Modelfile's ``SYSTEM``, used when the conversation has no system
    message. Each user turn is one execution (``.System`` set on the turn it precedes
    only); the last one runs the template cut at ``{{ .Response }}``.
    """
    nodes = parse(template)
    msgs = list(messages)
    if system and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    out: list[str] = []
    sys_text, prompt, response = "", "", ""

    def execute() -> None:
        nonlocal sys_text, prompt, response
        out.append(render(nodes, {"System": sys_text, "Prompt": prompt, "Response": response}))
        sys_text, prompt, response = "", "", ""

    for m in msgs:
        if m["role"] == "system":
            if prompt or response:
                execute()
            sys_text = m["content"]
        elif m["role"] == "user":
            if response:
                execute()
            prompt = m["content"]
        elif m["role"] == "assistant":
            response = m["content"]
    out.append(render(cut_at(nodes), {"System": sys_text, "Prompt": prompt, "Response": response}))
    return "".join(out)
