"""``%peft save``: an adapter (or a merged model) in a folder, never half-written.

The folder is written beside the target and renamed into place (``files``); an existing
folder is only replaced with ``force``. It gets peft's own files plus a model card
(``card``) with the base model, the method, its settings and the training runs of this
adapter with their loss curve, so that a folder found months later explains itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import peft_view, stack
from .. import state as state_mod
from ..errors import PeftMagicError
from ..model.properties import model_name, quantization_of, require_model
from ..peft_methods.behaviour import behaviour
from ..peft_methods.discovery import method_info
from ..peft_methods.fields import changed_settings
from ..state import ModelState, peft_model_for, state_for, unwrap
from . import card, files
from .announce import emit_adapter
from .find import method_name, pick_adapter
from .results import LifecycleResult


def _folder_files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in files.iter_files(folder))


def _refuse_existing(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise PeftMagicError(f"{target} already exists", "pass --force (force=True) to replace it")


def _save_merged_plain(model: Any, st: ModelState, target: Path, force: bool, tokenizer: Any,
                       base_name: str) -> LifecycleResult:
    """``--merged`` for a model whose adapters were merged already: the plain model and a card."""
    base = unwrap(model)

    def fill(tmp: Path) -> None:
        with stack.quiet():
            base.save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
        text = card.model_card(
            adapter=", ".join(st.merged), method="merged", peft_type="–", base_model=base_name,
            base_class=type(base).__name__, bits=None, settings={}, runs=[], trainable=None, has_curve=False,
            merged=True)
        (tmp / card.CARD_NAME).write_text(text)

    files.write_atomically(target, fill, force=force)
    emit_adapter(st, base, ", ".join(st.merged), "merged", "saved")
    return LifecycleResult(model, "saved", None, f"saved the merged model to {target}", path=str(target),
                           files=_folder_files(target))


def _check_mergeable(pm: Any, name: str, method: str, path: Any) -> None:
    info = method_info(peft_view.peft_type(pm.peft_config[name]))
    if info is None or not info.can_merge:
        raise PeftMagicError(f"{method} adapters cannot be merged into the weights, so --merged cannot save "
                             "them: nothing was written", f"save the adapter itself: %peft save {path}")
    q = quantization_of(pm.get_base_model())
    if q:
        raise PeftMagicError(f"--merged on a {q} base would save rounded weights: nothing was written",
                             "%peft merge --dequantize first, then %peft save DIR --merged")


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
    stack.ensure()
    require_model(model)
    target = Path(path).expanduser()
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    base = unwrap(model)
    base_name = str(model_name(base) or st.source or type(base).__name__)
    if pm is None or not peft_view.configs(pm):
        if not (merged and st.merged):
            raise PeftMagicError("this model has no adapters to save" + (
                f" (its adapters {', '.join(st.merged)} were merged into the weights: save it with --merged)"
                if st.merged else ""), "attach one with %peft lora …, or load one with %peft load-adapter DIR")
        _refuse_existing(target, force)
        return _save_merged_plain(model, st, target, force, tokenizer, base_name)

    name = pick_adapter(pm, name)
    cfg = pm.peft_config[name]
    pt = peft_view.peft_type(cfg)
    method = method_name(cfg, st, name)
    if merged:
        _check_mergeable(pm, name, method, path)
    elif behaviour(pt).no_save:
        raise PeftMagicError(f"{method} adapters cannot be saved: {behaviour(pt).no_save}; nothing was written",
                             "keep it in the kernel; its experts are the LoRA adapters it was given")
    _refuse_existing(target, force)
    runs = [r for r in state_mod.runs() if r.model_id == st.model_id and r.adapter == name]
    trainable, _grad = peft_view.adapter_params(pm, name)
    settings = dict(st.adapters[name].settings) if name in st.adapters else changed_settings(cfg)

    def fill(tmp: Path) -> None:
        if merged:
            sd = peft_view.merged_state_dict(pm, name)
            with stack.quiet():
                pm.get_base_model().save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(tmp))
        else:
            peft_view.write_adapter(pm, name, tmp)
        svg = card.loss_svg(runs)
        if svg:
            (tmp / card.CURVE_NAME).write_text(svg)
        text = card.model_card(
            adapter=name, method=method, peft_type=pt, base_model=str(cfg.base_model_name_or_path or base_name),
            base_class=type(base).__name__, bits=st.bits, settings=settings, runs=runs, trainable=trainable,
            has_curve=bool(svg), merged=merged, model_type=getattr(getattr(base, "config", None), "model_type", None))
        (tmp / card.CARD_NAME).write_text(text)

    files.write_atomically(target, fill, force=force)
    for r in runs:
        if str(target) not in r.saved_to:
            r.saved_to.append(str(target))
    emit_adapter(st, pm, name, method, "saved")
    what = "the model with adapter" if merged else f"{method} adapter"
    notes = [f"training runs recorded in the card: {', '.join(str(r.run_id) for r in runs)}"] if runs else []
    return LifecycleResult(model, "saved", name, f"saved {what} '{name}' to {target}", notes, path=str(target),
                           files=_folder_files(target))
