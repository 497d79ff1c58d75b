"""Friendly names: method aliases (``qlora``, ``dora``, ``prefix`` …) and short setting keys.

Why: users type what papers and blog posts call a method, and the short keys every
example uses (``alpha``, ``dropout``, ``target``). An alias may imply settings (``dora``
is LoRA with ``use_dora=True``) or a quantized base (``qlora``). A key alias lists
candidate real fields, first existing one wins, so a key is never silently sent to the
wrong field of a method that lacks it.
"""

from __future__ import annotations

from typing import Any

#: alias → (PeftType name, preset settings, needs a quantized base)
METHOD_ALIASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "qlora": ("LORA", {}, True),
    "dora": ("LORA", {"use_dora": True}, False),
    "rslora": ("LORA", {"use_rslora": True}, False),
    "pissa": ("LORA", {"init_lora_weights": "pissa"}, False),
    "olora": ("LORA", {"init_lora_weights": "olora"}, False),
    "prefix": ("PREFIX_TUNING", {}, False),
    "prompt": ("PROMPT_TUNING", {}, False),
    "p-tuning": ("P_TUNING", {}, False),
    "ptuning": ("P_TUNING", {}, False),
    "llama_adapter": ("ADAPTION_PROMPT", {}, False),
    "adaption": ("ADAPTION_PROMPT", {}, False),
    "multitask_prompt": ("MULTITASK_PROMPT_TUNING", {}, False),
    "mpt": ("MULTITASK_PROMPT_TUNING", {}, False),
    "layernorm": ("LN_TUNING", {}, False),
    "ln": ("LN_TUNING", {}, False),
    "tokens": ("TRAINABLE_TOKENS", {}, False),
    "houlsby": ("BOTTLENECK", {"placement": "houlsby"}, False),
    "pfeiffer": ("BOTTLENECK", {"placement": "pfeiffer"}, False),
    "adapter": ("BOTTLENECK", {}, False),
    "adapters": ("BOTTLENECK", {}, False),
}

#: the friendliest name of a peft type where it differs from ``peft_type.lower()``
SHORT_NAMES: dict[str, str] = {"PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "P_TUNING": "p-tuning"}

#: key alias → candidate real field names, first existing one wins
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "alpha": ("lora_alpha", "alpha"),
    "dropout": ("lora_dropout", "dropout", "module_dropout", "rank_dropout", "adapter_dropout"),
    "target": ("target_modules",),
    "targets": ("target_modules",),
    "modules": ("target_modules",),
    "exclude": ("exclude_modules",),
    "tokens": ("num_virtual_tokens", "token_indices"),
    "virtual_tokens": ("num_virtual_tokens",),
    "rank": ("r",),
    "save": ("modules_to_save",),
    "layers": ("layers_to_transform",),
    "init": ("init_lora_weights", "init_weights", "prompt_tuning_init"),
    "size": ("bottleneck_size",),
    "reduction": ("reduction_factor",),
    "encoder_hidden": ("encoder_hidden_size",),
}


def normalize_name(name: str) -> str:
    """``"P-Tuning"`` → ``"p_tuning"`` (how names are compared)."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")

