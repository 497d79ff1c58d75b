"""Settings for methods whose values are not names or numbers, and the methods that need
them: integer lists (token ids, masks), layer pairs, X-LoRA's named experts, CPT's
token roles. Each runs the real peft method on the tiny Llama."""

from __future__ import annotations

import pytest
import torch

import peft_magic as pm
from peft_magic.errors import PeftMagicError
from peft_magic.peft_methods.coerce import coerce_value
from peft_magic.peft_methods.discovery import registry
from peft_magic.syntax.read import parse_value
from peft_magic.tasks.families import cpt_type_mask

TEXTS = ["the red cat sat on the mat", "a blue bird sang", "the sun is warm today", "dogs run fast"] * 4


def _field(peft_type: str, name: str):
    return registry()[peft_type].fields[name]


@pytest.mark.parametrize("typed", ["[5, 6, 7]", "5,6,7", "[5,6,7]", "'5,6,7'"])
def test_integer_lists_stay_integers_however_they_are_typed(typed):
    value = coerce_value("trainable_tokens", _field("TRAINABLE_TOKENS", "token_indices"), parse_value(typed))
    assert value == [5, 6, 7] and all(type(v) is int for v in value)


def test_a_single_id_is_a_list_of_one_and_layer_pairs_are_pairs_of_ints():
    assert coerce_value("trainable_tokens", _field("TRAINABLE_TOKENS", "token_indices"), 5) == [5]
    pairs = coerce_value("lora", _field("LORA", "layer_replication"), parse_value("[[0, 2], [1, 2]]"))
    assert pairs == [(0, 2), (1, 2)]
    # names stay names
    assert coerce_value("lora", _field("LORA", "target_modules"), parse_value("q_proj,v_proj")) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("peft_type,key,bad,expected", [
    ("TRAINABLE_TOKENS", "token_indices", ["a"], "expected a list of integers like [5, 6, 7], got ['a']"),
    ("TRAINABLE_TOKENS", "token_indices", 2.5, "got 2.5"),
    ("LORA", "layer_replication", [[0, 1, 2]], "expected a list of pairs like [[0, 4], [2, 5]]"),
])
def test_a_bad_list_is_one_line_naming_the_key(peft_type, key, bad, expected):
    with pytest.raises(PeftMagicError) as err:
        coerce_value(peft_type.lower(), _field(peft_type, key), bad)
    msg = str(err.value)
    assert "\n" not in msg and f"'{key}'" in msg and expected in msg


def test_trainable_tokens_trains_exactly_the_tokens_named(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    loaded = pm.load("tiny-llama")
    wanted = sorted(set(loaded.tokenizer("the red cat")["input_ids"]))[:3]  # tokens the data has
    model = pm.attach(AutoModelForCausalLM.from_pretrained(tiny_llama_path), "trainable_tokens",
                      token_indices=parse_value(",".join(map(str, wanted)))).model
    emb = model.get_input_embeddings()
    before = emb.weight.detach().clone()
    run = pm.train(model, TEXTS, tokenizer=loaded.tokenizer, steps=3, lr=1e-2, display=None)
    assert run.status == "completed"
    with torch.no_grad():
        after = emb(torch.arange(before.shape[0]))
    changed = {i for i in range(before.shape[0]) if not torch.equal(after[i], before[i])}
    assert changed == set(wanted)


def test_cpt_token_roles_put_the_rows_labels_where_cpt_counts_them():
    labels = torch.tensor([[-100, -100, 11, 12, -100]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    for offset in range(1, 9):  # the context's largest type id
        mask = cpt_type_mask(labels, attention, offset)
        shifted = torch.where(mask > 0, mask + offset, mask)  # what CPT does with it
        counted = (shifted > 0) & (shifted % 4 == 0)
        assert counted.tolist() == [[False, False, True, True, False]], offset
        assert mask[0, 4] == 0 and all(1 <= int(v) <= 4 for v in mask[0, :4])


def test_cpt_learns_from_plain_rows_instead_of_reporting_zero_loss():
    """Without the token roles every label is masked: the run 'completes' with loss 0.0."""
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "cpt", cpt_token_ids=[5, 6, 7, 8]).model
    run = pm.train(model, TEXTS, tokenizer=loaded.tokenizer, steps=12, lr=3e-2, display=None)
    losses = [loss for _, loss in run.losses]
    assert run.status == "completed" and losses[0] > 1.0
    assert min(losses[-3:]) < losses[0]


def test_xlora_takes_experts_under_any_names_trains_and_refuses_a_save_that_would_lose_its_gating(
        tiny_llama_path, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = pm.load("tiny-llama")
    experts = {}
    for name in ("formal", "casual"):
        expert = pm.attach(AutoModelForCausalLM.from_pretrained(tiny_llama_path), "lora", r=4).model
        pm.train(expert, TEXTS, tokenizer=loaded.tokenizer, steps=2, display=None)
        pm.save(expert, tmp_path / name)
        experts[name] = str(tmp_path / name)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    assert base.config.use_cache
    with pytest.raises(PeftMagicError, match="cannot attach xlora"):  # a failed attach changes nothing
        pm.attach(base, "xlora", adapters={"formal": str(tmp_path / "formal"), "missing": str(tmp_path / "nope")})
    assert base.config.use_cache and not any("lora" in n for n, _ in base.named_modules())
    result = pm.attach(base, "xlora", adapters=experts)  # peft itself fails on names other than "0", "1"
    assert "turned the model's cache off" in repr(result) and result.model.config.use_cache is False
    model = result.model
    gate_size = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert "targeted 4 modules: q_proj ×2, v_proj ×2" in repr(result)  # its experts' layers
    row = next(r for r in pm.adapters(model).rows if r.name == "default")
    assert row.method == "xlora" and row.trainable == gate_size > 0  # its own part: the gate
    assert pm.show(model).dtype == "float32" and pm.show(model).footprint > 0
    gate = [p for n, p in model.named_parameters() if p.requires_grad]
    before = [p.detach().clone() for p in gate]
    run = pm.train(model, TEXTS, tokenizer=loaded.tokenizer, steps=3, lr=1e-2, display=None)
    assert run.status == "completed" and run.method == "xlora"
    assert any(not torch.equal(a, b) for a, b in zip(before, gate))  # the gating learned
    assert "[active] default: xlora" in repr(pm.show(model))
    with pytest.raises(PeftMagicError, match="xlora adapters cannot be saved") as err:
        pm.save(model, tmp_path / "mix")
    assert "\n" not in str(err.value) and not (tmp_path / "mix").exists()
    with pytest.raises(PeftMagicError, match="cannot train with gradient checkpointing"):
        pm.train(model, TEXTS, tokenizer=loaded.tokenizer, steps=1, display=None, checkpointing=True)
