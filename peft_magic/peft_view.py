"""The one module that reads peft's internals: tuner layers, registries, switches.

Why one module: peft's public API (``get_peft_model``, ``PeftModel``, configs) covers
attaching, saving and loading, but several things users rely on need more — which
layers an adapter sits in, how many parameters each adapter owns, switching prompt
adapters off, merging one layer at a time, undoing a half-finished injection, AdaLoRA's
rank allocator. Those reach into peft's private structure, which changes between
releases; keeping every such read here means a new peft release is checked in one
place, and the rest of the package (and every face) sees plain functions. The
architecture test allows private peft attributes nowhere else (except the bottleneck
tuner, which *is* a peft tuner). Over 300 lines for that reason: it is the whole list.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import stack
from .fmt import strip_peft_prefix
from .model.properties import param_numel

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


# ----------------------------------------------------------------------------- tuner layers


def _tuner_layer_class() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def is_tuner_layer(module: Any) -> bool:
    return isinstance(module, _tuner_layer_class())


def tuner_layers(model: Any) -> Iterator[tuple[str, Any]]:
    """(full name, module) of every peft tuner layer in ``model``."""
    cls = _tuner_layer_class()
    for name, module in model.named_modules():
        if isinstance(module, cls):
            yield name, module


def base_layer(module: Any) -> Any:
    """The original layer under a peft wrapper (the module itself when it is not wrapped)."""
    get = getattr(module, "get_base_layer", None)
    return get() if callable(get) else module


def _layer_adapters(module: Any) -> set[str]:
    try:
        return set(module._get_available_adapters()) if hasattr(module, "_get_available_adapters") else set()
    except Exception:
        return set()


def adapter_targets(peft_model: Any, name: str) -> list[str]:
    """Full names of the layers adapter ``name`` sits in."""
    return [mname for mname, module in tuner_layers(peft_model) if name in _layer_adapters(module)]


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
    """:func:`adapter_targets` for several adapters: peft's own list of targeted modules
    when there is one adapter (no pass over the modules), else one pass."""
    if len(names) == 1 and set(names) == set(configs(peft_model)):
        with contextlib.suppress(Exception):
            listed = [f"base_model.model.{n}" for n in peft_model.base_model.targeted_module_names]
            if listed and is_tuner_layer(peft_model.get_submodule(listed[0])):
                return {names[0]: listed}
    out: dict[str, list[str]] = {name: [] for name in names}
    for mname, module in tuner_layers(peft_model):
        for name in _layer_adapters(module):
            if name in out:
                out[name].append(mname)
    return out


def trainable_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters as peft counts them (a 4-bit weight holds two)."""
    return model.get_nb_trainable_parameters()


def _aux_wrapper_class() -> type:
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older peft
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper
    return AuxiliaryTrainingWrapper


def strip_tuner_layers(base: Any) -> None:
    """Undo a partial injection: replace every peft wrapper in ``base`` by its original layer."""
    tuner, aux = _tuner_layer_class(), _aux_wrapper_class()

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


# ----------------------------------------------------------------------------- state


def adapter_state(peft_model: Any, name: str) -> dict[str, Any]:
    """A detached copy of adapter ``name``'s tensors (to put back after a failed change)."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: "auto" would look the base model up on the Hub.
    sd = get_peft_model_state_dict(peft_model, adapter_name=name, save_embedding_layers=False)
    return {k: v.detach().clone() for k, v in sd.items()}


def saved_shapes(peft_model: Any, name: str = "default") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors peft would save for adapter ``name``."""
    from peft import get_peft_model_state_dict

    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(
        peft_model, adapter_name=name, save_embedding_layers=False).items()}


def set_adapter_state(peft_model: Any, state: dict[str, Any], name: str) -> None:
    from peft import set_peft_model_state_dict

    with stack.quiet():
        set_peft_model_state_dict(peft_model, state, adapter_name=name)


def reattach(base: Any, config: Any, state: dict[str, Any], name: str) -> Any:
    """Put an adapter back on ``base`` exactly as it was (config and tensors)."""
    from peft import get_peft_model

    with stack.quiet():
        again = get_peft_model(base, config, adapter_name=name)
    set_adapter_state(again, state, name)
    return again


# ----------------------------------------------------------------------------- off / on


def switch_off(peft_model: Any) -> None:
    """Make the model compute the base model; nothing is removed."""
    if is_prompt_learning(peft_model.active_peft_config):
        # peft's own disable_adapter() does this swap for the length of a with-block
        peft_model.forward = peft_model.base_model.forward
        peft_model.prepare_inputs_for_generation = peft_model.base_model.prepare_inputs_for_generation
    else:
        with stack.quiet():
            peft_model.base_model.disable_adapter_layers()
    peft_model._adapters_disabled = True


def switch_on(peft_model: Any) -> None:
    """Undo :func:`switch_off`."""
    peft_model.__dict__.pop("forward", None)
    peft_model.__dict__.pop("prepare_inputs_for_generation", None)
    if not is_prompt_learning(peft_model.active_peft_config):
        with stack.quiet():
            peft_model.base_model.enable_adapter_layers()
    peft_model._adapters_disabled = False


# ----------------------------------------------------------------------------- saving and merging


def saves_embeddings(config: Any) -> bool:
    """Save the base embedding matrices only when the adapter trains them.

    peft's "auto" looks the base model up on the Hugging Face Hub to find out, which
    fails (or hangs) offline.
    """
    from peft.utils.other import EMBEDDING_LAYER_NAMES

    targets = getattr(config, "target_modules", None) or []
    if isinstance(targets, str):
        targets = [targets]
    if any(t in EMBEDDING_LAYER_NAMES for t in targets):
        return True
    return bool(getattr(config, "trainable_token_indices", None))


def write_adapter(peft_model: Any, name: str, folder: Path) -> None:
    """peft's own files for one adapter, at the top of ``folder`` (peft nests non-default ones)."""
    cfg = peft_model.peft_config[name]
    with stack.quiet():
        peft_model.save_pretrained(str(folder), selected_adapters=[name], save_embedding_layers=saves_embeddings(cfg),
                                   safe_serialization=True)
    sub = folder / name
    if name != "default" and sub.is_dir():
        for item in sub.iterdir():
            dest = folder / item.name
            if dest.exists():
                if dest.is_dir():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            item.rename(dest)
        sub.rmdir()


def _merged_layer(module: Any, name: str) -> dict[str, Any]:
    """One tuner layer's weights with adapter ``name`` merged in; the layer is left exactly
    as it was (the original values are put back: unmerging alone leaves rounding noise)."""
    layer = module.get_base_layer()
    original = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    if name not in _layer_adapters(module) or module.merged:
        return original
    try:
        with stack.quiet():
            module.merge(adapter_names=[name])
        return {k: v.detach().clone() for k, v in layer.state_dict().items()}
    finally:
        with stack.quiet():
            if module.merged:
                module.unmerge()
        layer.load_state_dict(original)


def merged_state_dict(peft_model: Any, name: str) -> dict[str, Any]:
    """The base model's state dict with adapter ``name`` merged in, the model left as it was.

    One adapted layer at a time, so the memory cost is one layer's weights, never a copy
    of the model.
    """
    tuner, aux = _tuner_layer_class(), _aux_wrapper_class()
    base = peft_model.get_base_model()
    replaced: dict[str, dict[str, Any]] = {}
    for mname, module in base.named_modules():
        if not mname or any(mname.startswith(p + ".") for p in replaced):
            continue
        if isinstance(module, tuner):
            replaced[mname] = _merged_layer(module, name)
        elif isinstance(module, aux):
            copies = getattr(module, "modules_to_save", None)
            src = copies[name] if copies is not None and name in copies else getattr(module, "original_module", None)
            if src is not None:
                replaced[mname] = {k: v.detach() for k, v in src.state_dict().items()}
    out = {k: v for k, v in base.state_dict().items() if not any(k.startswith(p + ".") for p in replaced)}
    for p, sd in replaced.items():
        out.update({f"{p}.{k}": v for k, v in sd.items()})
    return out


# ----------------------------------------------------------------------------- method internals


def adalora_set_total_step(peft_model: Any, total: int) -> None:
    """AdaLoRA's schedule must know the run's real length."""
    peft_model.peft_config[active_adapter(peft_model)].total_step = total
    peft_model.base_model.rankallocator.set_total_step(total)


def adalora_update(peft_model: Any, step: int) -> None:
    """AdaLoRA's rank reallocation, to be called after each optimizer step."""
    peft_model.base_model.update_and_allocate(step)


def prompt_tensor_shape(config: Any) -> tuple[int, int]:
    """The shape of a filled-in prompt-learning config's saved ``prompt_embeddings``."""
    total = config.num_virtual_tokens * (config.num_transformer_submodules or 1)
    dim = config.token_dim * (2 * config.num_layers if peft_type(config) == "PREFIX_TUNING" else 1)
    return total, dim


# ----------------------------------------------------------------------------- suspend / resume


def suspend(peft_model: Any) -> dict[str, Any]:
    """Take every adapter off the base model, keeping what it takes to put them back exactly:
    configs, tensors, the active adapter, trainable flags. The ``PeftModel`` object stays
    the user's; :func:`resume` re-injects into it (``%peft compare`` trains other methods on
    the bare base in between)."""
    import copy

    names = list(configs(peft_model))
    saved = {
        "configs": {n: copy.deepcopy(c) for n, c in peft_model.peft_config.items()},
        "states": {n: adapter_state(peft_model, n) for n in names},
        "active": active_adapter(peft_model),
        "grads": {n: p.requires_grad for n, p in peft_model.named_parameters()},
        "disabled": bool(getattr(peft_model, "_adapters_disabled", False)),
        "prompt": is_prompt_learning(peft_model.peft_config[names[0]]),
    }
    base = peft_model.get_base_model()
    if saved["disabled"]:
        switch_on(peft_model)
    if not saved["prompt"]:
        with stack.quiet():
            peft_model.base_model.unload()
    saved["base_peft_config"] = base.__dict__.pop("peft_config", None)
    return saved


def resume(peft_model: Any, saved: dict[str, Any]) -> None:
    """Put back what :func:`suspend` took off, into the same ``PeftModel`` object (through
    peft's own ``add_adapter``, which also re-wraps ``modules_to_save``)."""
    base = peft_model.get_base_model()
    if saved["base_peft_config"] is not None:
        base.__dict__["peft_config"] = saved["base_peft_config"]
    if not saved["prompt"]:
        with stack.quiet():
            for name, config in saved["configs"].items():
                peft_model.peft_config.pop(name, None)
                peft_model.add_adapter(name, config)
    for name, state in saved["states"].items():
        set_adapter_state(peft_model, state, name)
    with stack.quiet():
        peft_model.set_adapter(saved["active"])
    for n, p in peft_model.named_parameters():
        if n in saved["grads"]:
            p.requires_grad_(saved["grads"][n])
    if saved["disabled"]:
        switch_off(peft_model)
