"""The IPython face: ``%peft`` / ``%%peft`` text → engine calls (see ``core``)."""

from .core import PeftMagic, install

__all__ = ["PeftMagic", "install"]
