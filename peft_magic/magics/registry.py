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

from ..errors import PeftMagicError
from ..syntax.read import Args


@dataclass
class Command:
    name: str
    handler: Callable[[Context], Any]
    usage: str
    summary: str
    value_flags: frozenset[str] = frozenset()
    switch_flags: frozenset[str] = frozenset()
    cell: str = "settings"  # what a %%peft body is: "settings", "code" or "none"
    aliases: tuple[str, ...] = ()
    group: str = "model"

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.handler.__doc__ or self.summary)


COMMANDS: dict[str, Command] = {}
ALIASES: dict[str, str] = {}
GROUPS = ("model", "adapters", "training", "info")


def command(name: str, *, usage: str, summary: str, value_flags: tuple[str, ...] = (),
            switch_flags: tuple[str, ...] = (), cell: str = "settings", aliases: tuple[str, ...] = (),
            group: str = "model") -> Callable[[Callable[[Context], Any]], Callable[[Context], Any]]:
    """Register a ``%peft NAME`` sub-command (the decorated function is its handler)."""

    def deco(fn: Callable[[Context], Any]) -> Callable[[Context], Any]:
        COMMANDS[name] = Command(name, fn, usage, summary, frozenset(value_flags), frozenset(switch_flags), cell,
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

    # -- the model variable ------------------------------------------------------------

    def model_var(self) -> str:
        """The variable holding the model: --model, else ``model``, else the only model there is."""
        from ..state import all_states

        var = self.args.flag("--model")
        if var:
            return var
        if "model" in self.ns:
            return "model"
        known = [s.variable for s in all_states() if s.variable and s.variable in self.ns]
        if known:
            return known[-1]
        models = [k for k, v in self.ns.items() if not k.startswith("_") and _is_model(v)]
        if len(models) == 1:
            return models[0]
        return "model"

    def model(self) -> tuple[str, Any]:
        """``(variable, model)``; a one-line error when missing or not a model."""
        var = self.model_var()
        if var not in self.ns:
            raise PeftMagicError(
                f"no variable '{var}' in the notebook",
                "load a model with %peft load smollm2 (or pass --model NAME)",
            )
        obj = self.ns[var]
        if not _is_model(obj):
            raise PeftMagicError(f"'{var}' is a {type(obj).__name__}, not a torch model",
                                 "pass --model NAME for the variable that holds your model")
        return var, obj

    def bind(self, var: str, value: Any) -> None:
        self.ns[var] = value

    def bind_model(self, var: str, model: Any) -> None:
        """Put ``model`` in ``var`` and remember that variable for it (the panel and later
        commands find the model by it)."""
        from ..state import state_for

        if self.ns.get(var) is not model:
            self.bind(var, model)
        st = state_for(model)
        if st is not None:
            st.variable = var

    def tokenizer(self, var: str | None = None) -> Any:
        """The tokenizer that goes with the model variable (``tokenizer`` or ``VAR_tokenizer``)."""
        explicit = self.args.flag("--tokenizer")
        if explicit:
            if explicit not in self.ns:
                raise PeftMagicError(f"no variable '{explicit}' in the notebook")
            return self.ns[explicit]
        var = var or self.model_var()
        for name in (f"{var}_tokenizer", "tokenizer"):
            if name in self.ns:
                return self.ns[name]
        return None


def _is_model(obj: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
