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
import re
import sys
import warnings

_done = False

#: Foreign messages the stack logs while importing, each by the logger that emits it and the
#: start of its text: (logger, message regex). All say that an optional accelerated kernel is
#: unavailable — nothing a notebook user can act on — and land as red stderr under the user's
#: first cell. On a CPU with AVX512-BF16, bitsandbytes' CPU backend asks the ``kernels`` package
#: for a hub kernel when peft imports it: offline, ``kernels`` says it skips a trust check;
#: online, bitsandbytes says the kernel failed to load. Filtered by logger *and* message, so any
#: other warning of those loggers still reaches the user.
FOREIGN_NOISE: tuple[tuple[str, str], ...] = (
    ("kernels._internals.hf_hub", r"Skipping publisher trust check for 'kernels-community/"),
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("bitsandbytes.cextension", r"The installed version of bitsandbytes was compiled without GPU support"),
)


class _DropForeignNoise(logging.Filter):
    """Drops the records of one logger whose message matches one of ``FOREIGN_NOISE``."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self._patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.match(msg) for p in self._patterns)


def _filter_foreign_noise() -> None:
    by_logger: dict[str, list[str]] = {}
    for name, pattern in FOREIGN_NOISE:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropForeignNoise) for f in logger.filters):
            logger.addFilter(_DropForeignNoise(patterns))


def ensure() -> None:
    """Import torch, transformers and peft (5–7 s the first time, then free)."""
    global _done
    if _done:
        return
    _filter_foreign_noise()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

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


#: the modules whose warnings we silence while acting for the user (and our own, which peft's
#: ``stacklevel=2`` warnings are attributed to): never the user's code or other libraries
STACK_WARNINGS = r"(torch|transformers|peft|accelerate|bitsandbytes|safetensors|huggingface_hub|tokenizers|peft_magic)(\.|$)"


@contextlib.contextmanager
def stack_warnings_off():
    """Ignore the warnings the heavy stack raises during one of our calls (it says nothing
    actionable: peft's "modifying the model a second time", tied weights, deprecated cache
    names, TrainingArguments' own notices), and only those: by the module they come from."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=STACK_WARNINGS)
        yield


@contextlib.contextmanager
def quiet(streams: bool = True):
    """Silence what peft / transformers print while we act for the user.

    The one place for it: the stack's warnings (``stack_warnings_off``), transformers' log
    below ERROR and, with
    ``streams``, stray prints to stdout / stderr — none of which is actionable in a
    notebook, because the engine reports what it did itself.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with stack_warnings_off(), contextlib.ExitStack() as stack:
            if streams:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        hf_logging.set_verbosity(level)
