"""peft's configs and registry, read: a config's type and task, the adapters of a model, which
methods exist and what their layer classes can do (merge, 4/8-bit), default targets."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from .. import stack
from ..fmt import strip_peft_prefix

# ----------------------------------------------------------------------------- configs


def peft_type(config: Any) -> str:
    """``"LORA"`` for a LoraConfig (peft stores an enum, plugins may store a string)."""
    return str(getattr(config.peft_type, "value", config.peft_type))


def task_type(config: Any) -> str | None:
    """The config's task type as a plain string, or ``None``."""
    t = getattr(config, "task_type", None)
    return str(getattr(t, "value", t)) if t else None


def is_prompt_learning(config: Any) -> bool:
    """Prompt / prefix / p-tuning style adapters (virtual tokens, no wrapped layers)."""
    return bool(getattr(config, "is_prompt_learning", False))


def configs(peft_model: Any) -> dict[str, Any]:
    """Adapter name → config (empty for a model without adapters)."""
    return dict(getattr(peft_model, "peft_config", None) or {})


def active_adapters(peft_model: Any) -> list[str]:
    """The active adapter names (peft returns a string or a list depending on the method).

    An X-LoRA model reports its LoRA experts (``"0"``, ``"1"``, …) as the active
    adapters; the adapter the user attached, trains and saves is the X-LoRA one."""
    for name, config in configs(peft_model).items():
        if peft_type(config) == "XLORA":
            return [name]
    act = getattr(peft_model, "active_adapters", None) or peft_model.active_adapter
    return [act] if isinstance(act, str) else list(act)


def active_adapter(peft_model: Any) -> str:
    """The (first) active adapter's name."""
    return active_adapters(peft_model)[0]


# ----------------------------------------------------------------------------- the registry


def config_mapping() -> dict[Any, type]:
    """peft's registry: PeftType → config class (filled by ``register_peft_method``)."""
    stack.ensure()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING


def is_prompt_config_class(config_cls: type) -> bool:
    from peft.config import PromptLearningConfig

    return issubclass(config_cls, PromptLearningConfig)


def layers_can_merge(config_cls: type) -> bool:
    """Whether the method's layer classes implement ``merge`` (read from peft's classes:
    a tuner layer that does not override ``BaseTunerLayer.merge`` cannot be merged)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    pkg = config_cls.__module__.rsplit(".", 1)[0]
    try:
        mod = importlib.import_module(pkg + ".layer")
    except ImportError:
        return False
    layers = [c for c in vars(mod).values()
              if inspect.isclass(c) and issubclass(c, BaseTunerLayer) and c is not BaseTunerLayer]
    return any(getattr(c, "merge", None) is not BaseTunerLayer.merge for c in layers)


def has_bnb_layers(config_cls: type) -> bool:
    """Whether peft ships bitsandbytes (4/8-bit) layers for the method."""
    pkg = config_cls.__module__.rsplit(".", 1)[0]
    try:
        return importlib.util.find_spec(pkg + ".bnb") is not None
    except (ImportError, ValueError):
        return False


def tuner_doc(peft_type_name: str) -> str:
    """The first line of the method's tuner class docstring ('' when it says nothing)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    doc = inspect.getdoc(PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type_name)) or ""
    first = doc.split("\n")[0].strip()
    return first if first and "base tuner model" not in first else ""


def default_target_modules(model_type: str, peft_type_name: str = "LORA") -> list[str] | None:
    """peft's per-architecture default ``target_modules`` for a method, or ``None``."""
    from peft.utils import constants

    mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type_name}_TARGET_MODULES_MAPPING", None)
    if mapping is None:
        mapping = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    t = mapping.get(model_type)
    return list(t) if t is not None else None


def target_matches(pattern: Any, module_name: str) -> bool:
    """Whether peft would target ``module_name`` with ``target_modules=pattern`` (its own matching)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    return bool(check_target_module_exists(LoraConfig(target_modules=pattern), module_name))


def targeted_module_names(peft_model: Any) -> list[str]:
    """Full names of the modules peft wrapped (as the user's model names them)."""
    return [strip_peft_prefix(n) for n in peft_model.base_model.targeted_module_names]


