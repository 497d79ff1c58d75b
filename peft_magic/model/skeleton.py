"""Meta-device skeletons: a model's architecture with no memory behind it.

Why: several questions must be answered about a model without touching it — will this
config attach at all (so a failed ``%peft lora`` never leaves the user's model half
modified), how many parameters would it train (the panel's live preview), what would a
target pattern match, does a saved adapter fit, how much memory would training take
(``%peft plan``). Building the same class from the model's config under accelerate's
``init_empty_weights`` takes milliseconds and no memory even for a 70B config; the
user's model is never deep-copied. Every skeleton in the package is built by
:func:`build`, and every adapter attached to one by :func:`attach_on_skeleton`.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import stack
from .properties import auto_class_for_task


def can_skeleton(model: Any) -> bool:
    """Whether ``model`` is a transformers model whose architecture we can rebuild."""
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "to_dict") and hasattr(type(model), "_from_config")


def build(config: Any, *, model_cls: Any = None, task: str | None = None, dtype: Any = None,
          attn: str | None = None) -> Any:
    """A meta-device model from ``config`` (buffers stay real and tiny).

    Quantization is dropped: the skeleton has plain ``nn.Linear`` layers, which is what
    adapter placement, parameter counting and planning (which puts its own 4-bit
    stand-ins in) need. Built like ``from_pretrained(dtype=...)`` builds a model — under
    that default dtype, so buffers computed explicitly in float32 (rotary frequencies)
    stay float32 — and with tied embeddings tied, as loading makes them. ``attn`` None is
    transformers' own choice; flash-attention is traced as sdpa's flash kernel.
    """
    from accelerate import init_empty_weights

    cfg = copy.deepcopy(config)
    if hasattr(cfg, "quantization_config"):
        try:
            delattr(cfg, "quantization_config")
        except AttributeError:
            pass
    if attn and attn.startswith("flash"):
        attn = "sdpa"
    kwargs = ({"dtype": dtype} if dtype is not None else {}) | (
        {"attn_implementation": attn} if attn in ("sdpa", "eager") else {})
    with stack.quiet(), init_empty_weights(include_buffers=False):
        if model_cls is not None and hasattr(model_cls, "_from_config"):
            model = model_cls._from_config(cfg, **kwargs)
        else:
            model = auto_class_for_task(task or "CAUSAL_LM").from_config(cfg, **kwargs)
    if hasattr(model, "tie_weights"):  # outside init_empty_weights, which would re-create the parameter
        with stack.quiet():
            model.tie_weights()
    return model


def skeleton_of(model: Any) -> Any:
    """A meta-device model of the same class and config as ``model`` (a transformers model)."""
    return build(model.config, model_cls=type(model))


def attach_on_skeleton(skeleton: Any, peft_config: Any, name: str = "default") -> Any:
    """peft's own ``get_peft_model`` on a skeleton (a copy of the config: peft fills it in).

    Raises whatever peft raises; each caller turns that into its own one-line message.
    """
    from peft import get_peft_model

    with stack.quiet():
        return get_peft_model(skeleton, copy.deepcopy(peft_config), adapter_name=name)
