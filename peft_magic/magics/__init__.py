"""The IPython face: ``%peft`` / ``%%peft`` text → engine calls (see ``core``)."""

from .core import PeftMagics, install

__all__ = ["PeftMagics", "install"]
