"""``BottleneckModel``: the peft tuner that puts bottleneck adapters into a model.

It is a plain ``BaseTuner`` like peft's ``IA3Model`` or ``LoraModel``: peft's
``inject_adapter`` walks the model and calls :meth:`BottleneckModel._create_and_replace`
for every module matched by ``target_modules``; matching, several adapters,
``set_adapter``, ``delete_adapter``, ``unload``, ``save_pretrained`` / ``from_pretrained``
and 4/8-bit bases all come from peft. What is specific here:

* ``target_modules`` left unset is derived from ``placement`` and the architecture
  (``constants.TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING``, then a search
  of the model's own layer names), and written back into the config, so the saved
  ``adapter_config.json`` names exactly the layers that were adapted;
* ``layers_to_transform`` also works with a regex ``target_modules`` (peft applies it to
  name lists only, and BERT-like placements are regexes);
* merging is refused with one line that says why (:data:`.layer.MERGE_MESSAGE`).

Heavy module by design (subclasses peft's ``BaseTuner``); imported only by
``peft_magic.bottleneck.register`` once peft is loaded.
"""

from __future__ import annotations

import re
from typing import Any

from peft.tuners.tuners_utils import BaseTuner, check_target_module_exists
from torch import nn

from .config import BottleneckConfig
from .constants import FALLBACK, TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING, default_target_modules
from .layer import MERGE_MESSAGE, BottleneckLayer, Linear


class BottleneckModel(BaseTuner):
    """Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for
    NLP"; Pfeiffer et al. 2021, "AdapterFusion") on the outputs of attention and/or MLP
    blocks.

    Example::

        >>> import peft_magic  # registers the method with peft
        >>> from peft import get_peft_model
        >>> from peft_magic.bottleneck import BottleneckConfig
        >>> model = get_peft_model(base, BottleneckConfig(bottleneck_size=16, placement="pfeiffer"))
    """

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping = {t: e["houlsby"] for t, e in TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING.items()}

    # ------------------------------------------------------------------ config / matching

    def _prepare_adapter_config(self, peft_config: BottleneckConfig, model_config: dict) -> BottleneckConfig:
        if peft_config.target_modules is None:
            model_type = model_config.get("model_type")
            targets = default_target_modules(model_type, peft_config.placement)
            if targets is None:
                targets = self._search_targets(peft_config.placement, model_type)
            peft_config.target_modules = set(targets) if isinstance(targets, list) else targets
        return peft_config

    def _search_targets(self, placement: str, model_type: str | None) -> str:
        """For an architecture not in the table: the usual attention / MLP output names,
        checked against this model so that a miss is an error and not a silent no-op."""
        attn, mlp = FALLBACK[placement]
        names = [n for n, _ in self.model.named_modules() if n]
        missing = [what for what, rx in (("attention", attn), ("MLP", mlp))
                   if rx is not None and not any(re.fullmatch(rx, n) for n in names)]
        if missing:
            raise ValueError(f"bottleneck does not know where the {' and '.join(missing)} outputs of model type "
                             f"'{model_type or 'unknown'}' are; pass target_modules=[...] (see %peft targets)")
        return mlp if attn is None else f"(?:{attn})|(?:{mlp})"

    @staticmethod
    def _check_target_module_exists(peft_config: BottleneckConfig, key: str) -> Any:
        found = check_target_module_exists(peft_config, key)
        if not found or not isinstance(peft_config.target_modules, str) or peft_config.layers_to_transform is None:
            return found  # peft already applied layers_to_transform to name lists
        index = _layer_index(key, peft_config.layers_pattern)
        if index is None:
            return False
        wanted = peft_config.layers_to_transform
        return index == wanted if isinstance(wanted, int) else index in wanted

    # ------------------------------------------------------------------ injection

    def _create_and_replace(self, peft_config: BottleneckConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str, **kwargs: Any) -> None:
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = Linear(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until it is activated
        self._replace_module(parent, target_name, new_module, target)

    # ------------------------------------------------------------------ merging

    def _check_merge_allowed(self) -> None:
        """Called by peft before ``merge_adapter`` and ``merge_and_unload`` touch anything."""
        raise ValueError(MERGE_MESSAGE)


def _layer_index(key: str, layers_pattern: Any) -> int | None:
    """The block index in a module name (``model.layers.3.mlp.down_proj`` → 3), as peft finds it."""
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        match = None
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
            if match is not None:
                break
    return int(match.group("idx")) if match else None
