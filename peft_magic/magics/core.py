"""The ``%peft`` / ``%%peft`` magic: parse, dispatch to a sub-command, show one-line errors.

The magic only parses text and calls the engine. Every failure a user can cause comes
back as an IPython ``UsageError``: one red line in the notebook, no traceback wall (the
way ``%timeit`` reports a bad option). ``%config PeftMagic.debug = True`` shows the full
traceback of unexpected errors when reporting a bug. The notebook-wide defaults are the
magic's configurable traits (``magics/config.py``).
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from ..errors import PeftMagicError, first_line
from ..settings import SETTINGS
from ..syntax.expand import expand
from ..syntax.read import merge_settings, parse_body, parse_line
from .config import NotebookDefaults
from .help import help_overview, help_text
from .registry import COMMANDS, Context, lookup

ATTACH = "attach"


@magics_class
class PeftMagic(Magics, NotebookDefaults):
    """The ``%peft`` magics (see ``%peft?``); its traits are the notebook-wide defaults
    (``%config PeftMagic``)."""

    @line_cell_magic
    @no_var_expand  # IPython's {…} expansion corrupts regex quantifiers: ``syntax.expand`` has our rule
    def peft(self, line: str = "", cell: str | None = None) -> Any:
        try:
            return self._dispatch(line, cell)
        except PeftMagicError as e:
            raise UsageError(str(e)) from None
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as e:
            if SETTINGS.debug or getattr(e, "_peft_magic_user_code", False):
                raise  # the user's own code (a %%peft watch body) keeps its normal traceback
            raise UsageError(f"{type(e).__name__}: {first_line(e)} "
                             "(%config PeftMagic.debug = True for the full traceback)") from None

    def _dispatch(self, line: str, cell: str | None) -> Any:
        ns = self.shell.user_ns if self.shell is not None else {}
        stripped = expand(line, ns).strip()
        if not stripped and cell is None:
            return help_overview()
        first, _, rest = stripped.partition(" ")
        cmd = lookup(first) if first else None
        if cmd is None:
            if first.startswith("-"):
                raise PeftMagicError(f"'{first}' is not a command", "start with a command or a method: %peft lora …")
            cmd = COMMANDS[ATTACH]
            rest = stripped
        args = parse_line(rest, cmd.value_flags, cmd.switch_flags, command=cmd.name if cmd.name != ATTACH else "",
                          optional_flags=cmd.optional_flags)
        settings = dict(args.settings)
        if cell is not None and cmd.cell == "settings":
            settings = merge_settings(settings, parse_body(cell, args.raw))
        elif cell is not None and cmd.cell == "none" and cell.strip():
            raise PeftMagicError(f"%%peft {cmd.name} takes no cell body", f"use the line form: %peft {cmd.name} …")
        ctx = Context(self.shell, args, cell, cmd.name, settings)
        return cmd.handler(ctx)


PeftMagic.peft.__doc__ = None  # set lazily by install() so that every command is registered first


def install(ip: Any) -> None:
    """Register the magics with an IPython shell (``%load_ext peft_magic`` calls this)."""
    from . import command_modules

    command_modules.load_all()
    doc = help_text()
    PeftMagic.peft.__doc__ = doc
    ip.register_magics(PeftMagic(shell=ip))
