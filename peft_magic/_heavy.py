"""The one place that imports the heavy stack (torch, transformers, peft), quietly, once.

Why: ``%load_ext peft_magic`` must stay instant, so nothing at module level anywhere in
the package imports these; engine functions call :func:`ensure` on first use. Importing
here also silences the noise the stack prints on import that says nothing to a
notebook user (bitsandbytes' optional CPU kernel probe, transformers' progress bars for
local loads).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

_done = False

# Messages that only say an optional accelerated kernel is missing; they are not errors.
_QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops", "bitsandbytes.cextension")


def ensure() -> None:
    """Import torch, transformers and peft (5–7 s the first time, then free)."""
    global _done
    if _done:
        return
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import peft  # noqa: F401

    from . import bottleneck  # noqa: F401  registers our method with peft

    _done = True


def loaded() -> bool:
    """Whether the heavy stack is in memory already (without importing it)."""
    return "torch" in sys.modules


@contextlib.contextmanager
def no_hf_progress():
    """Hide transformers' own "Loading weights" bars for loads we report ourselves.

    Scoped, not global: the user's own ``from_pretrained`` calls keep their bars.
    """
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet(streams: bool = True):
    """Silence what peft / transformers print while we act for the user.

    The one place for it: warnings (peft's "modifying the model a second time", tied
    weights, deprecated cache names), transformers' log below ERROR and, with
    ``streams``, stray prints to stdout / stderr — none of which is actionable in a
    notebook, because the engine reports what it did itself.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if streams:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        hf_logging.set_verbosity(level)
