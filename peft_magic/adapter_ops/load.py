"""``%peft load-adapter``: a saved adapter onto a model — no code run, never half-loaded.

Only safetensors are read unless pickles are explicitly allowed, and the config is
plain JSON (``files``). Before the user's model is touched, the adapter is placed on a
meta-device skeleton of it and the saved tensor names and shapes are compared with what
the live model would hold: an adapter made for another model is one line that names
both, where peft would load the tensors that happen to fit and drop the rest with a
warning.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from .. import peft_view, stack
from ..errors import PeftMagicError, first_line
from ..model.properties import model_label, model_name, quantized_bits, require_model
from ..model.skeleton import attach_on_skeleton, can_skeleton, skeleton_of
from ..peft_methods.discovery import method_info
from ..peft_methods.fields import changed_settings
from ..state import AdapterRecord, ModelState, peft_model_for, state_for, unwrap
from . import card, files
from .announce import emit_adapter
from .find import check_adapter_name, method_name
from .results import LifecycleResult
from .rollback import prepare_kbit, restore, snapshot
from .switch import set_on


def _short(key: str) -> str:
    return key.replace("base_model.model.", "", 1)


def _expected_shapes(skel: Any, cfg: Any) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes this model would save for an adapter with ``cfg``."""
    probe_cfg = copy.deepcopy(cfg)
    probe_cfg.inference_mode = False
    if not peft_view.is_prompt_learning(probe_cfg):
        return peft_view.saved_shapes(attach_on_skeleton(skel, probe_cfg))
    # sizes that peft fills in from the model's config: take them from *this* model
    for attr in ("num_layers", "token_dim", "num_attention_heads", "num_transformer_submodules"):
        if hasattr(probe_cfg, attr):
            setattr(probe_cfg, attr, None)
    if hasattr(probe_cfg, "prompt_tuning_init"):
        probe_cfg.prompt_tuning_init = "RANDOM"  # TEXT init would load a tokenizer
    probe = attach_on_skeleton(skel, probe_cfg)
    # the saved tensor is the encoder's output; computing it on meta tensors is impossible
    return {"prompt_embeddings": peft_view.prompt_tensor_shape(probe.peft_config["default"])}


def check_fits(base: Any, cfg: Any, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    """Refuse an adapter whose tensors do not match what this model would hold."""
    made_for = getattr(cfg, "base_model_name_or_path", None) or "another model"

    def refuse(why: str) -> PeftMagicError:
        return PeftMagicError(f"the adapter in {folder} was made for {made_for} and does not fit this model, "
                              f"{model_label(base)}: {why}", "load it onto the model it was trained on")

    made_type = card.card_metadata(folder).get("base_model_type")
    live_type = getattr(getattr(base, "config", None), "model_type", None)
    if made_type and live_type and str(made_type) != str(live_type):
        raise refuse(f"it was trained on a {made_type} model and this is a {live_type} model")
    if not can_skeleton(base):
        return
    try:
        skel = skeleton_of(base)
    except Exception:
        return
    try:
        expected = _expected_shapes(skel, cfg)
    except Exception as e:
        raise refuse(first_line(e)) from None
    base_params = {n: tuple(p.shape) for n, p in skel.named_parameters()}
    missing = sorted(set(expected) - set(shapes))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    extra = [k for k in sorted(set(shapes) - set(expected)) if base_params.get(_short(k)) != shapes[k]]
    if wrong:
        k = wrong[0]
        raise refuse(f"{_short(k)} is {list(shapes[k])} in the file but {list(expected[k])} here"
                     + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        raise refuse(f"{len(missing)} tensor(s) this model needs are not in the file, e.g. {_short(missing[0])}")
    if extra:
        raise refuse(f"{len(extra)} tensor(s) in the file have no place in this model, e.g. {_short(extra[0])}")


def _default_name(pm: Any, folder: Path) -> str:
    if pm is None or "default" not in pm.peft_config:
        return "default"
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in folder.resolve().name) or "adapter"
    name, i = stem, 2
    while name in pm.peft_config:
        name, i = f"{stem}_{i}", i + 1
    return name


def _read(folder: Path, allow_pickle: bool) -> tuple[dict[str, Any], Path, Any]:
    """(raw config JSON, weights file, PeftConfig) of an adapter folder; nothing executed."""
    from peft import PeftConfig

    files.recover(folder)
    raw = files.read_config(folder)
    weights = files.find_weights(folder, allow_pickle)
    pt = str(raw.get("peft_type"))
    if method_info(pt) is None:
        raise PeftMagicError(f"{folder} holds a {pt} adapter, which this peft does not know",
                             "upgrade peft, or see %peft methods")
    try:
        with stack.quiet():
            cfg = PeftConfig.from_pretrained(str(folder))
    except Exception as e:
        raise PeftMagicError(f"cannot read the adapter config in {folder}: {first_line(e)}") from None
    return raw, weights, cfg


def _check_place(pm: Any, st: ModelState, name: str, pt: str, raw: dict[str, Any], folder: Path) -> None:
    """Refuse a name that is taken, a method that cannot sit next to the model's, a prompt
    adapter without a task."""
    check_adapter_name(name)
    if pm is None:
        if method_info(pt).is_prompt_learning and raw.get("task_type") is None:
            raise PeftMagicError(f"the {pt.lower()} adapter in {folder} has no task_type",
                                 "prompt-based adapters need one (e.g. CAUSAL_LM) in adapter_config.json")
        return
    if name in pm.peft_config:
        raise PeftMagicError(f"the model already has an adapter '{name}'",
                             f"pass --name OTHER, or %peft delete {name} first")
    if pt not in {peft_view.peft_type(c) for c in pm.peft_config.values()}:
        existing = ", ".join(f"'{n}' ({method_name(c, st, n)})" for n, c in pm.peft_config.items())
        raise PeftMagicError(f"cannot load a {pt.lower()} adapter next to {existing}: peft keeps one method "
                             "per model", "%peft delete the other adapters first, or load onto a fresh model")


def _load_fresh(base: Any, st: ModelState, folder: Path, name: str, trainable: bool, safetensors: bool) -> Any:
    from peft import PeftModel

    snap = snapshot(base)
    try:
        if trainable and quantized_bits(base):
            prepare_kbit(base, st)
        with stack.quiet():
            return PeftModel.from_pretrained(base, str(folder), adapter_name=name, is_trainable=trainable,
                                             use_safetensors=safetensors)
    except Exception as e:
        restore(base, snap)
        raise PeftMagicError(f"could not load the adapter in {folder}: {first_line(e)}") from None


def _load_beside(pm: Any, folder: Path, name: str, trainable: bool, safetensors: bool) -> None:
    before_active = peft_view.active_adapters(pm)
    try:
        with stack.quiet():
            pm.load_adapter(str(folder), adapter_name=name, is_trainable=trainable, use_safetensors=safetensors)
            pm.set_adapter(name, inference_mode=not trainable)
    except Exception as e:
        with contextlib.suppress(Exception), stack.quiet():
            if name in pm.peft_config:
                pm.delete_adapter(name)
            pm.set_adapter(before_active[0])
        raise PeftMagicError(f"could not load the adapter in {folder}: {first_line(e)}") from None


def load_adapter(model: Any, path: str | Path, *, name: str | None = None, trainable: bool = False,
                 allow_pickle: bool = False) -> LifecycleResult:
    """Load a saved adapter onto ``model`` and make it the active one.

    ``model`` may be a plain model (the result is a new PeftModel: use ``result.model``)
    or a PeftModel that has adapters already (the adapter is added). The adapter is
    frozen unless ``trainable=True``. Only safetensors weights are read unless
    ``allow_pickle=True``; an adapter made for another model is refused before anything
    is changed.
    """
    stack.ensure()
    require_model(model)
    folder = Path(path).expanduser()
    raw, weights, cfg = _read(folder, allow_pickle)
    pt = str(raw.get("peft_type"))
    st = state_for(model, create=True)
    base = unwrap(model)
    pm = peft_model_for(model)
    if pm is not None and not peft_view.configs(pm):
        pm = None
    name = name or _default_name(pm, folder)
    _check_place(pm, st, name, pt, raw, folder)
    check_fits(base, cfg, files.tensor_shapes(weights), folder)

    safetensors = weights.suffix == ".safetensors"
    if pm is None:
        new = _load_fresh(base, st, folder, name, trainable, safetensors)
    else:
        new = pm
        _load_beside(pm, folder, name, trainable, safetensors)
    if st.adapters_off:
        set_on(new, st)
    method = method_name(cfg, st, None)
    st.adapters[name] = AdapterRecord(name=name, method=method, peft_type=pt, settings=changed_settings(cfg),
                                      task=peft_view.task_type(cfg))
    st.set_peft(new)
    emit_adapter(st, new, name, method, "loaded")
    n, _ = peft_view.adapter_params(new, name)
    mode = "trainable" if trainable else "frozen: --trainable to train it further"
    notes = []
    made_for, live_name = getattr(cfg, "base_model_name_or_path", None), model_name(base)
    if made_for and live_name and str(made_for) != str(live_name):
        notes.append(f"the adapter was made for {made_for} and this model is {live_name}: every tensor fits, "
                     "but check that it is the same model")
    if not safetensors:
        notes.append("loaded a pickle file because --allow-pickle was given")
    return LifecycleResult(new, "loaded", name, f"loaded {method} adapter '{name}' from {folder} "
                           f"({n:,} params, {mode}); it is the active adapter", notes, path=str(folder))
