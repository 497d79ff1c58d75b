"""``%peft merge``: the active adapter folded into the weights, refused before it can fail.

Methods without a merge (prompt-based, bottleneck, poly, …) are refused up front; on a
4/8-bit base the merge would round the merged weights back to 4 bits, so the choice —
full-precision dequantize-then-merge, with the host memory it takes, or accepting the
loss — is the user's.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from .. import peft_view, stack
from ..errors import PeftMagicError, first_line
from ..fmt import fmt_bytes
from ..model.properties import quantized_bits
from ..model.quantized import dequantized_bytes
from ..peft_methods.discovery import method_info
from ..state import state_for
from .announce import emit_adapter
from .find import method_name, peft_or_fail
from .results import LifecycleResult


def _host_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def _refuse_unmergeable(pm: Any, st: Any, active: list[str]) -> None:
    for name, cfg in pm.peft_config.items():
        info = method_info(peft_view.peft_type(cfg))
        if name in active and (info is None or not info.can_merge):
            raise PeftMagicError(f"{method_name(cfg, st, name)} adapters cannot be merged into the weights "
                                 f"('{name}' is one): nothing was changed",
                                 "keep it as an adapter; %peft save DIR saves it")


def _check_quantized(bits: int | None, need: int, dequantize: bool, keep_quantized: bool) -> None:
    avail = _host_available()
    if bits and not (dequantize or keep_quantized):
        free = f", {fmt_bytes(avail)} free" if avail else ""
        raise PeftMagicError(
            f"merging into a {bits}-bit base rounds the merged weights back to {bits} bits and loses part of "
            "what the adapter learned; nothing was changed",
            f"%peft merge --dequantize merges into full-precision weights (needs about {fmt_bytes(need)} of host "
            f"memory{free}), or %peft merge --keep-{bits}bit accepts the loss")
    if bits and dequantize and avail is not None and need > avail:
        raise PeftMagicError(f"dequantizing needs about {fmt_bytes(need)} of host memory and only "
                             f"{fmt_bytes(avail)} is free; nothing was changed",
                             f"free memory, or %peft merge --keep-{bits}bit")


def merge(model: Any, *, dequantize: bool = False, keep_quantized: bool = False) -> LifecycleResult:
    """Merge the active adapter(s) into the base weights and return the plain base model.

    The merged model computes what the model with its adapter computed (within floating
    point tolerance) with no adapter overhead; the adapters are gone from it afterwards
    (save them first if you want them back). On a 4/8-bit base, choose
    ``dequantize=True`` (merge into full-precision weights; needs the whole model in host
    memory) or ``keep_quantized=True`` (round the merged weights back to 4/8 bits).
    """
    st, pm = peft_or_fail(model, "merge")
    if st.adapters_off:
        raise PeftMagicError("adapters are switched off, so there is nothing active to merge",
                             "%peft on first (or %peft use NAME)")
    active = peft_view.active_adapters(pm)
    _refuse_unmergeable(pm, st, active)
    base = pm.get_base_model()
    bits = quantized_bits(base)
    need = dequantized_bytes(base) if bits else 0
    _check_quantized(bits, need, dequantize, keep_quantized)
    dropped = [n for n in pm.peft_config if n not in active]
    notes: list[str] = []
    methods = {n: method_name(pm.peft_config[n], st, n) for n in active}
    if bits and dequantize:
        merged = _merge_dequantized(pm, active, notes)
        notes.append(f"dequantized the {bits}-bit base to {str(merged.dtype).replace('torch.', '')} "
                     f"({fmt_bytes(need)}) before merging: no rounding")
    else:
        try:
            with stack.quiet():
                merged = pm.merge_and_unload(adapter_names=active)
        except Exception as e:
            raise PeftMagicError(f"merge failed: {first_line(e)}") from None
        if bits:
            notes.append(f"merged into the {bits}-bit weights: they were rounded back to {bits} bits, "
                         "so outputs differ slightly from the unmerged adapter")
    merged.__dict__.pop("peft_config", None)
    st2 = state_for(merged, create=True)
    st2.merged += [n for n in active if n not in st2.merged]
    st2.adapters.clear()
    st2.set_peft(None)
    st2.adapters_off = False
    if dropped:
        notes.append("inactive adapters are gone with the wrapper: " + ", ".join(f"'{n}'" for n in dropped))
    for n in active:
        emit_adapter(st2, merged, n, methods[n], "merged")
    what = ", ".join(f"'{n}' ({methods[n]})" for n in active)
    return LifecycleResult(merged, "merged", active[0] if active else None,
                           f"merged {what} into the weights; the model is a plain {type(merged).__name__} now",
                           notes)


def _merge_dequantized(pm: Any, active: list[str], notes: list[str]) -> Any:
    """Take the adapters off (without merging), dequantize the base, put them back, merge."""
    name = active[0]
    if len(active) > 1:
        notes.append("only the first active adapter is merged on the dequantize path")
    cfg = copy.deepcopy(pm.peft_config[name])
    sd = peft_view.adapter_state(pm, name)
    base = peft_view.unwrap_all(pm)
    try:
        with stack.quiet():
            base.dequantize()
    except Exception as e:
        peft_view.reattach(base, cfg, sd, name)  # put the adapter back as it was
        raise PeftMagicError(f"could not dequantize the base: {first_line(e)}; nothing was merged") from None
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if getattr(base, attr, False):
            with contextlib.suppress(Exception):
                setattr(base, attr, False)
    base.__dict__.pop("hf_quantizer", None)
    again = peft_view.reattach(base, cfg, sd, name)
    with stack.quiet():
        merged = again.merge_and_unload()
    state_for(merged, create=True).bits = None
    return merged
