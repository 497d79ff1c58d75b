"""The notebook-wide defaults as traitlets configurables: ``%config PeftMagic.display = "text"``.

The way jupysql and IPython's own magics are configured: each field of the engine's
:class:`~peft_magic.settings.Settings` is a configurable trait of the ``PeftMagic`` class
(with the same help), so ``%config PeftMagic`` lists them, ``%config PeftMagic.X = …`` sets
one, and an IPython profile's ``c.PeftMagic.X = …`` works too. Each change is validated by
the engine (one line for a bad value, nothing changed) and lands in ``settings.SETTINGS``,
which the engine reads.
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Dict, Float, Integer, TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from ..errors import PeftMagicError
from ..settings import DISPLAYS, SETTINGS, Settings, configure

_HELP = {name: text for name, _value, text in Settings().help()}


class NotebookDefaults(Configurable):
    """Mixed into the ``%peft`` magic: one configurable trait per engine setting."""

    display = Unicode(SETTINGS.display, help=_HELP["display"]).tag(config=True)
    learning_rates = Dict(value_trait=Float(), help=_HELP["learning_rates"]).tag(config=True)
    autosave_minutes = Float(SETTINGS.autosave_minutes, help=_HELP["autosave_minutes"]).tag(config=True)
    checkpoint_dir = Unicode(SETTINGS.checkpoint_dir, help=_HELP["checkpoint_dir"]).tag(config=True)
    keep_checkpoints = Integer(SETTINGS.keep_checkpoints, help=_HELP["keep_checkpoints"]).tag(config=True)
    cache_dir = Unicode(SETTINGS.cache_dir, help=_HELP["cache_dir"]).tag(config=True)
    debug = Bool(SETTINGS.debug, help=_HELP["debug"]).tag(config=True)

    @validate("display", "autosave_minutes", "keep_checkpoints")
    def _checked(self, proposal: Any) -> Any:
        try:
            configure(**{proposal["trait"].name: proposal["value"]})
        except PeftMagicError as e:
            raise TraitError(str(e)) from None
        return proposal["value"]

    @observe("display", "learning_rates", "autosave_minutes", "checkpoint_dir", "keep_checkpoints", "cache_dir",
             "debug")
    def _to_engine(self, change: Any) -> None:
        configure(**{change["name"]: change["new"]})


def config_help() -> str:
    """``%peft help config``: every default, its current value and what it does."""
    lines = ["Notebook-wide defaults (set with %config PeftMagic.NAME = value; %config PeftMagic lists them):", ""]
    for name, value, text in SETTINGS.help():
        lines.append(f"  PeftMagic.{name} = {value!r}")
        lines.append(f"      {text}")
    lines += ["", f"display is one of {', '.join(DISPLAYS)}.",
              "Example: %config PeftMagic.learning_rates = {'lora': 1e-3}"]
    return "\n".join(lines)
