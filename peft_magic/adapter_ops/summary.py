"""``%peft show``: a model's PEFT state as a data object with text and HTML views.

Why a data object: the same facts feed the magic's output, the panel, the status bar
and user code (``info = %peft show``; ``info.trainable``). Counting is peft's own
(``get_nb_trainable_parameters`` knows that a 4-bit weight holds two weights per
element), so our numbers match what peft prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import peft_view
from ..fmt import fmt_bytes
from ..memory import MemoryReading, device_of, reading
from ..model.properties import footprint, infer_task, param_numel, quantization_of
from ..rendering import HtmlRepr
from ..state import is_peft_model, state_for, unwrap
from .listing import AdapterInfo, adapter_infos

__all__ = ["AdapterInfo", "ModelSummary", "show"]


@dataclass
class ModelSummary(HtmlRepr):
    """The PEFT state of one model."""

    model_class: str
    model_type: str
    task: str | None
    adapters: list[AdapterInfo]
    trainable: int
    total: int
    device: str
    dtype: str
    quantization: str | None
    footprint: int
    memory: MemoryReading
    adapters_off: bool = False  # adapters switched off (%peft off)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    @property
    def active(self) -> list[str]:
        return [a.name for a in self.adapters if a.active]

    def lines(self) -> list[str]:
        quant = f", {self.quantization}" if self.quantization else ""
        out = [f"{self.model_class} ({self.model_type}{quant}, {self.dtype}, {self.device}, "
               f"weights {fmt_bytes(self.footprint)})"]
        out.append(f"trainable params: {self.trainable:,} / {self.total:,} ({self.percent:.4f}%)")
        if not self.adapters:
            out.append("no adapters — attach one with %peft lora (or any method in %peft methods)")
        for a in self.adapters:
            flag = "active" if a.active and not self.adapters_off else ("off" if self.adapters_off else "inactive")
            settings = ", ".join(f"{k}={v!r}" for k, v in a.settings.items())
            tgt = f" · {len(a.targets)} modules: {a.targets_grouped}" if a.targets else ""
            out.append(f"  [{flag}] {a.name}: {a.method}" + (f" ({settings})" if settings else "")
                       + f" · {a.trainable:,} params{tgt}" + (" · merged" if a.merged else ""))
        out.append(f"memory: {self.memory.short()}")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())


def _walk(root: Any, base: Any) -> tuple[list[tuple[str, Any]], int, str]:
    """One walk of the module tree (each walk costs as much as the rest of the summary):
    ``named_parameters()``'s list (same names, order and de-duplication), the bytes of
    the buffers under ``base`` (what ``get_memory_footprint`` adds to the weights) and the
    name prefix of ``base``'s parameters — found on the way, because where peft puts the
    base differs by method (``base_model.model.``, X-LoRA's ``base_model.lora_model.model.``)."""
    named: list[tuple[str, Any]] = []
    seen: set[int] = set()
    buffer_bytes = 0
    base_prefix: str | None = None
    for mname, m in root.named_modules():  # pre-order: the base comes before its children
        prefix = mname + "." if mname else ""
        if base_prefix is None and m is base:
            base_prefix = prefix
        for pname, p in m._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                named.append((prefix + pname, p))
        if m._buffers and base_prefix is not None and prefix.startswith(base_prefix):
            for b in m._buffers.values():
                if b is not None and id(b) not in seen:
                    seen.add(id(b))
                    buffer_bytes += b.nelement() * b.element_size()
    return named, buffer_bytes, base_prefix if base_prefix is not None else ""


def _weights(params: Any, buffer_bytes: int) -> tuple[str, int]:
    """(the dtype most floating-point weights have, as a short name; bytes of the weights
    and buffers, what ``footprint`` counts) with per-dtype tallies: reading a tensor's
    attributes is the cost here, so each is read once."""
    by_dtype: dict[Any, list[int]] = {}  # dtype → [tensors, elements]
    for p in params:
        tally = by_dtype.setdefault(p.dtype, [0, 0])
        tally[0] += 1
        tally[1] += p.nelement()
    size = sum(n * dt.itemsize for dt, (_, n) in by_dtype.items()) + buffer_bytes
    floats = {dt: c for dt, (c, _) in by_dtype.items() if dt.is_floating_point}
    dtype = max(floats, key=floats.get) if floats else next(iter(by_dtype), None)
    return (str(dtype).replace("torch.", "") if dtype is not None else "?"), size


def show(model: Any) -> ModelSummary:
    """Collect the PEFT state of ``model`` (a plain model or a PeftModel)."""
    base = unwrap(model)
    st = state_for(model)
    peft_model = model if is_peft_model(model) else (st.peft_model if st else None)
    counts = None
    if peft_model is not None:  # one walk over the modules for the counts, per adapter and in all
        # the base model's own parameters (a prompt encoder's or a tuner's extra modules are not)
        named, buffer_bytes, prefix = _walk(peft_model, base)
        trainable, total, counts = peft_view.parameter_counts(named, list(peft_view.configs(peft_model)))
        params = (p for n, p in named if n.startswith(prefix))
    else:
        named, buffer_bytes, _ = _walk(base, base)
        trainable = sum(param_numel(p) for _, p in named if p.requires_grad)
        total = sum(param_numel(p) for _, p in named)
        params = (p for _, p in named)
    dev = device_of(base)
    cfg = getattr(base, "config", None)
    dtype, size = _weights(params, buffer_bytes)
    return ModelSummary(
        model_class=type(base).__name__, model_type=getattr(cfg, "model_type", "custom") if cfg else "custom",
        task=infer_task(peft_model or base), adapters=adapter_infos(peft_model, st, counts=counts),
        trainable=trainable,
        total=total, device=dev, dtype=dtype, quantization=quantization_of(base),
        footprint=size if hasattr(base, "get_memory_footprint") else footprint(base), memory=reading(dev),
        adapters_off=bool(peft_model is not None and st and st.adapters_off),
    )
