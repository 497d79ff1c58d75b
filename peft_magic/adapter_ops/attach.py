"""Attach a PEFT method to a model: safely, idempotently, and with a clear summary.

The contract users rely on (DESIGN.md, "Behaviour users rely on"):

* **Re-running a cell is safe.** The same adapter name with the same settings is a no-op
  that says so; different settings replace that adapter and report what changed
  (``r: 8 → 16``). The model is never wrapped twice: passing the base model after it was
  wrapped finds the existing ``PeftModel``.
* **A failed attach changes nothing.** Settings are validated first by attaching the
  config to a meta-device skeleton of the model (milliseconds, no memory), so bad
  targets, ``r=0`` or an impossible combination are caught before the user's model is
  touched. If the real attach still fails (e.g. a method without 4-bit support), peft's
  partial injection is rolled back: tuner layers unwrapped, ``requires_grad`` flags and
  dtypes restored, the previous adapter re-attached with its weights.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import _heavy, events
from ..errors import PeftMagicError, first_line
from ..peft_methods.discovery import MethodSpec, adaptive_defaults, normalize_settings, normalize_task, resolve_method
from ..state import AdapterRecord, ModelState, is_peft_model, state_for, unwrap
from .summary import ModelSummary, quantization_of, summarize


@dataclass
class AttachResult:
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

    def _repr_html_(self) -> str:
        from ..display.html import attach_html

        return attach_html(self)


def _fmt(v: Any) -> str:
    return "default" if v is _UNSET else repr(v) if isinstance(v, str) else str(v)


class _Unset:
    def __repr__(self) -> str:
        return "default"


_UNSET = _Unset()


# ----------------------------------------------------------------------------- helpers


def _quiet():
    """peft warns about things we handle (e.g. 'modify a model for a second time')."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _check_model(model: Any) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise PeftMagicError(f"expected a torch model, got {type(model).__name__}",
                             "load one with %peft load smollm2 (or any transformers model)")


def _is_quantized(base: Any) -> bool:
    return quantization_of(base) is not None


def _snapshot(base: Any) -> dict[str, Any]:
    """What a failed attach might change on the base model, to put back."""
    return {
        "requires_grad": {n: p.requires_grad for n, p in base.named_parameters()},
        "dtype": {n: p.dtype for n, p in base.named_parameters()},
        "had_peft_config": "peft_config" in base.__dict__,
        "peft_config": base.__dict__.get("peft_config"),
        "gc": _checkpointing(base),
    }


def _checkpointing(base: Any) -> bool:
    """Whether gradient checkpointing is on (transformers renamed the attribute in 5.x)."""
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if attr in dir(type(base)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bool(getattr(base, attr, False))
    return False


def _strip_tuner_layers(base: Any) -> None:
    """Undo a partial injection: replace every peft wrapper in ``base`` by its original layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older peft
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper

    def parent_of(name: str):
        parent = base
        parts = name.split(".")
        for p in parts[:-1]:
            parent = getattr(parent, p)
        return parent, parts[-1]

    changed = True
    while changed:  # wrappers can nest; repeat until none is left
        changed = False
        for name, module in list(base.named_modules()):
            if not name:
                continue
            replacement = None
            if isinstance(module, BaseTunerLayer):
                replacement = module.get_base_layer()
            elif isinstance(module, AuxiliaryTrainingWrapper):
                replacement = getattr(module, "original_module", None)
            if replacement is not None:
                parent, child = parent_of(name)
                setattr(parent, child, replacement)
                changed = True
                break


def _restore(base: Any, snap: dict[str, Any]) -> None:
    _strip_tuner_layers(base)
    for n, p in base.named_parameters():
        if n in snap["dtype"] and p.dtype != snap["dtype"][n] and p.__class__.__name__ not in ("Params4bit", "Int8Params"):
            p.data = p.data.to(snap["dtype"][n])
        if n in snap["requires_grad"]:
            p.requires_grad_(snap["requires_grad"][n])
    if snap["had_peft_config"]:
        base.__dict__["peft_config"] = snap["peft_config"]
    else:
        base.__dict__.pop("peft_config", None)
    if not snap["gc"] and _checkpointing(base):
        with contextlib.suppress(Exception):
            base.gradient_checkpointing_disable()
    with contextlib.suppress(Exception):
        if hasattr(base, "disable_input_require_grads") and not snap["gc"]:
            base.disable_input_require_grads()


#: settings without which a method cannot do anything useful (peft's defaults are placeholders)
_REQUIRED: dict[str, dict[str, tuple[str, str]]] = {
    "TRAINABLE_TOKENS": {"token_indices": ("the ids of the tokens to train", "token_indices=[5,6,7]")},
    "XLORA": {"adapters": ("the already-trained LoRA adapters to mix", "adapters={'a': './lora_a'}")},
    "CPT": {"cpt_token_ids": ("the token ids of the in-context examples (CPT also needs data with an "
                              "input_type_mask)", "cpt_token_ids=[...]")},
}


def build_config(spec: MethodSpec, settings: dict[str, Any], task: str | None, base: Any) -> Any:
    """The peft config object for ``spec`` + normalised ``settings`` on ``base``.

    Adds the adaptive defaults (``method_registry.adaptive_defaults``) and the alias's
    preset; one-line errors for missing or invalid values. ``base`` is only read.
    """
    explicit = dict(settings)
    model_config = getattr(base, "config", None)
    layers = getattr(model_config, "num_hidden_layers", None)
    kwargs = {**adaptive_defaults(spec, model_config, explicit, layers), **spec.preset, **explicit}
    fields = spec.info.fields
    if task is not None and "task_type" not in kwargs:
        kwargs["task_type"] = task
    for key, (what, example) in _REQUIRED.get(spec.info.peft_type, {}).items():
        if not kwargs.get(key):
            raise PeftMagicError(f"{spec.requested} needs {key}: {what}", f"e.g. %peft {spec.requested} {example}")
    if spec.info.peft_type == "XLORA":
        if getattr(model_config, "use_cache", False):
            raise PeftMagicError("xlora needs the model's cache off", "set model.config.use_cache = False first")
        if "hidden_size" in fields and "hidden_size" not in kwargs and model_config is not None:
            kwargs["hidden_size"] = getattr(model_config, "hidden_size", None)
    try:
        with _quiet():
            return spec.info.config_cls(**kwargs)
    except ImportError as e:
        raise PeftMagicError(f"{spec.requested} needs a package that is not installed: {first_line(e)}") from None
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        raise PeftMagicError(f"invalid settings for {spec.requested}: {first_line(e)}") from None


def _failure_hint(spec: MethodSpec, msg: str, quantized: bool) -> str | None:
    low = msg.lower()
    if quantized and not spec.info.supports_quantized:
        return f"{spec.requested} has no bitsandbytes support in this peft; use lora/qlora, or load without --4bit"
    if "not found in the base model" in low or "no modules were targeted" in low or "no `target_modules`" in low:
        return "see %peft targets for the layer names of this model"
    if "is not supported" in low and "target module" in low:
        return f"{spec.requested} can only adapt some layer types; see %peft targets"
    return None


def _validate_on_skeleton(spec: MethodSpec, config: Any, base: Any, name: str) -> None:
    """Attach ``config`` to a meta-device skeleton of ``base``; raise one line if it fails."""
    from peft import get_peft_model

    from ..model.skeleton import can_skeleton, skeleton_of

    if not can_skeleton(base):
        return
    try:
        skel = skeleton_of(base)
    except Exception:
        return  # architectures that cannot be rebuilt empty: the guarded real attach still applies
    try:
        with _quiet():
            attached = get_peft_model(skel, copy.deepcopy(config), adapter_name=name)
    except Exception as e:
        msg = first_line(e)
        if "meta" in msg.lower() and "tensor" in msg.lower():
            return  # an init that needs real weights (PiSSA, OLoRA…): only the real attach can tell
        raise PeftMagicError(f"cannot attach {spec.requested}: {msg}",
                             _failure_hint(spec, msg, _is_quantized(base))) from None
    _require_trainable(spec, attached)


def _require_trainable(spec: MethodSpec, peft_model: Any) -> None:
    """An adapter with nothing to train is a mistake (``tokens=0``, an empty target list)."""
    try:
        trainable, _ = peft_model.get_nb_trainable_parameters()
    except Exception:
        return
    if trainable == 0:
        raise PeftMagicError(f"{spec.requested} with these settings adds no trainable parameters",
                             "check sizes such as r, num_virtual_tokens or the target modules")


def _prepare_kbit(base: Any, st: ModelState) -> None:
    from peft import prepare_model_for_kbit_training

    if st.kbit_prepared:
        return
    from ..model.load import disable_cpu_4bit_repacking

    disable_cpu_4bit_repacking(base)
    with _quiet():
        prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                         gradient_checkpointing_kwargs={"use_reentrant": False})
    st.kbit_prepared = True


def _adapter_state(peft_model: Any, name: str) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: "auto" would look the base model up on the Hub.
    sd = get_peft_model_state_dict(peft_model, adapter_name=name, save_embedding_layers=False)
    return {k: v.detach().clone() for k, v in sd.items()}


def _peft_types(peft_model: Any) -> set[str]:
    return {str(getattr(c.peft_type, "value", c.peft_type)) for c in peft_model.peft_config.values()}


def _emit(st: ModelState, peft_model: Any, name: str, method: str, action: str) -> None:
    try:
        trainable, total = peft_model.get_nb_trainable_parameters()
    except Exception:
        trainable = total = None
    events.emit("adapter", model_id=st.model_id, adapter=name, method=method, action=action,
                trainable=trainable, total=total)


# ----------------------------------------------------------------------------- attach


def attach(model: Any, method: str, *, name: str = "default", task: str | None = None,
           **settings: Any) -> AttachResult:
    """Attach ``method`` (any peft method or alias) to ``model`` as adapter ``name``.

    ``settings`` are fields of the method's config (aliases like ``alpha`` allowed).
    Returns an :class:`AttachResult`; use ``result.model`` (the PeftModel) from then on.
    Raises :class:`PeftMagicError` and leaves the model exactly as it was on failure.
    """
    _heavy.ensure()
    _check_model(model)
    spec = resolve_method(method)
    settings = normalize_settings(spec, settings)
    if not name or not str(name).replace("_", "").replace("-", "").isalnum():
        raise PeftMagicError(f"invalid adapter name '{name}'", "use letters, digits, '_' or '-'")

    base = unwrap(model)
    st = state_for(base, create=True)
    peft_model = model if is_peft_model(model) else st.peft_model
    if peft_model is not None and unwrap(peft_model) is not base:
        peft_model = None

    task_type = normalize_task(task) if task else None
    if task_type is None:
        from ..model.load import infer_task

        task_type = infer_task(peft_model or base)
    if spec.info.is_prompt_learning and task_type is None:
        raise PeftMagicError(f"{spec.requested} needs a task type and none could be inferred from "
                             f"{type(base).__name__}", "pass --task causal-lm (or seq-cls, seq2seq, …)")

    quantized = _is_quantized(base)
    if spec.needs_quantized and not quantized:
        raise PeftMagicError(
            f"{spec.requested} needs a model loaded in 4-bit, and this one is not quantized",
            "load it with %peft load PATH --4bit (or use %peft lora on a 16/32-bit model)",
        )

    record = AdapterRecord(name=name, method=spec.requested, peft_type=spec.info.peft_type,
                           settings=settings, task=task_type)

    # Re-run of the same cell: nothing to do.
    if peft_model is not None and name in peft_model.peft_config:
        old = st.adapters.get(name)
        if old is not None and old.same_request(record):
            return AttachResult(peft_model, "unchanged", name, spec.requested, summary=summarize(peft_model))

    config = build_config(spec, settings, task_type, base)
    _validate_on_skeleton(spec, config, base, name)

    notes: list[str] = []
    if peft_model is None:
        new_model = _attach_fresh(spec, config, base, st, name, quantized, notes)
        status = "attached"
        changes: list[tuple[str, Any, Any]] = []
    elif name in peft_model.peft_config:
        new_model, changes = _replace(spec, config, peft_model, base, st, name, record, quantized, notes)
        status = "replaced"
    else:
        new_model = _add(spec, config, peft_model, base, st, name, quantized, notes)
        status = "added"
        changes = []

    st.adapters[name] = record
    st.peft_ref = weakref.ref(new_model)
    summary = summarize(new_model)
    for a in summary.adapters:
        if a.name == name and settings.get("target_modules") and isinstance(settings["target_modules"], list):
            from .targets import explore

            with contextlib.suppress(Exception):
                rep = explore(new_model, settings["target_modules"], spec.info.peft_type)
                notes += [w for w in rep.warnings if "matches no layer" in w]
    _emit(st, new_model, name, spec.requested, status)
    return AttachResult(new_model, status, name, spec.requested, changes=changes, summary=summary, notes=notes)


def _attach_fresh(spec: MethodSpec, config: Any, base: Any, st: ModelState, name: str, quantized: bool,
                  notes: list[str]) -> Any:
    from peft import get_peft_model

    snap = _snapshot(base)
    try:
        if quantized:
            _prepare_kbit(base, st)
            notes.append("prepared the quantized model for k-bit training (gradient checkpointing on)")
        with _quiet():
            peft_model = get_peft_model(base, config, adapter_name=name)
        _require_trainable(spec, peft_model)
        return peft_model
    except Exception as e:
        _restore(base, snap)
        st.kbit_prepared = False if quantized else st.kbit_prepared
        msg = first_line(e)
        raise PeftMagicError(f"cannot attach {spec.requested}: {msg}", _failure_hint(spec, msg, quantized)) from None


def _check_compatible(spec: MethodSpec, peft_model: Any, name: str, task: str | None) -> None:
    others = {n: c for n, c in peft_model.peft_config.items() if n != name}
    if not others:
        return
    types = {str(getattr(c.peft_type, "value", c.peft_type)) for c in others.values()}
    if spec.info.peft_type not in types:
        existing = ", ".join(f"'{n}' ({str(getattr(c.peft_type, 'value', c.peft_type)).lower()})"
                             for n, c in others.items())
        raise PeftMagicError(
            f"cannot add a {spec.requested} adapter next to {existing}: peft keeps one method per model",
            f"%peft delete the other adapters first, or use the same method with --name",
        )


def _add(spec: MethodSpec, config: Any, peft_model: Any, base: Any, st: ModelState, name: str, quantized: bool,
         notes: list[str]) -> Any:
    _check_compatible(spec, peft_model, name, None)
    before = set(peft_model.peft_config)
    active_before = peft_model.active_adapter
    snap = _snapshot(base)
    try:
        with _quiet():
            peft_model.add_adapter(name, config)
            peft_model.set_adapter(name)
    except Exception as e:
        with contextlib.suppress(Exception), _quiet():
            if name in peft_model.peft_config and name not in before:
                peft_model.delete_adapter(name)
        with contextlib.suppress(Exception), _quiet():
            peft_model.set_adapter(active_before)
        for n, p in base.named_parameters():
            if n in snap["requires_grad"]:
                p.requires_grad_(snap["requires_grad"][n])
        msg = first_line(e)
        raise PeftMagicError(f"cannot add {spec.requested} adapter '{name}': {msg}",
                             _failure_hint(spec, msg, quantized)) from None
    return peft_model


def _diff(old: AdapterRecord | None, new: AdapterRecord) -> list[tuple[str, Any, Any]]:
    if old is None:
        return [("settings", "unknown", "new")]
    changes = []
    if old.method != new.method:
        changes.append(("method", old.method, new.method))
    for k in sorted(set(old.settings) | set(new.settings)):
        a, b = old.settings.get(k, _UNSET), new.settings.get(k, _UNSET)
        if a != b:
            changes.append((k, a, b))
    if old.task != new.task:
        changes.append(("task", old.task, new.task))
    return changes


def _replace(spec: MethodSpec, config: Any, peft_model: Any, base: Any, st: ModelState, name: str,
             record: AdapterRecord, quantized: bool, notes: list[str]) -> tuple[Any, list[tuple[str, Any, Any]]]:
    """Swap adapter ``name`` for a new config; on failure, put the old one back with its weights."""
    changes = _diff(st.adapters.get(name), record)
    old_config = copy.deepcopy(peft_model.peft_config[name])
    old_state = _adapter_state(peft_model, name)
    old_type = str(getattr(old_config.peft_type, "value", old_config.peft_type))
    others = [n for n in peft_model.peft_config if n != name]
    active_before = peft_model.active_adapter

    if old_type == spec.info.peft_type and others:
        # Same method among several adapters: delete and re-add under the same name.
        with _quiet():
            peft_model.delete_adapter(name)
        try:
            _add(spec, config, peft_model, base, st, name, quantized, notes)
        except PeftMagicError:
            with _quiet():
                peft_model.add_adapter(name, old_config)
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(peft_model, old_state, adapter_name=name)
                peft_model.set_adapter(active_before if active_before in peft_model.peft_config else name)
            raise
        return peft_model, changes

    if others:
        _check_compatible(spec, peft_model, name, None)
    # The only adapter (or a different method): take the wrapper off and attach afresh.
    base_again = _unwrap_all(peft_model)
    try:
        new_model = _attach_fresh(spec, config, base_again, st, name, quantized, notes)
    except PeftMagicError:
        from peft import get_peft_model, set_peft_model_state_dict

        with _quiet():
            restored = get_peft_model(base_again, old_config, adapter_name=name)
            set_peft_model_state_dict(restored, old_state, adapter_name=name)
        st.peft_ref = weakref.ref(restored)
        raise
    return new_model, changes


def _unwrap_all(peft_model: Any) -> Any:
    """Remove every adapter from ``peft_model`` and return the plain base model."""
    base = peft_model.get_base_model()
    with _quiet():
        if peft_model.peft_config and not next(iter(peft_model.peft_config.values())).is_prompt_learning:
            base = peft_model.base_model.unload()
    base.__dict__.pop("peft_config", None)
    return base


def detach(model: Any) -> Any:
    """Remove all adapters and return the base model (the wrapper is discarded)."""
    _heavy.ensure()
    peft_model = model if is_peft_model(model) else (state_for(model).peft_model if state_for(model) else None)
    if peft_model is None:
        raise PeftMagicError("this model has no adapters to detach")
    st = state_for(peft_model, create=True)
    base = _unwrap_all(peft_model)
    for p in base.parameters():  # back to how from_pretrained returns it: everything trainable
        if p.dtype.is_floating_point:
            p.requires_grad_(True)
    st.adapters.clear()
    st.peft_ref = None
    events.emit("adapter", model_id=st.model_id, adapter=None, method=None, action="detached",
                trainable=0, total=sum(p.numel() for p in base.parameters()))
    return base


@dataclass
class Preview:
    """What attaching would give, computed on a meta-device skeleton (the model is not touched)."""

    trainable: int
    total: int
    targets: list[str]

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def preview(model: Any, method: str, *, name: str = "default", task: str | None = None,
            **settings: Any) -> Preview:
    """Trainable / total parameters and targeted modules that ``attach`` would produce.

    Runs on a skeleton of the *base* architecture, so it costs milliseconds and no memory
    and never touches ``model`` (the panel's live preview, ``%peft plan``). Raises
    :class:`PeftMagicError` for settings that would not attach.
    """
    from peft import get_peft_model

    from ..model.load import infer_task
    from ..model.skeleton import can_skeleton, skeleton_of

    _heavy.ensure()
    _check_model(model)
    spec = resolve_method(method)
    norm = normalize_settings(spec, settings)
    base = unwrap(model)
    if not can_skeleton(base):
        raise PeftMagicError(f"cannot preview on a {type(base).__name__}: not a transformers model")
    task_type = normalize_task(task) if task else infer_task(base)
    config = build_config(spec, norm, task_type, base)
    skel = skeleton_of(base)
    try:
        with _quiet():
            pm = get_peft_model(skel, config, adapter_name=name)
    except Exception as e:
        msg = first_line(e)
        raise PeftMagicError(f"cannot attach {spec.requested}: {msg}", _failure_hint(spec, msg, False)) from None
    trainable, total = pm.get_nb_trainable_parameters()
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [n for n, m in pm.named_modules() if isinstance(m, BaseTunerLayer)]
    from .targets import _strip_peft_prefix

    return Preview(trainable, total, [_strip_peft_prefix(t) for t in targets])
