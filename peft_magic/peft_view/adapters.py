"""What is done to a PeftModel's adapters through peft's internals: their tensors, switching
them off and on, saving and merging one adapter, AdaLoRA's allocator, and taking every adapter
off a model and putting it back (``suspend`` / ``resume``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .. import stack
from .configs import active_adapter, configs, is_prompt_learning, peft_type
from .layers import aux_wrapper_class, layer_adapters, tuner_layer_class

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


def adapters_off(peft_model: Any) -> None:
    """Make the model compute the base model; nothing is removed."""
    if is_prompt_learning(peft_model.active_peft_config):
        # peft's own disable_adapter() does this swap for the length of a with-block
        peft_model.forward = peft_model.base_model.forward
        peft_model.prepare_inputs_for_generation = peft_model.base_model.prepare_inputs_for_generation
    else:
        with stack.quiet():
            peft_model.base_model.disable_adapter_layers()
    peft_model._adapters_disabled = True


def adapters_on(peft_model: Any) -> None:
    """Undo :func:`adapters_off`."""
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
    as it was.

    The layer's tensors are copied, the adapter merged (in place), the merged tensors
    taken and the copies put back in their place. No unmerge: it would cost a second
    delta and leave rounding noise (measured: it and the copying back were half of a
    merged export's time).
    """
    layer = module.get_base_layer()
    if name not in layer_adapters(module) or module.merged:
        return {k: v.detach().clone() for k, v in layer.state_dict().items()}
    own = dict(layer.named_parameters(recurse=False))
    own.update(layer.named_buffers(recurse=False))
    backup = {k: t.data.clone() for k, t in own.items()}
    try:
        with stack.quiet():
            module.merge(adapter_names=[name])
        merged = {k: v.detach() for k, v in layer.state_dict().items()}
    finally:
        for k, t in own.items():
            t.data = backup[k]
        module.merged_adapters = [a for a in module.merged_adapters if a != name]
        caches = getattr(module, "_caches", None)
        if isinstance(caches, dict):  # DoRA keeps its weight norm for an unmerge that will not come
            for key in [key for key in caches if key.startswith(f"{name}-")]:
                caches.pop(key)
    return merged


def merged_state_dict(peft_model: Any, name: str) -> dict[str, Any]:
    """The base model's state dict with adapter ``name`` merged in, the model left as it was.

    One adapted layer at a time, so the memory cost is one layer's weights, never a copy
    of the model.
    """
    tuner, aux = tuner_layer_class(), aux_wrapper_class()
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
        "off": bool(getattr(peft_model, "_adapters_disabled", False)),
        "prompt": is_prompt_learning(peft_model.peft_config[names[0]]),
    }
    base = peft_model.get_base_model()
    if saved["off"]:
        adapters_on(peft_model)
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
    if saved["off"]:
        adapters_off(peft_model)
