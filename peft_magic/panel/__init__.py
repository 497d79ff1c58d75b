"""``%peft panel``: the ipywidgets panel (configure, attach, train, save from a form).

A face like the magics: widgets in, engine calls out, never peft internals. Core
ipywidgets only, so it works in JupyterLab, Notebook 7, VS Code and Colab without any
third-party widget code. See :class:`PeftPanel`.
"""

from __future__ import annotations

from .panel import PeftPanel

__all__ = ["PeftPanel"]
