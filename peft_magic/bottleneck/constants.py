"""Where bottleneck adapters go in each architecture, as plain data (no heavy imports).

Why a table per ``model_type`` (like peft's ``TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING``):
"after the attention output" and "after the MLP output" are different layer names in
every family — ``o_proj`` / ``down_proj`` (Llama), ``attn.c_proj`` / ``mlp.c_proj``
(GPT-2, Conv1D), ``attention.output.dense`` / ``output.dense`` (BERT). The values use
peft's own ``target_modules`` semantics, so they are stored verbatim in
``adapter_config.json`` and mean the same thing when the adapter is loaded again:

* a list of names matches modules whose full name ends with ``.NAME``;
* a string is a regular expression that must match the whole module name. BERT-like
  models need one: their MLP output ``layer.N.output.dense`` is also a suffix of the
  attention output ``layer.N.attention.output.dense``.

Architectures not listed fall back to :data:`FALLBACK`, regexes over the usual spellings,
checked against the model before use (an error names the model type when they find
nothing, and ``target_modules`` always overrides the table).
"""

from __future__ import annotations

#: placement → what it adapts
PLACEMENTS: dict[str, str] = {
    "houlsby": "after the attention output and after the MLP output of every layer (Houlsby et al., 2019)",
    "pfeiffer": "after the MLP output of every layer only (Pfeiffer et al., 2021): half the adapters",
}

_LLAMA_LIKE = {"houlsby": ["o_proj", "down_proj"], "pfeiffer": ["down_proj"]}
_GPT2_LIKE = {"houlsby": ["attn.c_proj", "mlp.c_proj"], "pfeiffer": ["mlp.c_proj"]}
_BERT_LIKE = {
    "houlsby": r"(?:.*\.)?layer\.\d+\.(?:attention\.output|output)\.dense",
    "pfeiffer": r"(?:.*\.)?layer\.\d+\.output\.dense",
}
_NEOX_LIKE = {"houlsby": ["attention.dense", "mlp.dense_4h_to_h"], "pfeiffer": ["mlp.dense_4h_to_h"]}
_BLOOM_LIKE = {"houlsby": ["self_attention.dense", "mlp.dense_4h_to_h"], "pfeiffer": ["mlp.dense_4h_to_h"]}
_BART_LIKE = {"houlsby": ["self_attn.out_proj", "fc2"], "pfeiffer": ["fc2"]}

#: model_type → {placement → target_modules}
TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING: dict[str, dict[str, list[str] | str]] = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                                "olmo2", "granite", "cohere", "smollm3", "stablelm", "phi3")},
    **{t: _GPT2_LIKE for t in ("gpt2", "gpt_bigcode")},
    "starcoder2": {"houlsby": ["self_attn.o_proj", "mlp.c_proj"], "pfeiffer": ["mlp.c_proj"]},
    "gpt_neo": {"houlsby": ["attention.out_proj", "mlp.c_proj"], "pfeiffer": ["mlp.c_proj"]},
    "gptj": {"houlsby": ["attn.out_proj", "mlp.fc_out"], "pfeiffer": ["mlp.fc_out"]},
    "gpt_neox": _NEOX_LIKE,
    "falcon": _BLOOM_LIKE,
    "bloom": _BLOOM_LIKE,
    "phi": {"houlsby": ["self_attn.dense", "mlp.fc2"], "pfeiffer": ["mlp.fc2"]},
    "opt": _BART_LIKE,
    "bart": _BART_LIKE,
    "mbart": _BART_LIKE,
    **{t: _BERT_LIKE for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2",
                               "ernie")},
    "distilbert": {"houlsby": ["attention.out_lin", "ffn.lin2"], "pfeiffer": ["ffn.lin2"]},
    "t5": {"houlsby": ["SelfAttention.o", "DenseReluDense.wo"], "pfeiffer": ["DenseReluDense.wo"]},
    "mt5": {"houlsby": ["SelfAttention.o", "DenseReluDense.wo"], "pfeiffer": ["DenseReluDense.wo"]},
}

_ATTN_OUT = (r"(?:self_attn|self_attention|attn|attention|SelfAttention)\."
             r"(?:o_proj|out_proj|c_proj|dense|o|out_lin|output\.dense)")
_MLP_OUT = (r"(?:mlp|ffn|feed_forward|DenseReluDense)\."
            r"(?:down_proj|c_proj|fc2|fc_out|dense_4h_to_h|wo|w2|lin2)")

#: placement → (regex for the attention output or None, regex for the MLP output)
FALLBACK: dict[str, tuple[str | None, str]] = {
    "houlsby": (rf"(?:.*\.)?{_ATTN_OUT}", rf"(?:.*\.)?{_MLP_OUT}"),
    "pfeiffer": (None, rf"(?:.*\.)?{_MLP_OUT}"),
}


def default_target_modules(model_type: str | None, placement: str = "houlsby") -> list[str] | str | None:
    """The ``target_modules`` a placement means for ``model_type``, or ``None`` when the
    architecture is not in the table (the tuner then searches the model with :data:`FALLBACK`)."""
    entry = TRANSFORMERS_MODELS_TO_BOTTLENECK_TARGET_MODULES_MAPPING.get(model_type or "")
    if entry is None:
        return None
    value = entry[placement]
    return list(value) if isinstance(value, list) else value
