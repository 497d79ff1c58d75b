"""``%peft adapters``: every adapter of a model — one listing, also used by ``%peft show``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import peft_view, stack
from ..fmt import group_names
from ..model.properties import require_model
from ..peft_methods.behaviour import behaviour
from ..rendering import HtmlRepr
from ..state import ModelState, peft_model_for, state_for, unwrap
from .find import method_name


@dataclass
class AdapterInfo:
    """One adapter on a model."""

    name: str
    method: str  # as requested ("qlora"), else the friendliest name of its peft type
    peft_type: str
    trainable: int  # parameters that belong to this adapter
    active: bool
    requires_grad: bool = False  # whether they would be trained now
    settings: dict[str, Any] = field(default_factory=dict)  # explicit settings
    targets: list[str] = field(default_factory=list)  # full names of adapted modules
    merged: bool = False

    @property
    def targets_grouped(self) -> str:
        return group_names(self.targets)


def adapter_infos(pm: Any, st: ModelState | None, *, targets: bool = True,
                  counts: dict[str, tuple[int, bool]] | None = None) -> list[AdapterInfo]:
    """The adapters of PeftModel ``pm`` (none for ``None``), in the order peft keeps them
    (``counts``: each adapter's (parameters, requires_grad) when the caller has them)."""
    if pm is None:
        return []
    active = set(peft_view.active_adapters(pm))
    cfgs = peft_view.configs(pm)
    counts = counts if counts is not None else peft_view.adapters_params(pm, list(cfgs))  # one pass for all
    layers = peft_view.adapters_targets(pm, list(cfgs)) if targets else {}
    out = []
    for name, cfg in cfgs.items():
        n, grad = counts[name]
        targets = layers.get(name, [])
        if behaviour(peft_view.peft_type(cfg)).gated:  # its own part is the gate; its layers are its experts'
            n, grad = peft_view.xlora_gate_params(pm)
            targets = sorted({t for other, ts in layers.items() if other != name for t in ts})
        rec = st.adapters.get(name) if st is not None else None
        out.append(AdapterInfo(name=name, method=method_name(cfg, st, name), peft_type=peft_view.peft_type(cfg),
                               trainable=n, active=name in active, requires_grad=grad,
                               settings=dict(rec.settings) if rec else {}, targets=targets))
    return out


@dataclass
class AdaptersTable(HtmlRepr):
    """Every adapter of a model: name, method, parameters, active, merged."""

    rows: list[AdapterInfo]
    adapters_off: bool
    model_class: str

    @property
    def active(self) -> list[str]:
        return [r.name for r in self.rows if r.active]

    def __repr__(self) -> str:
        if not self.rows:
            return f"{self.model_class}: no adapters — attach one (%peft lora) or %peft load-adapter DIR"
        head = f"{self.model_class}: {len(self.rows)} adapter(s)" + (" — all switched off (%peft on)"
                                                                  if self.adapters_off else "")
        width = max([4] + [len(r.name) for r in self.rows])
        lines = [head, f"  {'name'.ljust(width)}  {'method':<10} {'params':>12}  active  merged"]
        for r in self.rows:
            active = "yes" if r.active and not self.adapters_off else ("off" if r.active else "")
            params = "–" if r.merged else f"{r.trainable:,}"
            lines.append(f"  {r.name.ljust(width)}  {r.method:<10} {params:>12}  {active:<6}  "
                         f"{'yes' if r.merged else ''}".rstrip())
        return "\n".join(lines)


def adapters(model: Any) -> AdaptersTable:
    """Every adapter on ``model``: name, method, trainable parameters, active, merged."""
    stack.ensure()
    require_model(model)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    rows = adapter_infos(pm if pm is not None and peft_view.configs(pm) else None, st, targets=False)
    rows += [AdapterInfo(name=name, method="merged", peft_type="", trainable=0, active=False, merged=True)
             for name in st.merged]
    return AdaptersTable(rows, st.adapters_off, type(unwrap(model)).__name__)
