"""The one place that reads peft's internals: tuner layers, registries, switches.

Why one place: peft's public API (``get_peft_model``, ``PeftModel``, configs) covers
attaching, saving and loading, but several things users rely on need more — which
layers an adapter sits in, how many parameters each adapter owns, switching prompt
adapters off, merging one layer at a time, undoing a half-finished injection, AdaLoRA's
rank allocator. Those reach into peft's private structure, which changes between
releases; keeping every such read here means a new peft release is checked in one
place, and the rest of the package (and every face) sees plain functions. The
architecture test allows private peft attributes nowhere else (except the bottleneck
tuner, which *is* a peft tuner). It is the whole list, in three modules:
``configs`` (configs and the registry), ``layers`` (tuner layers and counts) and
``adapters`` (adapter tensors, off / on, save and merge, suspend / resume); this package
re-exports them, so callers write ``peft_view.name``.
"""

from .adapters import (
    adalora_set_total_step,
    adalora_update,
    adapter_state,
    adapters_off,
    adapters_on,
    merged_state_dict,
    prompt_tensor_shape,
    reattach,
    resume,
    saved_shapes,
    saves_embeddings,
    set_adapter_state,
    suspend,
    write_adapter,
)
from .configs import (
    active_adapter,
    active_adapters,
    config_mapping,
    configs,
    default_target_modules,
    has_bnb_layers,
    is_prompt_config_class,
    is_prompt_learning,
    layers_can_merge,
    peft_type,
    target_matches,
    targeted_module_names,
    task_type,
    tuner_doc,
)
from .layers import (
    adapter_params,
    adapters_params,
    adapters_targets,
    aux_wrapper_class,
    base_layer,
    is_tuner_layer,
    layer_adapters,
    original_layer,
    parameter_counts,
    strip_tuner_layers,
    trainable_counts,
    tuner_layer_class,
    tuner_layers,
    unwrap_all,
    xlora_gate_params,
)

__all__ = [
    "active_adapter",
    "active_adapters",
    "adalora_set_total_step",
    "adalora_update",
    "adapter_params",
    "adapter_state",
    "adapters_off",
    "adapters_on",
    "adapters_params",
    "adapters_targets",
    "aux_wrapper_class",
    "base_layer",
    "config_mapping",
    "configs",
    "default_target_modules",
    "has_bnb_layers",
    "is_prompt_config_class",
    "is_prompt_learning",
    "is_tuner_layer",
    "layer_adapters",
    "layers_can_merge",
    "merged_state_dict",
    "original_layer",
    "parameter_counts",
    "peft_type",
    "prompt_tensor_shape",
    "reattach",
    "resume",
    "saved_shapes",
    "saves_embeddings",
    "set_adapter_state",
    "strip_tuner_layers",
    "suspend",
    "target_matches",
    "targeted_module_names",
    "task_type",
    "trainable_counts",
    "tuner_doc",
    "tuner_layer_class",
    "tuner_layers",
    "unwrap_all",
    "write_adapter",
    "xlora_gate_params",
]
