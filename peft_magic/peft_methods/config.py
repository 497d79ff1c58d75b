"""From a user's request to a peft config object, validated before the model is touched.

``build_config`` fills in what the request leaves open (adaptive defaults, the alias's
preset, the task) and turns peft's own validation errors into one line; ``validate``
attaches the config to a meta-device skeleton of the model, which catches bad targets,
``r=0`` and impossible combinations in milliseconds without touching the user's model.
"""

from __future__ import annotations

from typing import Any

from .. import stack
from ..errors import PeftMagicError, first_line
from ..model.skeleton import attach_on_skeleton, can_skeleton, skeleton_of
from .behaviour import adaptive_defaults, check_required, peft_workarounds
from .discovery import MethodSpec


def build_config(spec: MethodSpec, settings: dict[str, Any], task: str | None, base: Any) -> Any:
    """The peft config object for ``spec`` + normalised ``settings`` on ``base``.

    Adds the adaptive defaults (``behaviour.adaptive_defaults``) and the alias's preset;
    one-line errors for missing or invalid values. ``base`` is only read (its ``config``).
    """
    explicit = dict(settings)
    model_config = getattr(base, "config", None)
    layers = getattr(model_config, "num_hidden_layers", None)
    kwargs = {**adaptive_defaults(spec, model_config, explicit, layers), **spec.preset, **explicit}
    if task is not None and "task_type" not in kwargs:
        kwargs["task_type"] = task
    check_required(spec, kwargs, model_config)
    kwargs = peft_workarounds(spec.info.peft_type, kwargs)
    try:
        with stack.quiet():
            return spec.info.config_cls(**kwargs)
    except ImportError as e:
        raise PeftMagicError(f"{spec.requested} needs a package that is not installed: {first_line(e)}") from None
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        raise PeftMagicError(f"invalid settings for {spec.requested}: {first_line(e)}") from None


def failure_hint(spec: MethodSpec, msg: str, quantized: bool) -> str | None:
    """What to do about a failed attach, from peft's message."""
    low = msg.lower()
    if quantized and not spec.info.supports_quantized:
        return f"{spec.requested} has no bitsandbytes support in this peft; use lora/qlora, or load without --4bit"
    if "not found in the base model" in low or "no modules were targeted" in low or "no `target_modules`" in low:
        return "see %peft targets for the layer names of this model"
    if "is not supported" in low and "target module" in low:
        return f"{spec.requested} can only adapt some layer types; see %peft targets"
    return None


def require_trainable(spec: MethodSpec, peft_model: Any) -> None:
    """An adapter with nothing to train is a mistake (``tokens=0``, an empty target list).

    Stops at the first trainable tensor: this runs on every attach."""
    try:
        trainable = any(p.requires_grad and p.numel() > 0 for p in peft_model.parameters())
    except Exception:
        return
    if not trainable:
        raise PeftMagicError(f"{spec.requested} with these settings adds no trainable parameters",
                             "check sizes such as r, num_virtual_tokens or the target modules")


def attach_error(spec: MethodSpec, e: BaseException, quantized: bool) -> PeftMagicError:
    """peft's exception from an attach as our one line."""
    msg = first_line(e)
    return PeftMagicError(f"cannot attach {spec.requested}: {msg}", failure_hint(spec, msg, quantized))


def validate(spec: MethodSpec, config: Any, base: Any, name: str, quantized: bool) -> None:
    """Attach ``config`` to a meta-device skeleton of ``base``; raise one line if it fails."""
    if not can_skeleton(base):
        return
    try:
        skel = skeleton_of(base)
    except Exception:
        return  # architectures that cannot be rebuilt empty: the guarded real attach still applies
    try:
        attached = attach_on_skeleton(skel, config, name)
    except Exception as e:
        msg = first_line(e)
        if "meta" in msg.lower() and "tensor" in msg.lower():
            return  # an init that needs real weights (PiSSA, OLoRA…): only the real attach can tell
        raise attach_error(spec, e, quantized) from None
    require_trainable(spec, attached)
