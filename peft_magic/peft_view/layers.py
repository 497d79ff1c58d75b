"""peft's tuner layers, read: where adapters sit, how many parameters each adapter owns, and
taking a half-finished injection back off a base model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import stack
from ..model.properties import param_numel
from .configs import configs, is_prompt_learning

# ----------------------------------------------------------------------------- tuner layers


def tuner_layer_class() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def is_tuner_layer(module: Any) -> bool:
    return isinstance(module, tuner_layer_class())


def tuner_layers(model: Any) -> Iterator[tuple[str, Any]]:
    """(full name, module) of every peft tuner layer in ``model``."""
    cls = tuner_layer_class()
    for name, module in model.named_modules():
        if isinstance(module, cls):
            yield name, module


def layer_adapters(module: Any) -> set[str]:
    """The adapters one tuner layer holds."""
    try:
        return set(module._get_available_adapters()) if hasattr(module, "_get_available_adapters") else set()
    except Exception:  # noqa: BLE001 — a layer that cannot say holds none we can use
        return set()


def base_layer(module: Any) -> Any:
    """The original layer under a peft wrapper (the module itself when it is not wrapped)."""
    get = getattr(module, "get_base_layer", None)
    return get() if callable(get) else module


def original_layer(module: Any) -> Any:
    """The layer as the base model had it: under a tuner layer or a ``modules_to_save`` wrapper."""
    if isinstance(module, aux_wrapper_class()):
        return module.original_module
    return base_layer(module)


def adapter_params(peft_model: Any, name: str) -> tuple[int, bool]:
    """(parameter count, any requires_grad) of adapter ``name`` — peft names its tensors
    after the adapter (``…lora_A.<name>.weight``), so the name is a path component."""
    n, grad = 0, False
    for pname, p in peft_model.named_parameters():
        if name in pname.split("."):
            n += param_numel(p)
            grad = grad or p.requires_grad
    return n, grad


def adapters_params(peft_model: Any, names: list[str]) -> dict[str, tuple[int, bool]]:
    """:func:`adapter_params` for several adapters in one pass over the parameters."""
    return parameter_counts(list(peft_model.named_parameters()), names)[2]


def parameter_counts(named: list[tuple[str, Any]], names: list[str]
                     ) -> tuple[int, int, dict[str, tuple[int, bool]]]:
    """From one list of a PeftModel's ``named_parameters()``: (trainable, total) exactly as
    peft's ``get_nb_trainable_parameters`` counts them (a 4-bit weight holds two per byte
    of storage), and :func:`adapter_params` for each adapter in ``names``. One pass where
    three would walk the module tree three times (``%peft lora`` shows all of them)."""
    trainable = total = 0
    per = {name: [0, False] for name in names}
    for pname, p in named:
        n = p.numel()
        if n == 0 and hasattr(p, "ds_numel"):
            n = p.ds_numel
        four_bit = p.__class__.__name__ == "Params4bit"
        if four_bit:
            nbytes = p.element_size() if hasattr(p, "element_size") else (
                p.quant_storage.itemsize if hasattr(p, "quant_storage") else 1)
            n = n * 2 * nbytes
        total += n
        grad = p.requires_grad
        if grad:
            trainable += n
        for name in names:
            if name in pname and name in pname.split("."):  # the substring test first: it is cheap
                hit = per[name]
                hit[0] += p.numel() * (2 if four_bit else 1)  # param_numel
                hit[1] = hit[1] or grad
    return trainable, total, {name: (n, g) for name, (n, g) in per.items()}


def xlora_gate_params(peft_model: Any) -> tuple[int, bool]:
    """(parameter count, any requires_grad) of an X-LoRA adapter's own part, its gating
    classifier: peft names those tensors after the classifier, not after the adapter."""
    n, grad = 0, False
    for pname, p in peft_model.named_parameters():
        if "internal_xlora_classifier" in pname:
            n += param_numel(p)
            grad = grad or p.requires_grad
    return n, grad


def adapters_targets(peft_model: Any, names: list[str]) -> dict[str, list[str]]:
    """Full names of the layers each adapter in ``names`` sits in: peft's own list of
    targeted modules when there is one adapter (no pass over the modules), else peft's
    ``get_layer_status`` (each tuner layer with the adapters it holds)."""
    if len(names) == 1 and set(names) == set(configs(peft_model)):
        with contextlib.suppress(Exception):
            listed = [f"base_model.model.{n}" for n in peft_model.base_model.targeted_module_names]
            if listed and is_tuner_layer(peft_model.get_submodule(listed[0])):
                return {names[0]: listed}
    from peft.peft_model import get_layer_status

    out: dict[str, list[str]] = {name: [] for name in names}
    try:
        statuses = get_layer_status(peft_model)
    except (ValueError, TypeError):  # prompt-learning models have no tuner layers
        return out
    for status in statuses:
        for name in status.available_adapters:
            if name in out:
                out[name].append(f"base_model.{status.name}")
    return out


def trainable_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters as peft counts them (a 4-bit weight holds two)."""
    return model.get_nb_trainable_parameters()


def aux_wrapper_class() -> type:
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older peft
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper
    return AuxiliaryTrainingWrapper


def strip_tuner_layers(base: Any) -> None:
    """Undo a partial injection: replace every peft wrapper in ``base`` by its original layer."""
    tuner, aux = tuner_layer_class(), aux_wrapper_class()

    def parent_of(name: str) -> tuple[Any, str]:
        parent = base
        parts = name.split(".")
        for p in parts[:-1]:
            parent = getattr(parent, p)
        return parent, parts[-1]

    changed = True
    while changed:  # wrappers can nest; repeat until none is left
        changed = False
        for name, module in list(base.named_modules()):
            if not name:
                continue
            replacement = None
            if isinstance(module, tuner):
                replacement = module.get_base_layer()
            elif isinstance(module, aux):
                replacement = getattr(module, "original_module", None)
            if replacement is not None:
                parent, child = parent_of(name)
                setattr(parent, child, replacement)
                changed = True
                break


def unwrap_all(peft_model: Any) -> Any:
    """Remove every adapter from ``peft_model`` and return the plain base model."""
    base = peft_model.get_base_model()
    with stack.quiet():
        cfgs = configs(peft_model)
        if cfgs and not is_prompt_learning(next(iter(cfgs.values()))):
            base = peft_model.base_model.unload()
    base.__dict__.pop("peft_config", None)
    return base


