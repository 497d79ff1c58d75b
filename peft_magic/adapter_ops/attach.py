"""Attach a PEFT method to a model: safely, idempotently, and with a clear summary.

The contract users rely on:

* **Re-running a cell is safe.** The same adapter name with the same settings is a no-op
  that says so; different settings replace that adapter and report what changed
  (``r: 8 → 16``). The model is never wrapped twice: passing the base model after it was
  wrapped finds the existing ``PeftModel``.
* **A failed attach changes nothing.** A first adapter is attached for real under a
  structural snapshot (``rollback``): if peft fails halfway (bad targets, ``r=0``, a
  method without 4-bit support), every module, parameter, hook, flag and dtype is put
  back. That costs ~2 ms, where a dry run on a meta-device skeleton cost as much as the
  attach itself (2.2× a raw ``get_peft_model``; now ≤ 1.1×, ``bench/bench_speed.py``).
  Next to existing adapters peft's partial ``add_adapter`` also changes the adapters
  already there (their layers gain entries), so those settings are still validated on
  a skeleton first (``config.validate``), and a replaced adapter is put back with its
  weights on failure.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

from .. import events, peft_view, stack
from ..errors import PeftMagicError, first_line
from ..fmt import fmt_value
from ..model.properties import count_params, infer_task, quantization_of, require_model
from ..peft_methods.behaviour import behaviour
from ..peft_methods.coerce import normalize_settings
from ..peft_methods.config import attach_error, build_config, failure_hint, require_trainable, validate
from ..peft_methods.discovery import MethodSpec, resolve_method
from ..rendering import HtmlRepr
from ..state import AdapterRecord, ModelState, is_peft_model, state_for, unwrap
from ..tasks.names import normalize_task
from .announce import emit_adapter
from .find import check_adapter_name
from .rollback import prepare_kbit, restore, restore_grads, snapshot
from .summary import ModelSummary, show


class _Unset:
    def __repr__(self) -> str:
        return "default"


UNSET = _Unset()  # a setting left at its default, in a diff


def _fmt(v: Any) -> str:
    return "default" if v is UNSET else fmt_value(v)


@dataclass
class AttachResult(HtmlRepr):
    """What ``attach`` did. ``model`` is the PeftModel to use from now on."""

    model: Any
    status: str  # "attached" | "added" | "replaced" | "unchanged"
    adapter: str
    method: str
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, old, new)
    summary: ModelSummary | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        if self.status == "unchanged":
            return (f"{self.method} adapter '{self.adapter}' is already attached with these settings — "
                    "nothing changed")
        if self.status == "replaced":
            diff = ", ".join(f"{k}: {_fmt(a)} → {_fmt(b)}" for k, a, b in self.changes) or "settings changed"
            return f"replaced {self.method} adapter '{self.adapter}' ({diff})"
        verb = "attached" if self.status == "attached" else "added"
        return f"{verb} {self.method} adapter '{self.adapter}'"

    def __repr__(self) -> str:
        lines = [self.headline]
        if self.summary is not None and self.status != "unchanged":
            s = self.summary
            lines.append(f"trainable params: {s.trainable:,} / {s.total:,} ({s.percent:.4f}%)")
            for a in s.adapters:
                if a.name == self.adapter:
                    if a.targets:
                        lines.append(f"targeted {len(a.targets)} modules: {a.targets_grouped}")
                    else:
                        lines.append("targeted modules: none (virtual tokens / prompt encoder)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- attach


@dataclass
class _Request:
    """An attach request, resolved: the method, its settings, the model and its state."""

    spec: MethodSpec
    settings: dict[str, Any]
    name: str
    base: Any
    st: ModelState
    peft_model: Any
    task: str | None
    quantized: bool

    @property
    def record(self) -> AdapterRecord:
        return AdapterRecord(name=self.name, method=self.spec.requested, peft_type=self.spec.info.peft_type,
                             settings=self.settings, task=self.task)


def _resolve(model: Any, method: str, name: str, task: str | None, settings: dict[str, Any]) -> _Request:
    """Check the request and find the model's state; one line for anything wrong."""
    stack.ensure()
    require_model(model)
    spec = resolve_method(method)
    settings = normalize_settings(spec, settings)
    check_adapter_name(name)
    base = unwrap(model)
    st = state_for(base, create=True)
    peft_model = model if is_peft_model(model) else st.peft_model
    if peft_model is not None and unwrap(peft_model) is not base:
        peft_model = None
    task_type = normalize_task(task) if task else infer_task(peft_model or base)
    if spec.info.is_prompt_learning and task_type is None:
        raise PeftMagicError(f"{spec.requested} needs a task type and none could be inferred from "
                             f"{type(base).__name__}", "pass --task causal-lm (or seq-cls, seq2seq, …)")
    quantized = quantization_of(base) is not None
    if spec.needs_quantized and not quantized:
        raise PeftMagicError(
            f"{spec.requested} needs a model loaded in 4-bit, and this one is not quantized",
            "load it with %peft load PATH --4bit (or use %peft lora on a 16/32-bit model)",
        )
    return _Request(spec, settings, name, base, st, peft_model, task_type, quantized)


def attach(model: Any, method: str, *, name: str = "default", task: str | None = None,
           **settings: Any) -> AttachResult:
    """Attach ``method`` (any peft method or alias) to ``model`` as adapter ``name``.

    ``settings`` are fields of the method's config (aliases like ``alpha`` allowed).
    Returns an :class:`AttachResult`; use ``result.model`` (the PeftModel) from then on.
    Raises :class:`PeftMagicError` and leaves the model exactly as it was on failure.
    """
    req = _resolve(model, method, name, task, settings)
    pm, st = req.peft_model, req.st
    if pm is not None and name in pm.peft_config:  # re-run of the same cell: nothing to do
        old = st.adapters.get(name)
        if old is not None and old.same_request(req.record):
            return AttachResult(pm, "unchanged", name, req.spec.requested, summary=show(pm))

    config = build_config(req.spec, req.settings, req.task, req.base)
    if pm is not None:  # a first adapter needs no dry run: its rollback is structural (see above)
        validate(req.spec, config, req.base, name, req.quantized)
    notes: list[str] = []
    changes: list[tuple[str, Any, Any]] = []
    if pm is None:
        new_model, status = _attach_fresh(req, config, req.base, notes), "attached"
    elif name in pm.peft_config:
        changes = _diff(st.adapters.get(name), req.record)
        new_model, status = _replace(req, config, notes), "replaced"
    else:
        new_model, status = _add(req, config, pm), "added"

    st.adapters[name] = req.record
    st.set_peft(new_model)
    summary = show(new_model)
    notes += _unmatched_target_notes(new_model, req)
    emit_adapter(st, new_model, name, req.spec.requested, status, counts=(summary.trainable, summary.total))
    return AttachResult(new_model, status, name, req.spec.requested, changes=changes, summary=summary, notes=notes)


def _unmatched_target_notes(new_model: Any, req: _Request) -> list[str]:
    """Names in an explicit target list that matched no layer (peft only fails when none do)."""
    targets = req.settings.get("target_modules")
    if not isinstance(targets, list):
        return []
    from .targets import explore

    with contextlib.suppress(Exception):
        rep = explore(new_model, targets, req.spec.info.peft_type)
        return [w for w in rep.warnings if "matches no layer" in w]
    return []


def _attach_fresh(req: _Request, config: Any, base: Any, notes: list[str]) -> Any:
    from peft import get_peft_model

    snap = snapshot(base)
    prepared_before = req.st.kbit_prepared
    model_config = getattr(base, "config", None)
    use_cache = getattr(model_config, "use_cache", None)
    try:
        if req.quantized:
            prepare_kbit(base, req.st)
            notes.append("prepared the quantized model for k-bit training (gradient checkpointing on)")
        if use_cache and behaviour(req.spec.info.peft_type).cache_off:
            model_config.use_cache = False
            notes.append(f"turned the model's cache off (config.use_cache = False): {req.spec.requested} "
                         "refuses a model that caches")
        with stack.quiet():
            peft_model = get_peft_model(base, config, adapter_name=req.name)
        require_trainable(req.spec, peft_model)
        return peft_model
    except Exception as e:
        restore(base, snap)
        if use_cache is not None:
            model_config.use_cache = use_cache
        req.st.kbit_prepared = prepared_before and not req.quantized
        if isinstance(e, PeftMagicError):
            raise
        raise attach_error(req.spec, e, req.quantized) from None


def _check_compatible(req: _Request, peft_model: Any) -> None:
    others = {n: c for n, c in peft_view.configs(peft_model).items() if n != req.name}
    if others and req.spec.info.peft_type not in {peft_view.peft_type(c) for c in others.values()}:
        existing = ", ".join(f"'{n}' ({peft_view.peft_type(c).lower()})" for n, c in others.items())
        raise PeftMagicError(
            f"cannot add a {req.spec.requested} adapter next to {existing}: peft keeps one method per model",
            "%peft delete the other adapters first, or use the same method with --name",
        )


def _add(req: _Request, config: Any, peft_model: Any) -> Any:
    _check_compatible(req, peft_model)
    name = req.name
    before = set(peft_model.peft_config)
    active_before = peft_model.active_adapter
    snap = snapshot(req.base)
    try:
        with stack.quiet():
            peft_model.add_adapter(name, config)
            peft_model.set_adapter(name)
    except Exception as e:
        with contextlib.suppress(Exception), stack.quiet():
            if name in peft_model.peft_config and name not in before:
                peft_model.delete_adapter(name)
        with contextlib.suppress(Exception), stack.quiet():
            peft_model.set_adapter(active_before)
        restore_grads(req.base, snap)
        msg = first_line(e)
        raise PeftMagicError(f"cannot add {req.spec.requested} adapter '{name}': {msg}",
                             failure_hint(req.spec, msg, req.quantized)) from None
    return peft_model


def _diff(old: AdapterRecord | None, new: AdapterRecord) -> list[tuple[str, Any, Any]]:
    if old is None:
        return [("settings", "unknown", "new")]
    changes = []
    if old.method != new.method:
        changes.append(("method", old.method, new.method))
    for k in sorted(set(old.settings) | set(new.settings)):
        a, b = old.settings.get(k, UNSET), new.settings.get(k, UNSET)
        if a != b:
            changes.append((k, a, b))
    if old.task != new.task:
        changes.append(("task", old.task, new.task))
    return changes


def _replace(req: _Request, config: Any, notes: list[str]) -> Any:
    """Swap adapter ``name`` for a new config; on failure, put the old one back with its weights."""
    pm, name = req.peft_model, req.name
    old_config = copy.deepcopy(pm.peft_config[name])
    old_state = peft_view.adapter_state(pm, name)
    others = [n for n in pm.peft_config if n != name]
    active_before = pm.active_adapter

    if peft_view.peft_type(old_config) == req.spec.info.peft_type and others:
        # Same method among several adapters: delete and re-add under the same name.
        with stack.quiet():
            pm.delete_adapter(name)
        try:
            _add(req, config, pm)
        except PeftMagicError:
            with stack.quiet():
                pm.add_adapter(name, old_config)
            peft_view.set_adapter_state(pm, old_state, name)
            with stack.quiet():
                pm.set_adapter(active_before if active_before in pm.peft_config else name)
            raise
        return pm

    if others:
        _check_compatible(req, pm)
    # The only adapter (or a different method): take the wrapper off and attach afresh.
    base_again = peft_view.unwrap_all(pm)
    try:
        return _attach_fresh(req, config, base_again, notes)
    except PeftMagicError:
        restored = peft_view.reattach(base_again, old_config, old_state, name)
        req.st.set_peft(restored)
        raise


def detach(model: Any) -> Any:
    """Remove all adapters and return the base model (the wrapper is discarded)."""
    stack.ensure()
    st0 = state_for(model)
    peft_model = model if is_peft_model(model) else (st0.peft_model if st0 else None)
    if peft_model is None:
        raise PeftMagicError("this model has no adapters to detach")
    st = state_for(peft_model, create=True)
    base = peft_view.unwrap_all(peft_model)
    for p in base.parameters():  # back to how from_pretrained returns it: everything trainable
        if p.dtype.is_floating_point:
            p.requires_grad_(True)
    st.adapters.clear()
    st.set_peft(None)
    events.emit("adapter", model_id=st.model_id, adapter=None, method=None, action="detached",
                trainable=0, total=count_params(base))
    return base
