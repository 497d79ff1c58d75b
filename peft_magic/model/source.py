"""Where a model comes from: a built-in name, a local folder, or a hub id.

One resolution for loading a model (``%peft load``) and for planning one from its config
alone (``%peft plan``), so both accept the same names and fail with the same line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stack
from ..errors import PeftMagicError, first_line
from . import builtins


@dataclass(frozen=True)
class Source:
    """A resolved model source: ``path`` is what ``from_pretrained`` gets."""

    given: str
    path: str
    builtin: builtins.BuiltinModel | None = None

    @property
    def is_local(self) -> bool:
        return self.builtin is not None or Path(self.path).exists()


def looks_local(source: str) -> bool:
    """A path the user meant as a folder (``./x``, ``/x``, ``~/x``), not a hub id."""
    return source.startswith((".", "/", "~"))


def resolve(source: str) -> Source:
    """Built-in (materialised once into the cache), existing folder, or hub id."""
    builtin = builtins.resolve_builtin(source)
    if builtin is not None:
        return Source(source, str(builtins.materialize(builtin.name)), builtin)
    expanded = Path(source).expanduser()
    if expanded.exists():
        return Source(source, str(expanded))
    if looks_local(source):
        raise PeftMagicError(f"no such folder: {source}",
                             "give a folder saved with save_pretrained, or a built-in: " + ", ".join(builtins.BUILTINS))
    return Source(source, source)


def read_config(src: Source, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of a source; offline hub ids get one line saying so."""
    from transformers import AutoConfig

    try:
        with stack.no_hf_progress():
            return AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code)
    except Exception as e:  # OSError / hub errors / ValueError
        if not src.is_local:
            raise PeftMagicError(
                f"could not load '{src.given}': it is not a local folder and the Hugging Face Hub is not reachable "
                f"({first_line(e)[:120]})",
                "pass a local folder, or a built-in: " + ", ".join(builtins.BUILTINS)) from None
        raise PeftMagicError(f"could not read the config of '{src.given}': {first_line(e)}") from None
