"""Meta-device skeletons: a model's architecture with no memory behind it.

Why: several questions must be answered about a model without touching it — will this
config attach at all (so a failed ``%peft lora`` never leaves the user's model half
modified), how many parameters would it train (the panel's live preview), what would a
target pattern match, how much memory would training take (``%peft plan``). Building the
same class from the model's config under accelerate's ``init_empty_weights`` takes
milliseconds and no memory even for a 70B config; the user's model is never deep-copied.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any


def can_skeleton(model: Any) -> bool:
    """Whether ``model`` is a transformers model whose architecture we can rebuild."""
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "to_dict") and hasattr(type(model), "_from_config")


@contextlib.contextmanager
def quiet():
    """Silence the warnings and prints peft/transformers emit while we build throwaway models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from transformers.utils import logging as hf_logging

            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                yield
            finally:
                hf_logging.set_verbosity(level)


def skeleton_of(model: Any) -> Any:
    """A meta-device model of the same class and config as ``model`` (a transformers model).

    Quantization is dropped: the skeleton has plain ``nn.Linear`` layers, which is what
    adapter placement and parameter counting need.
    """
    from accelerate import init_empty_weights

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            pass
    cls = type(model)
    with quiet(), init_empty_weights(include_buffers=False):
        skel = cls._from_config(config)
    return skel


def skeleton_from_config(config: Any, task: str | None = None) -> Any:
    """A meta-device model built from a transformers config (or a path / hub id to one)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    from .load import auto_class_for_task

    if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__"):
        config = AutoConfig.from_pretrained(config)
    auto = auto_class_for_task(task or "CAUSAL_LM", config)
    with quiet(), init_empty_weights(include_buffers=False):
        return auto.from_config(config)
