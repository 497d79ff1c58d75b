"""A full-precision twin of a 4/8-bit base, for merging an adapter without rounding.

Why a twin and not the base itself: ``%peft merge --dequantize`` dequantizes the user's
model in place (the user asked to change it), but an export must leave the notebook's
model exactly as it was — still 4-bit, adapter still attached. So the base's weights are
read (dequantized with bitsandbytes through transformers' helper) into a plain model of
the same class built on the meta device, in host memory, and the adapter is put on that
twin with its own config and tensors. Merging there is the plain full-precision merge:
nothing is rounded back to 4 bits (merging into rounded weights loses part of what the
adapter learned). The cost is the whole model in full precision in host memory, checked
before anything starts.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import peft_view
from ..errors import PeftMagicError
from ..fmt import fmt_bytes
from ..model.properties import main_dtype
from ..model.quantized import dequantized_bytes


def host_available() -> int | None:
    """Free host memory in bytes (psutil), ``None`` where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def check_host_memory(base: Any, bits: int) -> int:
    """Bytes the twin needs; one line when the host has less free."""
    need = dequantized_bytes(base)
    avail = host_available()
    if avail is not None and need > avail:
        raise PeftMagicError(f"exporting a {bits}-bit model dequantizes it first, which needs about "
                             f"{fmt_bytes(need)} of host memory, and {fmt_bytes(avail)} is free: nothing was written",
                             "free memory (del other models, restart the kernel), or save the adapter itself: "
                             "%peft save DIR")
    return need


def _source(base: Any, name: str) -> Any:
    """The module at ``name`` in ``base``, looking through peft's wrappers at every step."""
    module = base
    for part in name.split(".") if name else []:
        module = peft_view.original_layer(getattr(module, part))
    return peft_view.original_layer(module)


def _full_precision(module: Any, tensor: Any, dtype: Any) -> Any:
    from transformers.integrations.bitsandbytes import dequantize_bnb_weight

    if tensor.__class__.__name__ in ("Params4bit", "Int8Params"):
        out = dequantize_bnb_weight(tensor, getattr(module, "state", None))
        return out.detach().to(device="cpu", dtype=dtype).contiguous()
    return tensor.detach().to("cpu").clone()


def dequantized_twin(base: Any) -> Any:
    """A plain model of ``base``'s class with ``base``'s weights in full precision, on CPU.

    ``base`` is the (4/8-bit) base model, possibly with peft's layers injected; the twin
    has none. Non-quantized weights are copied as they are; quantized ones come out in
    the model's compute dtype.
    """
    import accelerate
    import torch

    dtype = getattr(torch, main_dtype(base))
    config = copy.deepcopy(base.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    with accelerate.init_empty_weights():
        twin = type(base)._from_config(config, dtype=dtype)
    state: dict[str, Any] = {}
    for name, module in twin.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
        if not own:
            continue
        src = _source(base, name)
        for pname in own:
            tensor = getattr(src, pname, None)
            if tensor is None:
                raise PeftMagicError(f"could not find {name}.{pname} in the quantized model to dequantize it")
            state[f"{name}.{pname}" if name else pname] = _full_precision(src, tensor, dtype)
    twin.load_state_dict(state, strict=False, assign=True)
    twin.tie_weights()
    empty = [n for n, t in list(twin.named_parameters()) + list(twin.named_buffers()) if t.is_meta]
    if empty:
        raise PeftMagicError(f"could not rebuild {empty[0]} of the quantized model in full precision: nothing was "
                             "written", "save the adapter itself: %peft save DIR")
    if getattr(base, "generation_config", None) is not None:
        twin.generation_config = copy.deepcopy(base.generation_config)
    twin.eval()
    return twin
