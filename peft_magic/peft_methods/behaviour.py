"""Per-method knowledge that peft's registry does not hold, in one table.

peft's registry says which methods exist and what their configs look like. What it does
not say — and what attaching, training, merging, the panel and ``%peft methods`` need —
lives here, one :class:`Behaviour` per peft type, so a fact about a method is written once:

* a one-line description for ``%peft methods`` and the panel;
* its family (the panel groups methods by it) where the name does not tell;
* a learning rate that works for a quick experiment;
* overrides of what peft's classes suggest about merging and 4/8-bit bases;
* settings without which the method cannot do anything (peft's defaults are placeholders);
* whether gradient checkpointing can train it (a prefix kept in the attention cache cannot:
  checkpointed layers run without a cache);
* :func:`adaptive_defaults`: defaults that fit *this* model where peft's fixed defaults
  would fail (block sizes that must divide the layer width, token counts with no default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError

LORA_FAMILY, PROMPT_BASED, OTHER = "LoRA family", "prompt-based", "other"
FAMILIES = (LORA_FAMILY, PROMPT_BASED, OTHER)

#: learning rates by kind (see default_lr's docstring for the sources)
_LR_LOW_RANK, _LR_SOFT_PROMPT, _LR_PREFIX, _LR_SCALING, _LR_SMALL = 2e-4, 3e-2, 1e-2, 3e-3, 1e-3


@dataclass(frozen=True)
class Behaviour:
    """What peft_magic knows about one method beyond peft's registry."""

    description: str = ""
    family: str | None = None  # None: decided by the name (…LORA → LoRA family) and prompt learning
    lr: float | None = None  # None: the low-rank default
    can_merge: bool | None = None  # None: read from peft's layer classes
    kbit: bool | None = None  # None: read from peft (a bnb module for the method)
    required: dict[str, tuple[str, str]] = field(default_factory=dict)  # setting → (what it is, example)
    virtual_tokens: bool = False  # puts trainable tokens into the input sequence (every real label is predicted)
    task_ids: bool = False  # its forward needs task_ids (one per example; a single task is id 0)
    token_types: bool = False  # its loss reads input_type_mask (CPT: each token's role)
    no_checkpointing: str = ""  # why gradient checkpointing cannot train it (empty: it can)
    no_save: str = ""  # why peft cannot save what training learned (empty: it can)
    cache_off: bool = False  # peft refuses it on a model whose config has use_cache=True
    reallocates_ranks: bool = False  # its rank budget moves during training: update_and_allocate each step
    gated: bool = False  # its own part is a gating classifier; its layers are its experts' (X-LoRA)
    #: how to call an attached config (``dora`` / ``qlora`` for LoRA's variants): (config, bits) → name
    name: Callable[[Any, int | None], str] | None = None
    #: ``%peft plan``'s row name for a config: (config, quantized, dtype label) → "LoRA r=8 (bf16)"
    label: Callable[[Any, bool, str], str] | None = None
    #: its default targets for an architecture when they are not peft's (model_type → names)
    default_targets: Callable[[str], list[str] | None] | None = None


#: why the cache-prefix methods cannot use gradient checkpointing (checked: tests/test_speed.py)
_PREFIX_IN_CACHE = ("its prefix lives in the attention cache, and checkpointed layers run without a cache "
                    "(the prefix would be dropped)")


def _q(description: str = "", **kw: Any) -> Behaviour:
    return Behaviour(description, **kw)


def _lora_name(cfg: Any, bits: int | None) -> str:
    return "dora" if getattr(cfg, "use_dora", False) else ("qlora" if bits else "lora")


def _lora_label(cfg: Any, quantized: bool, dtype: str) -> str:
    extra = " DoRA" if getattr(cfg, "use_dora", False) else ""
    r = getattr(cfg, "r", None)
    return f"QLoRA r={r}{extra} (4-bit NF4)" if quantized else f"LoRA r={r}{extra} ({dtype})"


def _tokens_label(kind: str) -> Callable[[Any, bool, str], str]:
    def label(cfg: Any, quantized: bool, dtype: str) -> str:
        return f"{kind} ({getattr(cfg, 'num_virtual_tokens', '?')} tokens, {dtype})"
    return label


def _bottleneck_label(cfg: Any, quantized: bool, dtype: str) -> str:
    placement = str(getattr(cfg, "placement", "") or "").capitalize()  # Houlsby and Pfeiffer differ
    size = getattr(cfg, "bottleneck_size", None)
    width = f"size {size}" if size else (f"d/{cfg.reduction_factor}" if getattr(cfg, "reduction_factor", None)
                                         else "")
    return f"{placement + ' ' if placement else ''}bottleneck adapters{f' ({width})' if width else ''} ({dtype})"


def _bottleneck_targets(model_type: str) -> list[str] | None:
    from ..bottleneck import default_target_modules

    t = default_target_modules(model_type)
    return [t] if isinstance(t, str) else (list(t) if t is not None else None)


BEHAVIOURS: dict[str, Behaviour] = {
    "LORA": _q("Low-rank update matrices (A·B) added to chosen layers; the default choice.", name=_lora_name,
               label=_lora_label),
    "ADALORA": _q("LoRA whose rank budget is re-allocated across layers during training.", reallocates_ranks=True),
    "LOHA": _q("Low-rank Hadamard product update (LyCORIS); higher rank per parameter than LoRA.", family=LORA_FAMILY),
    "LOKR": _q("Low-rank Kronecker product update (LyCORIS); very few parameters.", family=LORA_FAMILY),
    "VERA": _q("Shared frozen random matrices with small trainable scaling vectors per layer.", family=LORA_FAMILY,
               lr=_LR_SMALL),
    "PVERA": _q("Probabilistic VeRA: VeRA with a learned distribution over the scaling vectors.",
                family=LORA_FAMILY, lr=_LR_SMALL),
    "DELORA": _q("Decoupled LoRA: LoRA with a bounded, normalised update strength."),
    "GRALORA": _q("Granular LoRA: the weight split into blocks, each with its own small LoRA."),
    "RANDLORA": _q("Full-rank update from a sum of shared random low-rank bases with trainable scales."),
    "VBLORA": _q("LoRA built from a shared vector bank, composed with learned top-k mixtures.", lr=_LR_SMALL),
    "UNILORA": _q("LoRA whose parameters are all drawn from one shared trainable vector.", lr=_LR_SMALL),
    "TINYLORA": _q("An extremely small LoRA variant for tight parameter budgets.", lr=_LR_SMALL),
    "HIRA": _q("High-rank adaptation: a Hadamard product of low-rank matrices with the frozen weight.",
               family=LORA_FAMILY),
    "GLORA": _q("Generalised LoRA: learned scaling, shift and low-rank terms per layer."),
    "LILY": _q("Low-rank interconnected adapters shared across layers through a router.", family=LORA_FAMILY),
    "XLORA": _q("Mixture of already-trained LoRA experts with a learned per-token gating.", can_merge=False,
                cache_off=True, gated=True,
                required={"adapters": ("the already-trained LoRA adapters to mix", "adapters={'a': './lora_a'}")},
                no_checkpointing=("its gating runs the model twice per step (a scaling pass with the experts off, "
                                  "then the real one), so a recomputed layer does not repeat what it saved"),
                no_save=("peft saves its experts but not its trained gating classifier (the adapter's state dict "
                         "is empty), so it would load back untrained")),
    "SHIRA": _q("Sparse high-rank adapter: trains a sparse subset of the frozen weights.", family=LORA_FAMILY),
    "MISS": _q("Matrix shard sharing: a cheap structured update shared within each weight.", family=LORA_FAMILY),
    "PEANUT": _q("Weight-aware LoRA-like adapter whose update depends on the frozen weight.", family=LORA_FAMILY),
    "DEFT": _q("Decompositional efficient fine-tuning of the weight matrices.", family=LORA_FAMILY),
    "PROMPT_TUNING": _q("Learns virtual token embeddings prepended to every input (soft prompt).", virtual_tokens=True,
                        lr=_LR_SOFT_PROMPT, label=_tokens_label("prompt tuning")),
    "MULTITASK_PROMPT_TUNING": _q("One shared soft prompt plus a low-rank per-task component.", lr=_LR_SOFT_PROMPT,
                                  virtual_tokens=True, task_ids=True),
    "P_TUNING": _q("Soft prompt produced by a small trainable encoder (MLP or LSTM).", lr=_LR_SOFT_PROMPT,
                   virtual_tokens=True, label=_tokens_label("p-tuning")),
    "PREFIX_TUNING": _q("Learns key/value vectors prepended at every attention layer.", lr=_LR_PREFIX,
                        no_checkpointing=_PREFIX_IN_CACHE, label=_tokens_label("prefix tuning")),
    "ADAPTION_PROMPT": _q("LLaMA-Adapter: gated prompts added to the top attention layers.", family=PROMPT_BASED,
                          lr=_LR_PREFIX, can_merge=False),
    "CPT": _q("Context-aware prompt tuning for few-shot in-context examples.", family=PROMPT_BASED, lr=_LR_PREFIX,
              virtual_tokens=True, token_types=True,
              required={"cpt_token_ids": ("the token ids of the in-context examples", "cpt_token_ids=[...]")}),
    "CARTRIDGE": _q("A trained KV-cache prefix (cartridge) that compresses a long context.", family=PROMPT_BASED,
                    lr=_LR_PREFIX, no_checkpointing=_PREFIX_IN_CACHE),
    "IA3": _q("Learned rescaling vectors for keys, values and feed-forward activations; tiny.", lr=_LR_SCALING),
    "BOFT": _q("Butterfly-factorised orthogonal transform of the frozen weights."),
    "OFT": _q("Orthogonal fine-tuning: block-diagonal orthogonal transform of the weights."),
    "HRA": _q("Householder reflections applied to the frozen weights."),
    "FOURIERFT": _q("Trains a few spectral coefficients of the weight update (Fourier domain).", lr=_LR_SMALL),
    "WAVEFT": _q("Trains sparse wavelet coefficients of the weight update.", lr=_LR_SMALL),
    "C3A": _q("Circular convolution adapter: block-circulant weight updates via FFT."),
    "LN_TUNING": _q("Trains only the LayerNorm / RMSNorm parameters.", lr=_LR_SCALING),
    "BEFT": _q("Bias-efficient fine-tuning: trains added bias terms of value projections.", lr=_LR_SCALING),
    "FROD": _q("Hierarchical joint decomposition of layer weights with a small trained core.", family=LORA_FAMILY),
    "OSF": _q("Orthogonal subspace fine-tuning for continual learning."),
    "ROAD": _q("Rotation adapter: trains 2-D rotations of the weight outputs."),
    "TRAINABLE_TOKENS": _q("Trains only selected rows of the token embedding (e.g. new tokens).",
                           required={"token_indices": ("the ids of the tokens to train", "token_indices=[5,6,7]")}),
    "POLY": _q("Polytropon: a per-task routed mixture of LoRA modules (needs task ids).", can_merge=False,
               task_ids=True,
               no_checkpointing="its task ids reach the layers through hooks that exist only during the forward "
                                "call, and the backward pass's recompute runs without them"),
    "SHADOW": _q("A parallel shadow network alongside the frozen layers."),
    "SUPERTUNING": _q("Super-tuning: a small set of supervised tuning parameters."),
    "PSOFT": _q("Orthogonal fine-tuning in the principal subspace of the weights."),
    "ADAMSS": _q("Adaptive multi-subspace adapters (needs scikit-learn)."),
    # our adapters sit beside the (possibly quantized) layers and never touch their weights
    "BOTTLENECK": _q("Houlsby / Pfeiffer bottleneck adapters after attention and/or MLP outputs.", lr=_LR_SMALL,
                     can_merge=False, kbit=True, label=_bottleneck_label, default_targets=_bottleneck_targets),
}

_NONE = Behaviour()


def behaviour(peft_type: str) -> Behaviour:
    """What we know of ``peft_type`` (an empty record for methods we know nothing special of)."""
    return BEHAVIOURS.get(peft_type, _NONE)


def family_of(peft_type: str, is_prompt_learning: bool) -> str:
    """The panel's group for a method: its row's, else by its name and kind."""
    q = behaviour(peft_type)
    if q.family:
        return q.family
    if is_prompt_learning:
        return PROMPT_BASED
    return LORA_FAMILY if "LORA" in peft_type else OTHER


def default_lr(peft_type: str, method: str | None = None) -> float:
    """Learning rates that work for a quick experiment, by method — or the notebook's own
    (``%config PeftMagic.learning_rates = {'lora': 1e-3}``, by alias or peft type).

    Low-rank updates like 2e-4 (the QLoRA paper's and peft's examples); prompt-based
    methods train a few embeddings from scratch and need 1e-2 – 3e-2; IA3 scales
    activations (3e-3 in its paper); bottleneck adapters 1e-3 (Houlsby et al.).
    """
    from ..settings import method_lr

    return method_lr((method or "", peft_type)) or behaviour(peft_type).lr or _LR_LOW_RANK


#: tasks whose token-level targets peft's prompt-learning models do not shift past the virtual
#: tokens (token labels, answer start/end positions), so training would learn the wrong positions
NO_PROMPT_LEARNING = {"TOKEN_CLS": "token classification", "QUESTION_ANS": "extractive question answering"}


def check_required(spec: Any, kwargs: dict[str, Any], model_config: Any) -> None:
    """One line for a setting the method cannot work without, or a model or task it cannot take."""
    task = str(getattr(kwargs.get("task_type"), "value", kwargs.get("task_type")) or "")
    if spec.info.is_prompt_learning and task in NO_PROMPT_LEARNING:
        raise PeftMagicError(f"peft's {spec.requested} does not support {NO_PROMPT_LEARNING[task]}: its "
                             "prompt-based models leave token-level targets (tags, answer positions) misaligned",
                             "use lora, ia3 or bottleneck adapters for this task")
    for key, (what, example) in behaviour(spec.info.peft_type).required.items():
        if not kwargs.get(key):
            raise PeftMagicError(f"{spec.requested} needs {key}: {what}", f"e.g. %peft {spec.requested} {example}")


def peft_workarounds(peft_type: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Settings rewritten around a known peft bug, so the method works as documented.

    X-LoRA loads the ``adapters`` it is given under the names ``"0"``, ``"1"``, … but then
    activates them by the dict's own keys, so any other key fails at the first forward
    (``KeyError``). Its experts are only ever addressed by position, so the keys become
    their positions here.
    """
    adapters = kwargs.get("adapters")
    if peft_type == "XLORA" and isinstance(adapters, dict):
        return {**kwargs, "adapters": {str(i): path for i, path in enumerate(adapters.values())}}
    return kwargs


# ----------------------------------------------------------------------------- adaptive defaults


def _linear_dims(model_config: Any) -> list[int]:
    """Hidden and intermediate widths of a transformers config (what layer sizes divide)."""
    dims = []
    for attr in ("hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "d_ff"):
        v = getattr(model_config, attr, None)
        if isinstance(v, int) and v > 0:
            dims.append(v)
    heads = getattr(model_config, "num_attention_heads", None)
    kv = getattr(model_config, "num_key_value_heads", None)
    hidden = getattr(model_config, "hidden_size", None)
    if isinstance(heads, int) and isinstance(kv, int) and isinstance(hidden, int) and heads:
        dims.append(hidden // heads * kv)
    return dims


def _largest_pow2_divisor(dims: list[int], cap: int) -> int:
    g = 0
    for d in dims:
        g = math.gcd(g, d)
    p = 1
    while p * 2 <= cap and g % (p * 2) == 0:
        p *= 2
    return p


def _size_defaults(pt: str, fields: dict[str, Any], want: Any, dims: list[int]) -> dict[str, Any]:
    """Block / vector sizes must divide the layer widths; peft's defaults (256, 64) do not
    divide e.g. SmolLM2's 576 or a tiny test model's 64."""
    d: dict[str, Any] = {}
    for method, key, cap in (("VBLORA", "vector_length", 256), ("C3A", "block_size", 256), ("ROAD", "group_size", 64)):
        if pt == method and want(key):
            d[key] = _largest_pow2_divisor(dims, min(cap, fields[key].default or cap))
    smallest = min(dims)
    if pt == "WAVEFT" and want("n_frequency"):
        d["n_frequency"] = min(fields["n_frequency"].default or 2592, max(1, smallest * smallest // 4))
    if pt == "SHIRA" and want("r"):
        d["r"] = min(fields["r"].default or 32, max(1, smallest // 4))
    return d


def adaptive_defaults(spec: Any, model_config: Any, explicit: dict[str, Any], layer_count: int | None) -> dict:
    """Defaults that fit this model where peft's fixed defaults would fail or be useless.

    Only fields the user did not set are filled; each rule says why in a comment.
    """
    fields = spec.info.fields
    pt = spec.info.peft_type
    d: dict[str, Any] = {}
    dims = _linear_dims(model_config) if model_config is not None else []

    def want(name: str) -> bool:
        return name in fields and name not in explicit and name not in spec.preset

    # Prompt methods: peft has no default token count (None), which crashes at attach.
    if want("num_virtual_tokens") and fields["num_virtual_tokens"].default is None:
        d["num_virtual_tokens"] = 20
    if pt == "P_TUNING" and want("encoder_hidden_size") and dims:
        d["encoder_hidden_size"] = dims[0]
    # LLaMA-Adapter: peft requires explicit length and layer count.
    if pt == "ADAPTION_PROMPT":
        if want("adapter_len") and fields["adapter_len"].default is None:
            d["adapter_len"] = 10
        if want("adapter_layers") and fields["adapter_layers"].default is None:
            n = getattr(model_config, "num_hidden_layers", None) or layer_count or 1
            d["adapter_layers"] = max(1, min(n, 8))
    # AdaLoRA needs the schedule length up front; training overrides it with the real one.
    if pt == "ADALORA" and want("total_step") and fields["total_step"].default is None:
        d["total_step"] = 1000
    # X-LoRA's gating network needs the model's width.
    if pt == "XLORA" and want("hidden_size") and model_config is not None:
        d["hidden_size"] = getattr(model_config, "hidden_size", None)
    if dims:
        d.update(_size_defaults(pt, fields, want, dims))
    return d
