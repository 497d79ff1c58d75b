"""The base with the adapter merged in, as a transformers folder.

Both the ``merged`` export and the GGUF converter start from this folder: safetensors
weights, ``config.json``, the tokenizer with its chat template, and a
``generation_config.json`` whose eos / pad ids are filled from the tokenizer where the
model had none — so ``AutoModelForCausalLM`` + ``generate`` stop where the notebook's
model stops, with no peft installed.

The notebook's model is left exactly as it was: the merge is done one layer at a time
into a state dict (``peft_view.merged_state_dict``), and a 4/8-bit base is merged on a
full-precision twin (``dequantize``), never into its rounded weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import stack, peft_view
from .. import state as state_mod
from ..adapter_ops.find import method_name, pick_adapter
from ..errors import PeftMagicError
from ..fmt import fmt_bytes
from ..model.properties import count_params, model_name, quantized_bits, require_model
from ..model.quantized import dequantized_bytes
from ..peft_methods.discovery import method_info
from ..peft_methods.fields import changed_settings
from ..state import peft_model_for, state_for, unwrap
from .dequantize import check_host_memory, dequantized_twin


@dataclass
class MergeSource:
    """What an export merges, decided (and checked) before anything is written."""

    model: Any
    base: Any  # the plain base model (peft's layers injected, if any)
    peft_model: Any  # None: a plain model, exported as it is
    adapter: str | None
    method: str | None
    peft_type: str | None
    bits: int | None
    base_name: str
    runs: list[Any] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    merged_before: list[str] = field(default_factory=list)

    @property
    def weights(self) -> int:
        """How many weights the exported model has (a 4-bit weight counted as one)."""
        return count_params(self.base) - (peft_view.adapter_params(self.peft_model, self.adapter)[0]
                                          if self.peft_model is not None else 0)

    @property
    def full_bytes(self) -> int:
        """Bytes of the merged weights in full precision (what the merged folder holds)."""
        extra = peft_view.adapter_params(self.peft_model, self.adapter)[0] * 4 if self.peft_model is not None else 0
        return max(dequantized_bytes(self.base) - extra, 0)

    @property
    def architecture(self) -> str:
        archs = getattr(getattr(self.base, "config", None), "architectures", None) or []
        return archs[0] if archs else type(self.base).__name__


def source(model: Any, name: str | None = None) -> MergeSource:
    """The adapter to merge (``name``, default the active one) and why it cannot be, in one line."""
    stack.ensure()
    require_model(model)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    base = unwrap(model)
    base_name = str(model_name(base) or st.source or type(base).__name__)
    if pm is None or not peft_view.configs(pm):
        return MergeSource(model, base, None, None, None, None, quantized_bits(base), base_name,
                           merged_before=list(st.merged))
    name = pick_adapter(pm, name)
    cfg = pm.peft_config[name]
    pt = peft_view.peft_type(cfg)
    method = method_name(cfg, st, name)
    info = method_info(pt)
    if info is None or not info.can_merge:
        raise PeftMagicError(f"{method} adapters cannot be merged into the weights, so there is no model to export: "
                             "nothing was written", "save the adapter itself: %peft save DIR")
    runs = [r for r in state_mod.runs() if r.model_id == st.model_id and r.adapter == name]
    settings = dict(st.adapters[name].settings) if name in st.adapters else changed_settings(cfg)
    base_model = str(getattr(cfg, "base_model_name_or_path", None) or base_name)
    return MergeSource(model, pm.get_base_model(), pm, name, method, pt, quantized_bits(pm.get_base_model()),
                       base_model, runs, settings, list(st.merged))


def write(src: MergeSource, folder: Path, tokenizer: Any) -> list[str]:
    """Write the merged model and ``tokenizer`` into ``folder``; returns notes for the user."""
    notes: list[str] = []
    if src.peft_model is None:
        model, state_dict = src.base, None
        if not src.merged_before:
            notes.append("the model has no adapter: it was exported as it is")
    elif src.bits:
        need = check_host_memory(src.base, src.bits)
        twin = dequantized_twin(src.base)
        again = peft_view.reattach(twin, copy.deepcopy(src.peft_model.peft_config[src.adapter]),
                                   peft_view.adapter_state(src.peft_model, src.adapter), src.adapter)
        model, state_dict = again.get_base_model(), peft_view.merged_state_dict(again, src.adapter)
        dtype = str(next(iter(state_dict.values())).dtype).replace("torch.", "") if state_dict else "?"
        notes.append(f"the {src.bits}-bit base was dequantized to {dtype} ({fmt_bytes(need)}) before merging: "
                     f"the adapter was merged into full-precision weights, not rounded ones")
    else:
        model, state_dict = src.base, peft_view.merged_state_dict(src.peft_model, src.adapter)
    folder.mkdir(parents=True, exist_ok=True)
    with stack.quiet():
        model.save_pretrained(str(folder), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
    _drop_quantization(folder)
    _fill_generation_config(folder, model, tokenizer)
    return notes


def _drop_quantization(folder: Path) -> None:
    """A merged model is full precision: no ``quantization_config`` may claim otherwise."""
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if "quantization_config" in data:
        data.pop("quantization_config")
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fill_generation_config(folder: Path, model: Any, tokenizer: Any) -> None:
    """eos / pad / bos ids from the tokenizer where the model's generation config has none."""
    from transformers import GenerationConfig

    path = folder / "generation_config.json"
    if path.exists():
        gen = GenerationConfig.from_pretrained(str(folder))
    elif getattr(model, "can_generate", lambda: False)():
        gen = GenerationConfig.from_model_config(model.config)
    else:
        return
    changed = False
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        tid = getattr(tokenizer, key, None)
        if getattr(gen, key, None) is None and tid is not None:
            setattr(gen, key, tid)
            changed = True
    if gen.pad_token_id is None and gen.eos_token_id is not None:
        eos = gen.eos_token_id
        gen.pad_token_id = eos[0] if isinstance(eos, list) else eos
        changed = True
    if changed or not path.exists():
        with stack.quiet():
            gen.save_pretrained(str(folder))
