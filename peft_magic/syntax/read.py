"""Text → arguments for the ``%peft`` magics: flags, ``key=value`` settings, positionals.

Why not argparse: the grammar mixes shell-like flags (``--model m``) with Python-literal
settings (``r=8 target=[q_proj, v_proj] lr=2e-4``) and YAML cell bodies; argparse would
need the settings pre-split and prints multi-line usage on error. This parser gives
one-line errors that name the offending token and suggests the right flag.

Value rules: values are Python literals (``8``, ``0.05``, ``True``,
``'text'``, ``[1, 2]``, ``{'a': 1}``); ``a,b`` is a list, ``"a,b"`` one string;
``true``/``false``/``none`` work in any case; anything else is a string (names, paths,
regexes, Windows paths with their backslashes).
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import PeftMagicError, did_you_mean

_KEY = re.compile(r"^([A-Za-z_][\w.\-]*)=(.*)$", re.S)
_KV_LINE = re.compile(r"^\s*[A-Za-z_][\w.\-]*\s*=")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_WORDS = {"true": True, "false": False, "none": None, "null": None}


@dataclass
class Args:
    """A parsed command line."""

    positionals: list[str] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)  # "--model" → "m" (or True for switches)
    settings: dict[str, Any] = field(default_factory=dict)  # key → parsed value, in order
    #: the text as typed (quotes kept) of each setting and value flag: ``data=ds["train"]``
    #: is evaluated as Python from this, not from the shell-unquoted value
    raw: dict[str, str] = field(default_factory=dict)
    raw_positionals: list[str] = field(default_factory=list)  # the same for positionals

    def flag(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)


def _scan(text: str, escapes: bool = False) -> Iterator[tuple[str, bool, int, str | None]]:
    """Walk ``text`` the way every splitter here needs: yield each piece (a character, or
    a backslash pair when ``escapes``) with whether it stands at top level (outside
    quotes and brackets), then the bracket depth and open quote after it. A stray
    closing bracket does not count."""
    depth, quote, i = 0, None, 0
    while i < len(text):
        ch = text[i]
        if escapes and ch == "\\" and quote != "'" and i + 1 < len(text):
            yield text[i:i + 2], False, depth, quote
            i += 2
            continue
        top = False
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        else:
            top = depth == 0
        yield ch, top, depth, quote
        i += 1


def _open_brackets(text: str) -> int:
    depth = 0
    for _piece, _top, depth, _quote in _scan(text):
        pass
    return depth


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    parts, cur = [], ""
    for piece, top, _depth, _quote in _scan(text):
        if top and piece == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += piece
    parts.append(cur)
    return parts


def parse_value(raw: str) -> Any:
    """Turn the text after ``key=`` into a Python value (see module docstring).

    Shell quotes group, then the grouped text is read as a Python literal (``r="8"`` is 8,
    ``name="'8'"`` the string); what quotes add is that a quoted comma does not make a
    list: ``prompt="Hello, world"`` is one string, ``k=a,"b,c"`` two items.
    """
    text = raw.strip()
    if text == "":
        return ""
    if text[0] in "[{(":  # a bracketed literal: its quotes are Python's, not the shell's
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    quoted = "'" in text or '"' in text
    if quoted:
        parts = _split_top_level(text)
        if len(parts) > 1:
            return [parse_value(p) for p in parts if p.strip() != ""]
        try:
            text = _unquote(text).strip()
        except ValueError:  # an unbalanced quote inside brackets: read the text as it is
            quoted = False
        if text == "":
            return ""
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if text[0] in "[{" and text[-1] in "]}":
        import yaml  # unquoted flow lists: [q_proj, v_proj]

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PeftMagicError(f"cannot read the value {text!r}",
                                 "write lists as [a, b] or a,b and strings in quotes") from None
        return _fix_yaml_scalars(value)
    parts = [] if quoted else _split_top_level(text)
    if len(parts) > 1:
        return [parse_value(p) for p in parts if p.strip() != ""]
    return text


def _fix_yaml_scalars(value: Any) -> Any:
    """YAML 1.1 reads ``2e-4`` as a string; users mean a number."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return ast.literal_eval(value.strip()) if "." in value or "e" in value.lower() else int(value)
    if isinstance(value, list):
        return [_fix_yaml_scalars(v) for v in value]
    if isinstance(value, dict):
        return {k: _fix_yaml_scalars(v) for k, v in value.items()}
    return value


def _split_raw(line: str) -> list[str]:
    """Split on whitespace outside quotes and brackets, keeping the quotes (and escapes)."""
    out: list[str] = []
    cur, started, quote = "", False, None
    for piece, top, _depth, quote in _scan(line, escapes=True):
        if top and piece.isspace():
            if started:
                out.append(cur)
            cur, started = "", False
        else:
            cur, started = cur + piece, True
    if quote:
        raise PeftMagicError("cannot parse the line: No closing quotation", "check for an unclosed quote")
    if started:
        out.append(cur)
    return out


def _unquote(token: str) -> str:
    """Shell rules for one token: ``"a b"`` → ``a b``, ``a\\ b`` → ``a b``."""
    if not any(c in token for c in "'\"\\"):
        return token
    return "".join(shlex.split(token, comments=False, posix=True))


def tokenize(line: str) -> list[str]:
    """Shell-like split that keeps ``key=[a, b]`` together even with spaces inside.

    A ``key=value`` token keeps its quotes, so that ``name="a,b"`` reaches
    :func:`parse_value` as a quoted string (one value) and not as ``a,b`` (a list);
    every other token (positionals, flags) is unquoted the way a shell would.
    """
    out = [tok if _KEY.match(tok) else _unquote(tok) for tok in _split_raw(line)]
    if out and _open_brackets(out[-1]) > 0:
        raise PeftMagicError(f"unclosed bracket in '{out[-1]}'")
    return out


def parse_line(line: str, value_flags: set[str] | frozenset[str] = frozenset(),
               switch_flags: set[str] | frozenset[str] = frozenset(), command: str = "",
               optional_flags: set[str] | frozenset[str] = frozenset()) -> Args:
    """Parse ``line`` given the flags a command accepts.

    ``value_flags`` take a value (``--model m`` or ``--model=m``); ``switch_flags`` are
    booleans; ``optional_flags`` (also switches) take the next token as their value when it
    is neither a flag nor a ``key=value`` (``--resume`` or ``--resume ./checkpoints/run``).
    An unknown flag is an error with a suggestion.
    """
    args = Args()
    raws = _split_raw(line)
    if raws and _open_brackets(raws[-1]) > 0:
        raise PeftMagicError(f"unclosed bracket in '{raws[-1]}'")
    tokens = [tok if _KEY.match(tok) else _unquote(tok) for tok in raws]
    i = 0
    where = f" for %peft {command}" if command else ""
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and len(tok) > 2:
            name, eq, val = tok.partition("=")
            if name in value_flags:
                if not eq:
                    if i + 1 >= len(tokens):
                        raise PeftMagicError(f"{name} needs a value{where}")
                    i += 1
                    val = tokens[i]
                    args.raw[name] = raws[i]
                else:
                    args.raw[name] = raws[i].partition("=")[2]
                args.flags[name] = val
            elif name in optional_flags:
                if eq:
                    args.flags[name] = val
                elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--") and not _KEY.match(raws[i + 1]):
                    i += 1
                    args.flags[name] = tokens[i]
                else:
                    args.flags[name] = True
            elif name in switch_flags:
                if eq:
                    args.flags[name] = parse_value(val) is True
                else:
                    args.flags[name] = True
            else:
                hint = did_you_mean(name, list(value_flags) + list(switch_flags))
                raise PeftMagicError(f"unknown option {name}{where}" + (f": {hint}" if hint else ""),
                                     None if hint else (f"options: {', '.join(sorted(value_flags | switch_flags))}"
                                                        if (value_flags or switch_flags) else None))
        else:
            m = _KEY.match(tok)
            if m:
                key, raw = m.group(1), m.group(2)
                if key in args.settings:
                    raise PeftMagicError(f"'{key}' is given twice")
                args.settings[key] = parse_value(raw)
                args.raw[key] = raw
            else:
                args.positionals.append(tok)
                args.raw_positionals.append(raws[i])
        i += 1
    return args


def parse_body(body: str | None, raw: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from a ``%%peft`` cell body: ``key: value`` (YAML) or ``key=value`` lines.

    ``raw``, when given, receives the text as typed of each ``key=value`` line's value (see
    ``Args.raw``); a YAML body's strings are already the text the user means."""
    if not body or not body.strip():
        return {}
    lines = [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if all(_KV_LINE.match(ln) for ln in lines):
        out: dict[str, Any] = {}
        for ln in lines:
            parsed = parse_line(ln)
            if parsed.positionals or parsed.flags:
                bad = (parsed.positionals + list(parsed.flags))[0]
                raise PeftMagicError(f"cannot read '{bad}' in the cell body", "one key=value (or key: value) per line")
            for k, v in parsed.settings.items():
                if k in out:
                    raise PeftMagicError(f"'{k}' is given twice in the cell body")
                out[k] = v
                if raw is not None:
                    raw[k] = parsed.raw[k]
        return out
    import yaml

    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PeftMagicError(f"cannot read the cell body as key: value settings{where}",
                             "one key: value (or key=value) per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PeftMagicError("the cell body must be settings, one key: value (or key=value) per line")
    return {str(k): _fix_yaml_scalars(v) for k, v in data.items()}


def merge_settings(line: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Line settings and body settings together; a key in both is an error, not a guess."""
    both = set(line) & set(body)
    if both:
        key = sorted(both)[0]
        raise PeftMagicError(f"'{key}' is set both on the %%peft line and in the cell body")
    return {**line, **body}
