"""``%peft show``: a model's PEFT state as a data object with text and HTML views.

Why a data object: the same facts feed the magic's output, the panel, the status bar
and user code (``info = %peft show``; ``info.trainable``). Counting is peft's own
(``get_nb_trainable_parameters`` knows that a 4-bit ``Params4bit`` holds two weights per
element), so our numbers match what peft prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..memory import MemoryReading, device_of, fmt_bytes, reading
from ..state import is_peft_model, state_for, unwrap


@dataclass
class AdapterInfo:
    """One adapter on a model."""

    name: str
    method: str  # as requested ("qlora") or peft's type in lower case when unknown
    peft_type: str
    trainable: int  # parameters that belong to this adapter
    active: bool
    settings: dict[str, Any] = field(default_factory=dict)  # explicit settings
    targets: list[str] = field(default_factory=list)  # full names of adapted modules
    merged: bool = False

    @property
    def targets_grouped(self) -> str:
        from .targets import group_names

        return group_names(self.targets)


@dataclass
class ModelSummary:
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
    disabled: bool = False  # adapters switched off (%peft off)

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
            flag = "active" if a.active and not self.disabled else ("off" if self.disabled else "inactive")
            settings = ", ".join(f"{k}={v!r}" for k, v in a.settings.items())
            tgt = f" · {len(a.targets)} modules: {a.targets_grouped}" if a.targets else ""
            out.append(f"  [{flag}] {a.name}: {a.method}" + (f" ({settings})" if settings else "")
                       + f" · {a.trainable:,} params{tgt}" + (" · merged" if a.merged else ""))
        out.append(f"memory: {self.memory.short()}")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        from ..display.html import summary_html

        return summary_html(self)


def _adapter_params(model: Any, name: str) -> int:
    """Parameters whose name carries the adapter's name as a component (peft's layout)."""
    total = 0
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        if name in parts:
            n = p.numel()
            if p.__class__.__name__ == "Params4bit":
                n *= 2
            total += n
    return total


def _adapter_targets(peft_model: Any, name: str) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    for mname, module in peft_model.named_modules():
        if isinstance(module, BaseTunerLayer):
            try:
                available = module._get_available_adapters() if hasattr(module, "_get_available_adapters") else set()
            except Exception:
                available = set()
            if name in available:
                out.append(mname)
    return out


def quantization_of(model: Any) -> str | None:
    base = unwrap(model)
    if getattr(base, "is_loaded_in_4bit", False):
        return "4-bit"
    if getattr(base, "is_loaded_in_8bit", False):
        return "8-bit"
    method = getattr(base, "quantization_method", None)
    return str(getattr(method, "value", method)) if method else None


def summarize(model: Any) -> ModelSummary:
    """Collect the PEFT state of ``model`` (a plain model or a PeftModel)."""
    from ..model.load import infer_task

    base = unwrap(model)
    st = state_for(model)
    peft_model = model if is_peft_model(model) else (st.peft_model if st else None)
    adapters: list[AdapterInfo] = []
    disabled = False
    if peft_model is not None:
        trainable, total = peft_model.get_nb_trainable_parameters()
        active = set(getattr(peft_model, "active_adapters", None) or [peft_model.active_adapter])
        for name, cfg in peft_model.peft_config.items():
            rec = st.adapters.get(name) if st else None
            pt = str(getattr(cfg.peft_type, "value", cfg.peft_type))
            adapters.append(AdapterInfo(
                name=name, method=rec.method if rec else pt.lower(), peft_type=pt,
                trainable=_adapter_params(peft_model, name), active=name in active,
                settings=dict(rec.settings) if rec else {}, targets=_adapter_targets(peft_model, name),
            ))
        disabled = bool(st and getattr(st, "disabled", False))
    else:
        trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
        total = sum(p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1) for p in base.parameters())
    try:
        dtype = str(next(base.parameters()).dtype).replace("torch.", "")
        floats = [p.dtype for p in base.parameters() if p.dtype.is_floating_point]
        if floats:
            dtype = str(max(set(floats), key=floats.count)).replace("torch.", "")
    except StopIteration:
        dtype = "?"
    try:
        footprint = int(base.get_memory_footprint())
    except Exception:
        footprint = sum(p.numel() * p.element_size() for p in base.parameters())
    dev = device_of(base)
    cfg = getattr(base, "config", None)
    return ModelSummary(
        model_class=type(base).__name__, model_type=getattr(cfg, "model_type", "custom") if cfg else "custom",
        task=infer_task(peft_model or base), adapters=adapters, trainable=trainable, total=total, device=dev,
        dtype=dtype, quantization=quantization_of(base), footprint=footprint, memory=reading(dev), disabled=disabled,
    )
