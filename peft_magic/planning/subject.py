"""What a plan is for: a model in the kernel, a config, or a name whose config is read.

Planning never loads weights: a built-in, a folder or a hub id is resolved the same way
loading resolves it (``model.source``), and only its config is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PeftMagicError, first_line
from ..model import source as sources
from ..model.properties import default_task, infer_task
from ..state import unwrap
from ..tasks.names import normalize_task


@dataclass
class Subject:
    """The model a plan is for: its name, config and task, and the live model if there is one."""

    name: str
    config: Any
    task: str
    model_cls: Any = None
    live: Any = None  # the model in the kernel (a PeftModel or a base model), if any

    @property
    def base(self) -> Any:
        return unwrap(self.live) if self.live is not None else None


def _from_dict(source: dict[str, Any], task_type: str | None) -> Subject:
    from transformers import AutoConfig

    d = dict(source)
    model_type = d.pop("model_type", None)
    if not model_type:
        raise PeftMagicError("a config dict needs a 'model_type' (e.g. 'llama')")
    try:
        config = AutoConfig.for_model(model_type, **d)
    except Exception as e:
        raise PeftMagicError(f"cannot build a {model_type} config: {first_line(e)}") from None
    return Subject(d.get("name", model_type), config, task_type or default_task(config))


def subject_from_name(source: str, task_type: str | None) -> Subject:
    """Read only the config of a built-in, a folder or a hub id (never the weights)."""
    src = sources.resolve(source)
    config = sources.read_config(src)
    implied = normalize_task(src.builtin.task) if src.builtin is not None else None
    return Subject(source, config, task_type or implied or default_task(config))


def subject_of(source: Any, task: str | None) -> Subject:
    """What to plan for: a live model, a transformers config (or dict), or a name / path."""
    import torch

    task_type = normalize_task(task) if task else None
    if isinstance(source, torch.nn.Module):
        base = unwrap(source)
        config = getattr(base, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise PeftMagicError(f"cannot plan for a {type(base).__name__}: it has no transformers config")
        name = getattr(config, "_name_or_path", "") or type(base).__name__
        return Subject(name, config, task_type or infer_task(source) or "CAUSAL_LM", type(base), source)
    if isinstance(source, dict):
        return _from_dict(source, task_type)
    if hasattr(source, "to_dict") and hasattr(source, "model_type"):
        name = getattr(source, "_name_or_path", "") or getattr(source, "model_type", "model")
        return Subject(name, source, task_type or default_task(source))
    if isinstance(source, str):
        return subject_from_name(source, task_type)
    raise PeftMagicError(f"cannot plan for a {type(source).__name__}",
                         "give a model, a transformers config, a folder, a hub id or a built-in name")
