"""bitsandbytes 4/8-bit models: the QLoRA recipe, a CPU training fix, dequantized sizes.

Why here: QLoRA's settings everyone copies (NF4, double quantization, a compute dtype the
device supports) and the one bitsandbytes behaviour that silently breaks training on CPU
are facts about quantized models, used by loading, attaching, training and merging.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import PeftMagicError
from .properties import is_quantized_param, param_numel


def bnb_config(bits: int, device: str) -> Any:
    """The QLoRA recipe: NF4 with double quantization, compute in the device's best dtype.

    On CPU the compute dtype is fp32: bitsandbytes' CPU kernels are exact there and
    bf16 is emulated (slow) on CPUs without AVX512-BF16.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PeftMagicError(f"{bits}-bit loading needs bitsandbytes, which is not installed",
                             "pip install bitsandbytes")
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.float32
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def disable_cpu_4bit_repacking(model: Any) -> int:
    """Keep bitsandbytes 4-bit layers in their trainable layout on CPU; returns how many were fixed.

    On CPUs with AVX512-BF16, bitsandbytes repacks a ``Linear4bit`` weight into an
    inference-only layout the first time it runs in eval mode without gradients (a
    generate call, an evaluation). Training afterwards backpropagates through an op
    with no autograd kernel: the gradients of the adapter come out wrong (we measured
    errors as large as the gradients themselves). We switch the repacking off for the
    layers of models we train, and undo it where it already happened (the undo is
    slightly lossy — about 0.3% on the dequantized weights — because the double-
    quantization state is re-quantized, so preventing it at load time is the real fix).
    """
    fixed = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        qs = getattr(weight, "quant_state", None)
        if qs is not None and getattr(qs, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, qs)
            if hasattr(module, "quant_state"):
                module.quant_state = weight.quant_state
            fixed += 1
    return fixed


def dequantized_bytes(model: Any) -> int:
    """Bytes the whole model takes once dequantized (what merging into full precision needs)."""
    import torch

    dtype = getattr(model, "dtype", torch.float32)
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    return sum(param_numel(p) * (size if is_quantized_param(p) else p.element_size()) for p in model.parameters())
