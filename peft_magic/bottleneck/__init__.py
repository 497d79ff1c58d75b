"""Bottleneck (Houlsby / Pfeiffer) adapters as a real peft method.

Classic adapters — a small ``down-project → non-linearity → up-project`` network added
after the attention and/or MLP outputs of every transformer block — are not in peft.
This package provides them as the peft method ``BOTTLENECK`` so that everything peft
does for its own methods works for them: ``get_peft_model``, several adapters with
``set_adapter``, ``delete_adapter``, ``save_pretrained`` (``adapter_config.json`` +
``adapter_model.safetensors``), ``PeftModel.from_pretrained`` and peft_magic's
``%peft bottleneck`` / ``%peft houlsby`` / ``%peft pfeiffer``.

* :mod:`.config` — ``BottleneckConfig`` (the peft config dataclass)
* :mod:`.layer` — ``BottleneckLayer`` / ``Linear`` (the tuner layer wrapping a layer's output)
* :mod:`.model` — ``BottleneckModel`` (the ``BaseTuner``)
* :mod:`.constants` — where the adapters go per architecture (plain data)

Which peft behaviours the method supports
-----------------------------------------
For a reader of peft's own test suite (e.g. ``tests/test_custom_models.py``) who wants to
know what to expect. Each line names the project's test that checks it
(``contract`` = ``tests/test_bottleneck_contract.py``, ``engine`` =
``tests/test_bottleneck.py``, ``kernel`` = ``tests/test_bottleneck_kernel.py``):

* **base layers**: ``nn.Linear``, transformers' ``Conv1D``, bitsandbytes ``Linear4bit``
  and ``Linear8bitLt`` (on CPU too), and any other layer with integer ``in_features`` and
  ``out_features``; every wrapped layer exposes ``in_features`` / ``out_features`` equal
  to its base layer's, like every peft tuner layer — contract
  ``test_wrapped_layer_exposes_the_base_layers_in_and_out_features``,
  ``test_every_adapted_layer_of_a_real_architecture_reports_its_base_layers_widths``;
  engine ``test_4bit_base_noop_trains_and_keeps_quantized_layers``.
* **other layers** (``nn.Embedding``, convolutions, ...): a one-line ``ValueError``
  "Target module X is not supported" — contract
  ``test_unsupported_layer_types_get_the_clear_error``; engine
  ``test_bad_settings_are_one_line_and_change_nothing``.
* **a new adapter is an exact no-op; training reaches only adapter parameters** — engine
  ``test_exact_noop_at_init_placement_and_parameter_count``,
  ``test_trains_and_only_adapters_get_gradients``.
* **disable** (``with model.disable_adapter()``: output equals the base's) — engine
  ``test_two_adapters_switch_delete_and_merge_refused``; contract
  ``test_a_trained_adapter_on_each_layer_type_changes_the_output_with_the_right_shape``.
* **several adapters** (``add_adapter``, ``set_adapter`` switches outputs and
  trainability) and **delete** (``delete_adapter``) — engine
  ``test_two_adapters_switch_delete_and_merge_refused``; contract
  ``test_wrapped_layer_exposes_the_base_layers_in_and_out_features`` (a second adapter).
* **save / load** (``save_pretrained``, ``PeftModel.from_pretrained``, ``load_adapter``:
  bit-identical outputs) — contract ``test_save_and_load_roundtrip_gives_identical_outputs``;
  kernel ``test_saved_adapter_loads_in_a_fresh_kernel_with_identical_logits``.
* **low-memory loading** (``low_cpu_mem_usage=True`` in ``from_pretrained`` and
  ``load_adapter``: identical outputs, no parameter left on the meta device) — contract
  ``test_save_and_load_roundtrip_gives_identical_outputs[True]``.
* **dtypes**: fp32; a bf16 or fp16 base, with the adapter kept in fp32
  (``autocast_adapter_dtype=True``, peft's default) or in the base's dtype (False), output
  in the base's dtype, forward and backward — contract
  ``test_half_precision_base_forward_and_backward``; an fp32 model under
  ``torch.autocast("cpu", torch.bfloat16)`` — contract ``test_fp32_model_under_cpu_autocast``.
* **merge: no.** ``merge_adapter`` / ``merge_and_unload`` raise ``ValueError``
  (:data:`.layer.MERGE_MESSAGE`) before changing anything — the adapter is a non-linear
  network, not a weight update — so peft's merge tests fail for this method by design
  (peft skips them for its own non-mergeable methods) — engine
  ``test_two_adapters_switch_delete_and_merge_refused``.
* **unload: yes** (``unload()`` gives back the base model with its own layers) — engine
  ``test_two_adapters_switch_delete_and_merge_refused``.

Not covered by the project's tests, so not claimed: mixed-adapter batches
(``adapter_names=`` in ``forward``), ``PeftMixedModel``, ``torch.compile``, GPUs and
sharded (FSDP / DeepSpeed) training.

How the method gets into peft
-----------------------------
peft's public plug-in point is ``peft.utils.register_peft_method``, but it only accepts a
name that is already a member of the ``PeftType`` enum, and every saved
``adapter_config.json`` says ``"peft_type": "BOTTLENECK"``, which peft looks up in
``PEFT_TYPE_TO_CONFIG_MAPPING`` when loading. We therefore **add a ``BOTTLENECK`` member
to peft's own ``PeftType`` enum, in place** (:func:`_add_peft_type`), exactly the way
``enum`` itself adds members while building the class (same ``_name_`` / ``_value_``,
entered in ``_member_names_``, ``_member_map_`` and ``_value2member_map_``; on Python
3.13+ through ``EnumType._add_member_``), and then call ``register_peft_method`` like
peft's own tuners do. The alternatives are worse: a new enum class replacing
``PeftType`` would not be the object peft's modules already imported (``PeftType.LORA``
of one class is not a member of the other), and registering under an existing name would
hijack another method. With the member in place, ``PeftType("BOTTLENECK")``,
``PeftType.BOTTLENECK``, ``PeftType["BOTTLENECK"]``, iteration, ``len``, pickling and
peft's JSON config loading all behave as for built-in members.

When it happens: importing this package is cheap. If peft is already imported, it
registers at once; otherwise it leaves a one-shot import hook that registers right after
``import peft`` finishes (then removes itself). ``import peft_magic`` imports this package,
so once ``peft_magic`` is imported, peft's own ``PeftModel.from_pretrained`` loads saved
bottleneck adapters in any order of imports — without making ``import peft_magic`` pay for
importing peft. Registration is idempotent: importing or calling :func:`register` again
changes nothing.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
import warnings
from typing import Any

PEFT_TYPE = "BOTTLENECK"
METHOD_NAME = "bottleneck"
PREFIX = "bottleneck_"

_lock = threading.RLock()
_LAZY = {
    "BottleneckConfig": "config",
    "BottleneckModel": "model",
    "BottleneckLayer": "layer",
    "Linear": "layer",
    "MERGE_MESSAGE": "layer",
    "TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING": "constants",
    "default_target_modules": "constants",
}

__all__ = ["PEFT_TYPE", "is_registered", "register", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """``from peft_magic.bottleneck import BottleneckConfig`` (imports peft on first use)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _add_peft_type(name: str) -> Any:
    """Make ``name`` a member of peft's ``PeftType`` (a ``str`` enum); return the member.

    Does what ``enum.EnumType`` does for each member while creating the class, so the
    new member is indistinguishable from the built-in ones. Idempotent.
    """
    from peft.utils.peft_types import PeftType

    existing = PeftType.__members__.get(name)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    member._sort_order_ = len(PeftType._member_names_)
    PeftType._member_names_.append(name)
    if hasattr(PeftType, "_add_member_"):  # Python 3.13+: sets the class attribute and _member_map_
        PeftType._add_member_(name, member)
    else:
        PeftType._member_map_[name] = member
        type.__setattr__(PeftType, name, member)  # EnumType.__setattr__ guards existing members only
    PeftType._value2member_map_[name] = member
    hashable = getattr(PeftType, "_hashable_values_", None)  # 3.13+
    if isinstance(hashable, list) and name not in hashable:
        hashable.append(name)
    return member


def is_registered() -> bool:
    """Whether peft knows the ``BOTTLENECK`` method now (does not import peft)."""
    mapping = sys.modules.get("peft.mapping")
    return mapping is not None and PEFT_TYPE in getattr(mapping, "PEFT_TYPE_TO_CONFIG_MAPPING", {})


def register() -> bool:
    """Register bottleneck adapters with peft; ``True`` if this call did it, ``False`` if it
    was already done. Imports peft (call it only when that is fine)."""
    with _lock:
        from peft.mapping import (
            PEFT_TYPE_TO_CONFIG_MAPPING,
            PEFT_TYPE_TO_MIXED_MODEL_MAPPING,
            PEFT_TYPE_TO_PREFIX_MAPPING,
            PEFT_TYPE_TO_TUNER_MAPPING,
        )
        from peft.utils import register_peft_method

        from .config import BottleneckConfig
        from .model import BottleneckModel

        member = _add_peft_type(PEFT_TYPE)
        current = PEFT_TYPE_TO_CONFIG_MAPPING.get(member)
        if current is BottleneckConfig:
            return False
        if current is not None:
            if (current.__module__, current.__qualname__) != (BottleneckConfig.__module__,
                                                             BottleneckConfig.__qualname__):
                warnings.warn(f"peft already has a method called {PEFT_TYPE} ({current.__module__}); "
                              "peft_magic's bottleneck adapters were not registered", stacklevel=2)
                return False
            # our own classes from an earlier import of these modules (importlib.reload): replace them
            for mapping in (PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING,
                            PEFT_TYPE_TO_MIXED_MODEL_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING):
                mapping.pop(member, None)
        register_peft_method(name=METHOD_NAME, config_cls=BottleneckConfig, model_cls=BottleneckModel,
                             prefix=PREFIX)
        return True


# ----------------------------------------------------------------------------- import hook


class _RegisterAfterPeft(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``peft`` is about to be imported, wraps its loader so
    that :func:`register` runs right after peft's ``__init__`` has finished."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "peft":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    """peft's own loader plus a call to :func:`register` after it ran."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: Any) -> Any:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self._wrapped.exec_module(module)
        finally:  # afterwards nobody should see the wrapper
            module.__loader__ = self._wrapped
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._wrapped
        _remove_hook()
        try:
            register()
        except Exception as e:  # never break `import peft` for the user
            warnings.warn(f"peft_magic could not register bottleneck adapters with peft: {e}", stacklevel=2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


_hook: _RegisterAfterPeft | None = None


def _install_hook() -> None:
    global _hook
    with _lock:
        if _hook is None:
            _hook = _RegisterAfterPeft()
            sys.meta_path.insert(0, _hook)


def _remove_hook() -> None:
    global _hook
    with _lock:
        if _hook is not None:
            try:
                sys.meta_path.remove(_hook)
            except ValueError:
                pass
            _hook = None


if "peft" in sys.modules:
    register()  # peft is here already (e.g. imported by peft_magic.stack.ensure): register now
else:
    _install_hook()
