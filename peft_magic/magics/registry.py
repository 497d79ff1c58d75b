"""The ``%peft`` sub-commands: a small registry, so each command lives in its own module.

A command is a handler plus what the help and the parser need (usage line, flags, what
a ``%%peft`` cell body means for it). The handler's docstring *is* its help text, as in
IPython's own magics: ``%peft help train`` prints it, ``%peft?`` lists every usage line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import notebook
from ..syntax.read import Args

#: what the common flags mean, so every command that takes one explains it the same way
FLAG_HELP = {
    "--model": "the notebook variable (or expression, e.g. models['a']) that holds the model (default: model)",
    "--tokenizer": "the variable or expression that holds the tokenizer (default: tokenizer, or VAR_tokenizer)",
    "--name": "the adapter's name (default: default / the active adapter)",
    "--task": "causal-lm, seq-cls, seq2seq, token-cls, qa or feature-extraction",
}


@dataclass(frozen=True)
class Flag:
    """One ``--flag`` a command accepts: a switch, or a flag with a value (``metavar``)."""

    name: str
    metavar: str | None = None
    help: str = ""

    @property
    def optional(self) -> bool:
        """``--resume [DIR]``: a switch that may take a value."""
        return bool(self.metavar) and self.metavar.startswith("[")

    @property
    def usage(self) -> str:
        return f"{self.name} {self.metavar}" if self.metavar else self.name


def _flag(spec: str | tuple[str, str]) -> Flag:
    """``"--model VAR"`` (a value), ``"--force"`` (a switch), or either with its help: ``(spec, help)``."""
    text, help_ = (spec, "") if isinstance(spec, str) else spec
    name, _, metavar = text.partition(" ")
    return Flag(name, metavar or None, help_ or FLAG_HELP.get(name, ""))


@dataclass
class Command:
    """A sub-command: its handler and the one declaration its parser and its help both read."""

    name: str
    handler: Callable[[Context], Any]
    args: str  # what comes between the name and the flags: "DIR", "METHOD [key=value …]"
    summary: str
    flags: tuple[Flag, ...] = ()
    exclusive: tuple[tuple[str, ...], ...] = ()  # flags that exclude each other, shown as [--a | --b]
    cell: str = "settings"  # what a %%peft body is: "settings", "code", "none" or "only" (a cell magic)
    aliases: tuple[str, ...] = ()
    group: str = "model"

    @property
    def value_flags(self) -> frozenset[str]:
        return frozenset(f.name for f in self.flags if f.metavar and not f.optional)

    @property
    def switch_flags(self) -> frozenset[str]:
        """Switches, and flags whose value may be left out (``--resume [DIR]``)."""
        return frozenset(f.name for f in self.flags if not f.metavar or f.optional)

    @property
    def optional_flags(self) -> frozenset[str]:
        return frozenset(f.name for f in self.flags if f.optional)

    @property
    def usage(self) -> str:
        """Generated from the declaration, so the help can never miss a flag the parser takes."""
        head = "%%peft " + self.name if self.cell == "only" else (
            "%peft" if self.name == "attach" else f"%peft {self.name}")
        parts = [head] + ([self.args] if self.args else [])
        grouped = {n for group in self.exclusive for n in group}
        by_name = {f.name: f for f in self.flags}
        parts += ["[" + " | ".join(by_name[n].usage for n in group) + "]" for group in self.exclusive]
        parts += [f"[{f.usage}]" for f in self.flags if f.name not in grouped]
        return " ".join(parts)

    def flags_help(self) -> list[str]:
        """One line per flag: its usage and what it does."""
        width = max((len(f.usage) for f in self.flags), default=0)
        return [f"  {f.usage.ljust(width)}  {f.help}".rstrip() for f in self.flags]

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.handler.__doc__ or self.summary)

    def help(self) -> str:
        """``%peft help NAME``: usage, flags, then the handler's docstring."""
        flags = self.flags_help()
        return "\n".join([self.usage, ""] + (["flags:"] + flags + [""] if flags else []) + [self.doc])


COMMANDS: dict[str, Command] = {}
ALIASES: dict[str, str] = {}
GROUPS = ("model", "adapters", "training", "info")


def command(name: str, *, args: str = "", summary: str, flags: tuple[str | tuple[str, str], ...] = (),
            exclusive: tuple[tuple[str, ...], ...] = (), cell: str = "settings", aliases: tuple[str, ...] = (),
            group: str = "model") -> Callable[[Callable[[Context], Any]], Callable[[Context], Any]]:
    """Register a ``%peft NAME`` sub-command (the decorated function is its handler)."""

    def deco(fn: Callable[[Context], Any]) -> Callable[[Context], Any]:
        COMMANDS[name] = Command(name, fn, args, summary, tuple(_flag(f) for f in flags), exclusive, cell,
                                 aliases, group)
        for a in aliases:
            ALIASES[a] = name
        return fn

    return deco


def lookup(name: str) -> Command | None:
    key = name.lower()
    return COMMANDS.get(ALIASES.get(key, key))


@dataclass
class Context:
    """Everything a command handler needs: the shell's namespace, parsed args, the cell body."""

    shell: Any
    args: Args
    cell: str | None
    command: str
    settings: dict[str, Any] = field(default_factory=dict)  # line settings merged with the body's

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    # -- the model variable (the namespace rules live in ``notebook``, shared with the panel)

    def reference(self, flag: str) -> str | None:
        """A flag naming a notebook object (``--model``, ``--tokenizer``) as typed: a variable
        or a Python expression (``zoo['small']`` keeps its quotes); a quoted value unquoted."""
        raw = self.args.raw.get(flag)
        if raw is None or raw[:1] in ("'", '"'):
            return self.args.flag(flag)
        return raw

    def model_var(self) -> str:
        """The variable holding the model: --model, else ``model``, else the only model there is."""
        return notebook.model_var(self.ns, self.reference("--model"))

    def model(self) -> tuple[str, Any]:
        """``(variable, model)``; a one-line error when missing or not a model."""
        var = self.model_var()
        return var, notebook.get_model(self.ns, var)

    def bind(self, var: str, value: Any) -> None:
        self.ns[var] = value

    def bind_model(self, var: str, model: Any) -> None:
        """Put ``model`` in ``var`` and remember that variable for it."""
        notebook.bind_model(self.ns, var, model)

    def value(self, key: str, what: str | None = None) -> Any:
        """Pop setting ``key`` (``data``, ``eval``) and read it as user data: a Python
        expression in the notebook, else a file path (``notebook.VALUE_RULE``)."""
        parsed = self.settings.pop(key)
        return notebook.resolve_value(self.ns, self.args.raw.get(key), parsed, what or key)

    def tokenizer(self, var: str | None = None) -> Any:
        """The tokenizer that goes with the model variable (``tokenizer`` or ``VAR_tokenizer``)."""
        return notebook.find_tokenizer(self.ns, var or self.model_var(), self.reference("--tokenizer"))
