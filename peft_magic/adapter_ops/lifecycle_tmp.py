"""The adapter lifecycle: save, load, list, switch, switch off / on, delete and merge.

Why these are more than one-line wrappers around peft:

* **Saving never half-writes and never silently overwrites.** The folder is written
  beside the target and renamed into place (``adapter_files.write_atomically``); an
  existing folder is only replaced with ``force``. The folder gets a model card with the
  base model, the method, its settings and the training runs of this adapter with their
  loss curve, so that a folder found months later explains itself.
* **Loading never runs code and never loads half an adapter.** Only safetensors are
  read unless pickles are explicitly allowed; the config is plain JSON. Before the
  user's model is touched, the adapter is placed on a meta-device skeleton of it and the
  saved tensor names and shapes are compared with what the live model would hold: an
  adapter made for another model is one line that names both, where peft would load the
  tensors that happen to fit and drop the rest with a warning.
* **Merging refuses what cannot work before it starts.** Methods without a merge
  (prompt-based, bottleneck, poly, …) are refused up front; on a 4/8-bit base the merge
  would round the merged weights back to 4 bits, so the choice (full-precision
  dequantize-then-merge, with the host memory it takes, or accepting the loss) is the
  user's.
* **One shared state.** Every action updates ``state`` (adapter records, off / on,
  merged) and emits an ``adapter`` event, so ``%peft show``, the panel and the status
  bar agree.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import shutil
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _heavy, events
from . import files as adapter_files
from ..errors import PeftMagicError, did_you_mean, first_line
from ..peft_methods.discovery import field_default
from ..state import AdapterRecord, ModelState, is_peft_model, peft_model_for, state_for, unwrap

#: config fields that describe where an adapter came from, not how it was configured
_NOT_SETTINGS = {"peft_type", "base_model_name_or_path", "revision", "inference_mode", "task_type", "auto_mapping",
                 "peft_version", "runtime_config"}


# ----------------------------------------------------------------------------- results


@dataclass
class LifecycleResult:
    """What a lifecycle command did. ``model`` is the object to use from now on (merge and
    loading onto a plain model return a different object than they were given)."""

    model: Any
    action: str  # saved | loaded | activated | disabled | enabled | deleted | merged
    adapter: str | None
    message: str
    notes: list[str] = field(default_factory=list)
    path: str | None = None
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, bytes) of a saved folder

    def __repr__(self) -> str:
        lines = [self.message]
        if self.files:
            from ..memory import fmt_bytes

            lines.append("files: " + ", ".join(f"{n} ({fmt_bytes(s)})" for n, s in self.files))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from ..display.adapters_html import lifecycle_html

        return lifecycle_html(self)


@dataclass
class AdapterRow:
    """One line of ``%peft adapters``."""

    name: str
    method: str
    peft_type: str
    trainable: int  # parameters of this adapter
    requires_grad: bool  # whether they would be trained now
    active: bool
    merged: bool = False


@dataclass
class AdaptersTable:
    """Every adapter of a model: name, method, parameters, active, merged."""

    rows: list[AdapterRow]
    disabled: bool
    model_class: str

    @property
    def active(self) -> list[str]:
        return [r.name for r in self.rows if r.active]

    def __repr__(self) -> str:
        if not self.rows:
            return f"{self.model_class}: no adapters — attach one (%peft lora) or %peft load-adapter DIR"
        head = f"{self.model_class}: {len(self.rows)} adapter(s)" + (" — all switched off (%peft on)"
                                                                  if self.disabled else "")
        width = max([4] + [len(r.name) for r in self.rows])
        lines = [head, f"  {'name'.ljust(width)}  {'method':<10} {'params':>12}  active  merged"]
        for r in self.rows:
            active = "yes" if r.active and not self.disabled else ("off" if r.active else "")
            params = "–" if r.merged else f"{r.trainable:,}"
            lines.append(f"  {r.name.ljust(width)}  {r.method:<10} {params:>12}  {active:<6}  "
                         f"{'yes' if r.merged else ''}".rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from ..display.adapters_html import adapters_html

        return adapters_html(self)


# ----------------------------------------------------------------------------- helpers


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _check_model(model: Any) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise PeftMagicError(f"expected a torch model, got {type(model).__name__}",
                             "load one with %peft load smollm2 (or any transformers model)")


def _peft_or_fail(model: Any, what: str) -> tuple[ModelState, Any]:
    """The state and the PeftModel of ``model``; a one-line error when it has no adapters."""
    _heavy.ensure()
    _check_model(model)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    if pm is None or not getattr(pm, "peft_config", None):
        merged = f" (its adapters {', '.join(st.merged)} were merged into the weights)" if st.merged else ""
        raise PeftMagicError(f"this model has no adapters to {what}{merged}",
                             "attach one with %peft lora … or load one with %peft load-adapter DIR")
    return st, pm


def _ptype(cfg: Any) -> str:
    return str(getattr(cfg.peft_type, "value", cfg.peft_type))


def _method_info(peft_type: str) -> Any:
    from ..peft_methods.discovery import registry

    return registry().get(peft_type)


def method_name(cfg: Any, st: ModelState | None, name: str | None = None) -> str:
    """How to call an adapter's method: as it was attached, else the friendliest alias."""
    if st is not None and name is not None and name in st.adapters:
        return st.adapters[name].method
    pt = _ptype(cfg)
    if pt == "LORA":
        if getattr(cfg, "use_dora", False):
            return "dora"
        if st is not None and st.bits:
            return "qlora"
        return "lora"
    return {"PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "P_TUNING": "p-tuning"}.get(pt, pt.lower())


def config_settings(cfg: Any) -> dict[str, Any]:
    """The fields of a peft config that differ from their defaults (what the user chose)."""
    out: dict[str, Any] = {}
    if not dataclasses.is_dataclass(cfg):
        return out
    for f in dataclasses.fields(cfg):
        if f.name in _NOT_SETTINGS or f.name.startswith("_"):
            continue
        value = getattr(cfg, f.name, None)
        default = field_default(f)
        if isinstance(value, set):
            value = sorted(value)
        if isinstance(default, set):
            default = sorted(default)
        if value != default:
            out[f.name] = value
    return out


def _emit(st: ModelState, model: Any, name: str | None, method: str | None, action: str) -> None:
    trainable = total = None
    try:
        if is_peft_model(model):
            trainable, total = model.get_nb_trainable_parameters()
        else:
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    except Exception:
        pass
    events.emit("adapter", model_id=st.model_id, adapter=name, method=method, action=action,
                trainable=trainable, total=total)


def _adapter_params(pm: Any, name: str) -> tuple[int, bool]:
    """(parameter count, any requires_grad) of adapter ``name`` (peft names its tensors after it)."""
    n = 0
    grad = False
    for pname, p in pm.named_parameters():
        if name in pname.split("."):
            n += p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
            grad = grad or p.requires_grad
    return n, grad


def _is_disabled(st: ModelState) -> bool:
    return bool(getattr(st, "disabled", False))


def _set_disabled(st: ModelState, value: bool) -> None:
    st.disabled = value


def _quantized_bits(base: Any) -> int | None:
    if getattr(base, "is_loaded_in_4bit", False):
        return 4
    if getattr(base, "is_loaded_in_8bit", False):
        return 8
    return None


def _active(pm: Any) -> list[str]:
    act = getattr(pm, "active_adapters", None) or pm.active_adapter
    return [act] if isinstance(act, str) else list(act)


def _pick_adapter(pm: Any, name: str | None) -> str:
    if name is None:
        act = _active(pm)
        return act[0] if act else next(iter(pm.peft_config))
    if name not in pm.peft_config:
        hint = did_you_mean(name, pm.peft_config)
        raise PeftMagicError(f"no adapter '{name}' on this model" + (f": {hint}" if hint else ""),
                             "the adapters are: " + ", ".join(pm.peft_config))
    return name


# ----------------------------------------------------------------------------- list


def adapters(model: Any) -> AdaptersTable:
    """Every adapter on ``model``: name, method, trainable parameters, active, merged."""
    _heavy.ensure()
    _check_model(model)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    rows: list[AdapterRow] = []
    if pm is not None and getattr(pm, "peft_config", None):
        active = set(_active(pm))
        for name, cfg in pm.peft_config.items():
            n, grad = _adapter_params(pm, name)
            rows.append(AdapterRow(name, method_name(cfg, st, name), _ptype(cfg), n, grad, name in active))
    for name in st.merged:
        rows.append(AdapterRow(name, "merged", "", 0, False, False, merged=True))
    return AdaptersTable(rows, _is_disabled(st), type(unwrap(model)).__name__)


# ----------------------------------------------------------------------------- switch


def use_adapter(model: Any, name: str) -> LifecycleResult:
    """Make adapter ``name`` the active one (and switch adapters back on if they were off).

    The adapter keeps its trainability: one loaded for inference stays frozen.
    """
    st, pm = _peft_or_fail(model, "switch between")
    name = _pick_adapter(pm, name)
    cfg = pm.peft_config[name]
    notes = []
    if _is_disabled(st):
        _enable(pm, st)
        notes.append("adapters were switched off; they are on again")
    with _quiet():
        pm.set_adapter(name, inference_mode=bool(getattr(cfg, "inference_mode", False)))
    method = method_name(cfg, st, name)
    _emit(st, pm, name, method, "activated")
    return LifecycleResult(pm, "activated", name, f"active adapter: '{name}' ({method})", notes)


def _disable(pm: Any, st: ModelState) -> None:
    cfg = pm.active_peft_config
    if cfg.is_prompt_learning:
        # peft's own disable_adapter() does this swap for the length of a with-block
        pm.forward = pm.base_model.forward
        pm.prepare_inputs_for_generation = pm.base_model.prepare_inputs_for_generation
    else:
        with _quiet():
            pm.base_model.disable_adapter_layers()
    pm._adapters_disabled = True
    _set_disabled(st, True)


def _enable(pm: Any, st: ModelState) -> None:
    pm.__dict__.pop("forward", None)
    pm.__dict__.pop("prepare_inputs_for_generation", None)
    if not pm.active_peft_config.is_prompt_learning:
        with _quiet():
            pm.base_model.enable_adapter_layers()
    pm._adapters_disabled = False
    _set_disabled(st, False)


def disable_adapters(model: Any) -> LifecycleResult:
    """Switch every adapter off: the model computes exactly what the base model computes.

    Nothing is removed; ``enable_adapters`` (``%peft on``) switches them back on.
    """
    st, pm = _peft_or_fail(model, "switch off")
    if _is_disabled(st):
        return LifecycleResult(pm, "disabled", None, "adapters are already off — nothing changed")
    _disable(pm, st)
    _emit(st, pm, None, None, "disabled")
    return LifecycleResult(pm, "disabled", None, "adapters off: the model now computes the base model "
                           "(%peft on to switch them back on)")


def enable_adapters(model: Any) -> LifecycleResult:
    """Switch adapters back on after ``disable_adapters`` (``%peft off``)."""
    st, pm = _peft_or_fail(model, "switch on")
    if not _is_disabled(st):
        return LifecycleResult(pm, "enabled", None, "adapters are already on — nothing changed")
    _enable(pm, st)
    active = _active(pm)
    _emit(st, pm, active[0] if active else None, None, "enabled")
    return LifecycleResult(pm, "enabled", None, "adapters on; active: " + ", ".join(f"'{a}'" for a in active))


def delete_adapter(model: Any, name: str) -> LifecycleResult:
    """Remove adapter ``name``. Removing the last one returns the plain base model."""
    st, pm = _peft_or_fail(model, "delete")
    name = _pick_adapter(pm, name)
    method = method_name(pm.peft_config[name], st, name)
    if len(pm.peft_config) == 1:
        from .attach import detach

        if _is_disabled(st):
            _enable(pm, st)
        base = detach(pm)
        st.adapters.pop(name, None)
        _set_disabled(st, False)
        _emit(st, base, name, method, "deleted")
        return LifecycleResult(base, "deleted", name, f"deleted {method} adapter '{name}'; the model is the plain "
                               f"base model again ({type(base).__name__})")
    was_active = name in _active(pm)
    with _quiet():
        pm.delete_adapter(name)
    st.adapters.pop(name, None)
    notes = []
    if was_active:
        new = _active(pm)
        notes.append(f"'{name}' was active; active now: " + ", ".join(f"'{a}'" for a in new))
    _emit(st, pm, name, method, "deleted")
    return LifecycleResult(pm, "deleted", name, f"deleted {method} adapter '{name}'; left: "
                           + ", ".join(f"'{a}'" for a in pm.peft_config), notes)


# ----------------------------------------------------------------------------- merge


def _dequantize_need(base: Any) -> int:
    """Bytes the whole model takes once dequantized (what ``--dequantize`` must hold in memory)."""
    import torch

    dtype = getattr(base, "dtype", torch.float32)
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    n = 0
    for p in base.parameters():
        cls = p.__class__.__name__
        n += p.numel() * (2 if cls == "Params4bit" else 1) * (size if cls in ("Params4bit", "Int8Params")
                                                                 else p.element_size())
    return n


def _host_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def merge(model: Any, *, dequantize: bool = False, keep_quantized: bool = False) -> LifecycleResult:
    """Merge the active adapter(s) into the base weights and return the plain base model.

    The merged model computes what the model with its adapter computed (within floating
    point tolerance) with no adapter overhead; the adapters are gone from it afterwards
    (save them first if you want them back). On a 4/8-bit base, choose
    ``dequantize=True`` (merge into full-precision weights; needs the whole model in host
    memory) or ``keep_quantized=True`` (round the merged weights back to 4/8 bits).
    """
    from ..memory import fmt_bytes

    st, pm = _peft_or_fail(model, "merge")
    if _is_disabled(st):
        raise PeftMagicError("adapters are switched off, so there is nothing active to merge",
                             "%peft on first (or %peft use NAME)")
    active = _active(pm)
    for name, cfg in pm.peft_config.items():
        info = _method_info(_ptype(cfg))
        if name in active and (info is None or not info.can_merge):
            meth = method_name(cfg, st, name)
            raise PeftMagicError(f"{meth} adapters cannot be merged into the weights ('{name}' is one): "
                                 "nothing was changed", f"keep it as an adapter; %peft save DIR saves it")
    base = pm.get_base_model()
    bits = _quantized_bits(base)
    need = _dequantize_need(base) if bits else 0
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
    dropped = [n for n in pm.peft_config if n not in active]
    notes: list[str] = []
    methods = {n: method_name(pm.peft_config[n], st, n) for n in active}
    if bits and dequantize:
        merged = _merge_dequantized(pm, active, notes)
        notes.append(f"dequantized the {bits}-bit base to {str(merged.dtype).replace('torch.', '')} "
                     f"({fmt_bytes(need)}) before merging: no rounding")
    else:
        try:
            with _quiet():
                merged = pm.merge_and_unload(adapter_names=active)
        except Exception as e:
            raise PeftMagicError(f"merge failed: {first_line(e)}") from None
        if bits:
            notes.append(f"merged into the {bits}-bit weights: they were rounded back to {bits} bits, "
                         "so outputs differ slightly from the unmerged adapter")
    merged.__dict__.pop("peft_config", None)
    st2 = state_for(merged, create=True)
    for n in active:
        if n not in st2.merged:
            st2.merged.append(n)
    st2.adapters.clear()
    st2.peft_ref = None
    _set_disabled(st2, False)
    if dropped:
        notes.append("inactive adapters are gone with the wrapper: " + ", ".join(f"'{n}'" for n in dropped))
    for n in active:
        _emit(st2, merged, n, methods[n], "merged")
    what = ", ".join(f"'{n}' ({methods[n]})" for n in active)
    return LifecycleResult(merged, "merged", active[0] if active else None,
                           f"merged {what} into the weights; the model is a plain {type(merged).__name__} now",
                           notes)


def _merge_dequantized(pm: Any, active: list[str], notes: list[str]) -> Any:
    """Take the adapters off (without merging), dequantize the base, put them back, merge."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = active[0]
    if len(active) > 1:
        notes.append("only the first active adapter is merged on the dequantize path")
    cfg = copy.deepcopy(pm.peft_config[name])
    sd = {k: v.detach().clone() for k, v in
          get_peft_model_state_dict(pm, adapter_name=name, save_embedding_layers=False).items()}
    with _quiet():
        base = pm.base_model.unload()
    base.__dict__.pop("peft_config", None)
    try:
        with _quiet():
            base.dequantize()
    except Exception as e:
        with _quiet():  # put the adapter back as it was
            again = get_peft_model(base, cfg, adapter_name=name)
            set_peft_model_state_dict(again, sd, adapter_name=name)
        raise PeftMagicError(f"could not dequantize the base: {first_line(e)}; nothing was merged") from None
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if getattr(base, attr, False):
            with contextlib.suppress(Exception):
                setattr(base, attr, False)
    base.__dict__.pop("hf_quantizer", None)
    with _quiet():
        again = get_peft_model(base, cfg, adapter_name=name)
        set_peft_model_state_dict(again, sd, adapter_name=name)
        merged = again.merge_and_unload()
    st = state_for(merged, create=True)
    st.bits = None
    return merged


# ----------------------------------------------------------------------------- save


def _save_embeddings(cfg: Any) -> bool:
    """Save the base embedding matrices only when the adapter trains them.

    peft's "auto" looks the base model up on the Hugging Face Hub to find out, which
    fails (or hangs) offline.
    """
    from peft.utils.other import EMBEDDING_LAYER_NAMES

    targets = getattr(cfg, "target_modules", None) or []
    if isinstance(targets, str):
        targets = [targets]
    if any(t in EMBEDDING_LAYER_NAMES for t in targets):
        return True
    return bool(getattr(cfg, "trainable_token_indices", None))


def _write_adapter(pm: Any, name: str, folder: Path) -> None:
    cfg = pm.peft_config[name]
    with _quiet():
        pm.save_pretrained(str(folder), selected_adapters=[name], save_embedding_layers=_save_embeddings(cfg),
                           safe_serialization=True)
    sub = folder / name
    if name != "default" and sub.is_dir():  # peft nests non-default adapters; we save one per folder
        for item in sub.iterdir():
            dest = folder / item.name
            if dest.exists():
                if dest.is_dir():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            item.rename(dest)
        sub.rmdir()


def _merged_state_dict(pm: Any, name: str) -> dict[str, Any]:
    """The base model's state dict with adapter ``name`` merged in, leaving the model as it was.

    One adapted layer at a time: keep its base weights, merge, read the merged weights,
    unmerge and put the exact original values back (unmerging alone leaves rounding
    noise). Memory: one layer's weights extra, never a copy of the model.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older peft
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper

    base = pm.get_base_model()
    replaced: dict[str, dict[str, Any]] = {}
    for mname, module in base.named_modules():
        if not mname or any(mname.startswith(p + ".") for p in replaced):
            continue
        if isinstance(module, BaseTunerLayer):
            layer = module.get_base_layer()
            original = {k: v.detach().clone() for k, v in layer.state_dict().items()}
            available = set(module._get_available_adapters()) if hasattr(module, "_get_available_adapters") else set()
            if name in available and not module.merged:
                try:
                    with _quiet():
                        module.merge(adapter_names=[name])
                    replaced[mname] = {k: v.detach().clone() for k, v in layer.state_dict().items()}
                finally:
                    with _quiet():
                        if module.merged:
                            module.unmerge()
                    layer.load_state_dict(original)
            else:
                replaced[mname] = original
        elif isinstance(module, AuxiliaryTrainingWrapper):
            copies = getattr(module, "modules_to_save", None)
            src = copies[name] if copies is not None and name in copies else getattr(module, "original_module", None)
            if src is not None:
                replaced[mname] = {k: v.detach() for k, v in src.state_dict().items()}
    out: dict[str, Any] = {}
    for k, v in base.state_dict().items():
        if not any(k.startswith(p + ".") for p in replaced):
            out[k] = v
    for p, sd in replaced.items():
        for k, v in sd.items():
            out[f"{p}.{k}"] = v
    return out


def save(model: Any, path: str | Path, *, name: str | None = None, merged: bool = False, force: bool = False,
         tokenizer: Any = None) -> LifecycleResult:
    """Save adapter ``name`` (default: the active one) to folder ``path``, atomically.

    The folder gets peft's files (``adapter_config.json``, ``adapter_model.safetensors``)
    and a ``README.md`` model card (base model, method, settings, training runs with their
    loss, ``loss_curve.svg``). An existing folder is replaced only with ``force=True``,
    and then in one step: a crash leaves the old adapter or the new one, never a mix.
    ``merged=True`` saves the full model with the adapter merged into the weights
    (loadable without peft); the live model is left as it was.
    """
    from .. import state as state_mod
    from .summary import quantization_of

    _heavy.ensure()
    _check_model(model)
    target = Path(path).expanduser()
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    has_adapters = pm is not None and bool(getattr(pm, "peft_config", None))
    base = unwrap(model)
    base_name = str(getattr(base, "name_or_path", "") or getattr(getattr(base, "config", None), "_name_or_path", "")
                    or st.source or type(base).__name__)

    if not has_adapters:
        if not (merged and st.merged):
            raise PeftMagicError("this model has no adapters to save" + (
                f" (its adapters {', '.join(st.merged)} were merged into the weights: save it with --merged)"
                if st.merged else ""), "attach one with %peft lora …, or load one with %peft load-adapter DIR")
        if target.exists() and not force:
            raise PeftMagicError(f"{target} already exists", "pass --force (force=True) to replace it")

        def fill_plain(tmp: Path) -> None:
            with _quiet():
                base.save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                with _quiet():
                    tokenizer.save_pretrained(str(tmp))
            card = adapter_files.model_card(
                adapter=", ".join(st.merged), method="merged", peft_type="–", base_model=base_name,
                base_class=type(base).__name__, bits=None, settings={}, runs=[], trainable=None, has_curve=False,
                merged=True)
            (tmp / adapter_files.CARD_NAME).write_text(card)

        adapter_files.write_atomically(target, fill_plain, force=force)
        _emit(st, base, ", ".join(st.merged), "merged", "saved")
        return LifecycleResult(model, "saved", None, f"saved the merged model to {target}", path=str(target),
                               files=_files(target))

    name = _pick_adapter(pm, name)
    cfg = pm.peft_config[name]
    pt = _ptype(cfg)
    method = method_name(cfg, st, name)
    if merged:
        info = _method_info(pt)
        if info is None or not info.can_merge:
            raise PeftMagicError(f"{method} adapters cannot be merged into the weights, so --merged cannot save "
                                 "them: nothing was written", f"save the adapter itself: %peft save {path}")
        q = quantization_of(base)
        if q:
            raise PeftMagicError(f"--merged on a {q} base would save rounded weights: nothing was written",
                                 "%peft merge --dequantize first, then %peft save DIR --merged")
    if target.exists() and not force:
        raise PeftMagicError(f"{target} already exists", "pass --force (force=True) to replace it")

    runs = [r for r in state_mod.runs() if r.model_id == st.model_id and r.adapter == name]
    trainable, _grad = _adapter_params(pm, name)
    settings = dict(st.adapters[name].settings) if name in st.adapters else config_settings(cfg)

    def fill(tmp: Path) -> None:
        if merged:
            sd = _merged_state_dict(pm, name)
            with _quiet():
                pm.get_base_model().save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
            if tokenizer is not None:
                with _quiet():
                    tokenizer.save_pretrained(str(tmp))
        else:
            _write_adapter(pm, name, tmp)
        svg = adapter_files.loss_svg(runs)
        if svg:
            (tmp / adapter_files.CURVE_NAME).write_text(svg)
        card = adapter_files.model_card(
            adapter=name, method=method, peft_type=pt, base_model=str(cfg.base_model_name_or_path or base_name),
            base_class=type(base).__name__, bits=st.bits, settings=settings, runs=runs, trainable=trainable,
            has_curve=bool(svg), merged=merged,
            model_type=getattr(getattr(base, "config", None), "model_type", None))
        (tmp / adapter_files.CARD_NAME).write_text(card)

    adapter_files.write_atomically(target, fill, force=force)
    for r in runs:
        if str(target) not in r.saved_to:
            r.saved_to.append(str(target))
    _emit(st, pm, name, method, "saved")
    what = "the model with adapter" if merged else f"{method} adapter"
    notes = [f"training runs recorded in the card: {', '.join(str(r.run_id) for r in runs)}"] if runs else []
    return LifecycleResult(model, "saved", name, f"saved {what} '{name}' to {target}", notes, path=str(target),
                           files=_files(target))


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in adapter_files.iter_files(folder))


# ----------------------------------------------------------------------------- load


def _model_label(base: Any) -> str:
    name = getattr(base, "name_or_path", None) or getattr(getattr(base, "config", None), "_name_or_path", None)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    cls = type(base).__name__
    return f"{name} ({cls})" if name else (f"a {model_type} model ({cls})" if model_type else cls)


def _check_fits(base: Any, cfg: Any, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    """Refuse an adapter whose tensors do not match what this model would hold.

    The adapter is attached to a meta-device skeleton of the live model (no memory, the
    model untouched) and the names and shapes peft would save are compared with the
    file's. peft itself would load what fits and only warn about the rest.
    """
    from peft import get_peft_model, get_peft_model_state_dict

    from ..model.skeleton import can_skeleton, skeleton_of

    made_for = getattr(cfg, "base_model_name_or_path", None) or "another model"
    live = _model_label(base)

    def refuse(why: str) -> PeftMagicError:
        return PeftMagicError(f"the adapter in {folder} was made for {made_for} and does not fit this model, "
                              f"{live}: {why}", "load it onto the model it was trained on")

    made_type = adapter_files.card_metadata(folder).get("base_model_type")
    live_type = getattr(getattr(base, "config", None), "model_type", None)
    if made_type and live_type and str(made_type) != str(live_type):
        raise refuse(f"it was trained on a {made_type} model and this is a {live_type} model")
    if not can_skeleton(base):
        return
    try:
        skel = skeleton_of(base)
    except Exception:
        return
    probe_cfg = copy.deepcopy(cfg)
    probe_cfg.inference_mode = False
    prompt = bool(getattr(probe_cfg, "is_prompt_learning", False))
    if prompt:
        # sizes that peft fills in from the model's config: take them from *this* model
        for attr in ("num_layers", "token_dim", "num_attention_heads", "num_transformer_submodules"):
            if hasattr(probe_cfg, attr):
                setattr(probe_cfg, attr, None)
        if hasattr(probe_cfg, "prompt_tuning_init"):
            probe_cfg.prompt_tuning_init = "RANDOM"  # TEXT init would load a tokenizer
    try:
        with _quiet():
            probe = get_peft_model(skel, probe_cfg, adapter_name="default")
            if prompt:
                # the saved tensor is the encoder's output; computing it on meta tensors is impossible
                filled = probe.peft_config["default"]
                total = filled.num_virtual_tokens * (filled.num_transformer_submodules or 1)
                dim = filled.token_dim * (2 * filled.num_layers if _ptype(filled) == "PREFIX_TUNING" else 1)
                expected = {"prompt_embeddings": (total, dim)}
            else:
                expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(
                    probe, adapter_name="default", save_embedding_layers=False).items()}
    except Exception as e:
        raise refuse(first_line(e)) from None
    base_params = {n: tuple(p.shape) for n, p in skel.named_parameters()}
    missing = sorted(set(expected) - set(shapes))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    extra = []
    for k in sorted(set(shapes) - set(expected)):
        stripped = k.replace("base_model.model.", "", 1)
        if base_params.get(stripped) != shapes[k]:
            extra.append(k)
    if wrong:
        k = wrong[0]
        raise refuse(f"{_short(k)} is {list(shapes[k])} in the file but {list(expected[k])} here"
                     + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        raise refuse(f"{len(missing)} tensor(s) this model needs are not in the file, e.g. {_short(missing[0])}")
    if extra:
        raise refuse(f"{len(extra)} tensor(s) in the file have no place in this model, e.g. {_short(extra[0])}")


def _short(key: str) -> str:
    return key.replace("base_model.model.", "", 1)


def _default_name(pm: Any, folder: Path) -> str:
    if pm is None or "default" not in pm.peft_config:
        return "default"
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in folder.resolve().name) or "adapter"
    name, i = stem, 2
    while name in pm.peft_config:
        name, i = f"{stem}_{i}", i + 1
    return name


def load_adapter(model: Any, path: str | Path, *, name: str | None = None, trainable: bool = False,
                 allow_pickle: bool = False) -> LifecycleResult:
    """Load a saved adapter onto ``model`` and make it the active one.

    ``model`` may be a plain model (the result is a new PeftModel: use ``result.model``)
    or a PeftModel that has adapters already (the adapter is added). The adapter is
    frozen unless ``trainable=True``. Only safetensors weights are read unless
    ``allow_pickle=True``; an adapter made for another model is refused before anything
    is changed.
    """
    from peft import PeftConfig, PeftModel

    _heavy.ensure()
    _check_model(model)
    folder = Path(path).expanduser()
    adapter_files.recover(folder)
    raw = adapter_files.read_config(folder)
    weights = adapter_files.find_weights(folder, allow_pickle)
    pt = str(raw.get("peft_type"))
    info = _method_info(pt)
    if info is None:
        raise PeftMagicError(f"{folder} holds a {pt} adapter, which this peft does not know",
                             "upgrade peft, or see %peft methods")
    try:
        with _quiet():
            cfg = PeftConfig.from_pretrained(str(folder))
    except Exception as e:
        raise PeftMagicError(f"cannot read the adapter config in {folder}: {first_line(e)}") from None

    st = state_for(model, create=True)
    base = unwrap(model)
    pm = peft_model_for(model)
    if pm is not None and not getattr(pm, "peft_config", None):
        pm = None
    name = name or _default_name(pm, folder)
    if not str(name).replace("_", "").replace("-", "").isalnum():
        raise PeftMagicError(f"invalid adapter name '{name}'", "use letters, digits, '_' or '-'")
    if pm is not None and name in pm.peft_config:
        raise PeftMagicError(f"the model already has an adapter '{name}'",
                             f"pass --name OTHER, or %peft delete {name} first")
    if pm is not None:
        types = {_ptype(c) for c in pm.peft_config.values()}
        if pt not in types:
            existing = ", ".join(f"'{n}' ({method_name(c, st, n)})" for n, c in pm.peft_config.items())
            raise PeftMagicError(f"cannot load a {pt.lower()} adapter next to {existing}: peft keeps one method "
                                 "per model", "%peft delete the other adapters first, or load onto a fresh model")
    if info.is_prompt_learning and pm is None and raw.get("task_type") is None:
        raise PeftMagicError(f"the {pt.lower()} adapter in {folder} has no task_type",
                             "prompt-based adapters need one (e.g. CAUSAL_LM) in adapter_config.json")

    shapes = adapter_files.tensor_shapes(weights)
    _check_fits(base, cfg, shapes, folder)

    bits = _quantized_bits(base)
    use_safetensors = weights.suffix == ".safetensors"
    if pm is None:
        from .attach import _restore, _snapshot

        snap = _snapshot(base)
        try:
            if trainable and bits and not st.kbit_prepared:
                from peft import prepare_model_for_kbit_training

                with _quiet():
                    prepare_model_for_kbit_training(base, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
                st.kbit_prepared = True
            with _quiet():
                new = PeftModel.from_pretrained(base, str(folder), adapter_name=name, is_trainable=trainable,
                                                use_safetensors=use_safetensors)
        except Exception as e:
            _restore(base, snap)
            raise PeftMagicError(f"could not load the adapter in {folder}: {first_line(e)}") from None
    else:
        new = pm
        before_active = _active(pm)
        try:
            with _quiet():
                pm.load_adapter(str(folder), adapter_name=name, is_trainable=trainable,
                                use_safetensors=use_safetensors)
                pm.set_adapter(name, inference_mode=not trainable)
        except Exception as e:
            with contextlib.suppress(Exception), _quiet():
                if name in pm.peft_config:
                    pm.delete_adapter(name)
                pm.set_adapter(before_active[0])
            raise PeftMagicError(f"could not load the adapter in {folder}: {first_line(e)}") from None
    if _is_disabled(st):
        _enable(new, st)
    method = method_name(cfg, st, None)
    st.adapters[name] = AdapterRecord(name=name, method=method, peft_type=pt, settings=config_settings(cfg),
                                      task=str(getattr(cfg.task_type, "value", cfg.task_type))
                                      if cfg.task_type else None)
    st.peft_ref = weakref.ref(new)
    _emit(st, new, name, method, "loaded")
    n, _ = _adapter_params(new, name)
    mode = "trainable" if trainable else "frozen: --trainable to train it further"
    notes = []
    made_for = getattr(cfg, "base_model_name_or_path", None)
    live_name = getattr(base, "name_or_path", None)
    if made_for and live_name and str(made_for) != str(live_name):
        notes.append(f"the adapter was made for {made_for} and this model is {live_name}: every tensor fits, "
                     "but check that it is the same model")
    if weights.suffix != ".safetensors":
        notes.append("loaded a pickle file because --allow-pickle was given")
    return LifecycleResult(new, "loaded", name, f"loaded {method} adapter '{name}' from {folder} "
                           f"({n:,} params, {mode}); it is the active adapter", notes, path=str(folder))
