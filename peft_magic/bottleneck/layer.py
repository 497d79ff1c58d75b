"""The tuner layer: a frozen layer followed by one small bottleneck network per adapter.

Why the adapter wraps the *output* of an existing layer (``o_proj``, ``down_proj``,
GPT-2's ``Conv1D`` ``c_proj``, BERT's ``output.dense``) instead of inserting a new
module between blocks: peft's machinery (matching, ``set_adapter``, ``delete_adapter``,
state-dict keys, device placement, ``unload``) is built around wrapping modules, so a
wrapper gets all of it for free, and the model's own ``forward`` stays untouched. The
adapter only reads the layer's output tensor, so the wrapped layer can be anything whose
input and output widths are known (:func:`in_out_features`) — including bitsandbytes
``Linear4bit`` / ``Linear8bitLt``, whose quantized weights it never touches.

Heavy module by design (subclasses torch / peft classes); imported only by
``peft_magic.bottleneck.register`` once peft is loaded.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import BottleneckConfig

#: why merging cannot work, said once for the layer, the tuner and the engine
MERGE_MESSAGE = ("bottleneck adapters cannot be merged into the base weights: each is a small non-linear "
                 "network, not a weight update — keep the PeftModel (or save just the adapter), or unload() "
                 "to drop it")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _own_in_out_features(layer: nn.Module) -> tuple[int | None, int | None]:
    """``(in_features, out_features)`` of the layer types this method accepts, for peft
    releases without ``peft.tuners.tuners_utils._get_in_out_features`` (peft 0.17 lacks it;
    the project supports peft >= 0.17). Same answers as peft's helper for these types."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):  # weight is (in, out); DeepSpeed ZeRO-3 keeps the full shape in ds_shape
        shape = getattr(layer.weight, "ds_shape", None) or layer.weight.shape
        return int(shape[0]), int(shape[1])
    return getattr(layer, "in_features", None), getattr(layer, "out_features", None)


try:  # the helper peft's own tuner layers (LoRA, LyCORIS, SHiRA, ...) use: reuse it so we agree with them
    from peft.tuners.tuners_utils import _get_in_out_features as _peft_in_out_features
except ImportError:  # older peft
    _peft_in_out_features = _own_in_out_features


def _is_width(value: Any) -> bool:
    """A usable layer width: a positive ``int`` (not ``bool``, not ``None`` from peft's helper)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a layer this method can wrap; ``ValueError`` for any other.

    Why both: every peft tuner layer exposes ``in_features`` and ``out_features`` (peft's
    custom-model tests check it, and other libraries read them from wrapped layers); the
    adapter itself only needs ``out_features`` (it reads the layer's output). The numbers
    come from peft's own helper where it exists, so that e.g. GPT-2's ``Conv1D`` (weight
    stored as (in, out)) and bitsandbytes' ``Linear4bit`` (packed weight, whose shape says
    nothing about the layer) get exactly the values peft's LoRA layers report.

    Accepted: ``nn.Linear`` (which covers bitsandbytes' ``Linear4bit`` / ``Linear8bitLt``),
    ``Conv1D``, and any other layer with integer ``in_features`` and ``out_features``.
    Not accepted, although peft's helper knows their sizes: embeddings, convolutions and
    multi-head attention (their output's last dimension is not ``out_features``, so the
    adapter's ``nn.Linear`` would not fit it); they have no ``in_features`` attribute.
    """
    accepted = isinstance(layer, (nn.Linear, Conv1D)) or (
        _is_width(getattr(layer, "in_features", None)) and _is_width(getattr(layer, "out_features", None)))
    if accepted:
        in_features, out_features = _peft_in_out_features(layer)
        if _is_width(in_features) and _is_width(out_features):
            return int(in_features), int(out_features)
    raise ValueError(f"Target module {type(layer).__name__} is not supported: bottleneck adapters go after a "
                     "Linear or Conv1D layer (also 4/8-bit) whose input and output widths are known")


class BottleneckLayer(BaseTunerLayer):
    """Per-adapter bottleneck networks applied to the output of ``base_layer``.

    The parameters live in ``ModuleDict``s keyed by adapter name (peft's layout), so the
    saved keys are ``<layer>.bottleneck_down.weight`` etc. and several adapters coexist.
    """

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_dropout", "bottleneck_act", "bottleneck_size", "bottleneck_scaling",
                         "bottleneck_residual")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.bottleneck_down = nn.ModuleDict({})
        self.bottleneck_up = nn.ModuleDict({})
        self.bottleneck_dropout = nn.ModuleDict({})
        self.bottleneck_act = nn.ModuleDict({})
        self.bottleneck_size: dict[str, int] = {}
        self.bottleneck_scaling: dict[str, float] = {}
        self.bottleneck_residual: dict[str, bool] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        # both, like every peft tuner layer (see in_out_features); raises for layers we cannot wrap
        self.in_features, self.out_features = in_out_features(self.get_base_layer())

    def update_layer(self, adapter_name: str, config: BottleneckConfig, **kwargs: Any) -> None:
        """Add (or replace) adapter ``adapter_name`` on this layer."""
        width = self.out_features
        size = config.size_for(width)
        device = _device_of(self.get_base_layer())
        self.bottleneck_down[adapter_name] = nn.Linear(width, size, bias=True, device=device)
        self.bottleneck_up[adapter_name] = nn.Linear(size, width, bias=True, device=device)
        p = float(config.adapter_dropout)
        self.bottleneck_dropout[adapter_name] = nn.Dropout(p) if p > 0 else nn.Identity()
        self.bottleneck_act[adapter_name] = _ACTIVATIONS[config.non_linearity]()
        self.bottleneck_size[adapter_name] = size
        self.bottleneck_scaling[adapter_name] = float(config.scaling)
        self.bottleneck_residual[adapter_name] = bool(config.residual)
        self.reset_bottleneck_parameters(adapter_name, config.init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def reset_bottleneck_parameters(self, adapter_name: str, init_weights: bool = True) -> None:
        """Down-projection: PyTorch's default (Kaiming-uniform) weights, zero bias. Up-projection:
        all zeros when ``init_weights`` (the adapter adds exactly nothing until trained, and
        gradients still reach ``up`` because ``down`` is not zero), else PyTorch's default."""
        down, up = self.bottleneck_down[adapter_name], self.bottleneck_up[adapter_name]
        if down.weight.device.type == "meta":
            return  # a skeleton or an empty-weights load: values come later, if at all
        with torch.no_grad():
            down.reset_parameters()
            nn.init.zeros_(down.bias)
            if init_weights:
                nn.init.zeros_(up.weight)
                nn.init.zeros_(up.bias)
            else:
                up.reset_parameters()

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise ValueError(MERGE_MESSAGE)

    def unmerge(self) -> None:
        """Nothing is ever merged, so there is nothing to undo."""


class Linear(nn.Module, BottleneckLayer):
    """A Linear / Conv1D / bitsandbytes 4- or 8-bit Linear followed by bottleneck adapters.

    Several active adapters are applied one after the other (stacked), each to the
    output of the previous one, in the order of ``active_adapters``.
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig, **kwargs: Any) -> None:
        super().__init__()
        BottleneckLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down = self.bottleneck_down[name]
            h = self._cast_input_dtype(result, down.weight.dtype)
            z = self.bottleneck_up[name](self.bottleneck_act[name](down(self.bottleneck_dropout[name](h))))
            scaling = self.bottleneck_scaling[name]
            if scaling != 1.0:
                z = z * scaling
            z = z.to(result.dtype)
            result = result + z if self.bottleneck_residual[name] else z
        return result

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


def _device_of(layer: nn.Module) -> torch.device | None:
    """Where the wrapped layer's weight lives, so adapter weights are created there directly
    (on a meta-device skeleton they then cost no memory at all)."""
    weight = getattr(layer, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    for p in layer.parameters():
        return p.device
    return None
