"""Generation with adapters: prompt-learning adapters decode correctly with the cache on,
compare shows base and adapters side by side, the chat template is used for instruct models."""

from __future__ import annotations

import pytest
import torch

import peft_magic as pm
from peft_magic.errors import PeftMagicError

TEXT = "the cat sat on the mat and the dog ran to the park . " * 4


def _train_prompt_adapter(method: str, steps: int = 15, lr: float = 0.1, **settings):
    """A tiny-llama with a prompt-learning adapter trained (plain torch loop) on one text."""
    loaded = pm.load("tiny-llama")
    tok = loaded.tokenizer
    model = pm.attach(loaded.model, method, **settings).model
    ids = tok(TEXT, return_tensors="pt").input_ids
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    torch.manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses  # it learned something
    return model, tok


def _reference_greedy(model, tok, prompt: str, n: int) -> list[int]:
    """Cache-free greedy decode: the PeftModel's forward over the whole sequence at each step."""
    ids = tok(prompt, return_tensors="pt").input_ids
    seq = ids
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits[:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("method,settings", [("prefix", {"tokens": 8}), ("prompt", {"tokens": 8, "lr": 1.0}),
                                             ("p-tuning", {"tokens": 8, "lr": 0.3})])
def test_prompt_learning_generation_matches_cache_free_reference(method, settings):
    model, tok = _train_prompt_adapter(method, **settings)
    prompt = "the cat sat"
    res = pm.generate(model, prompt, tokenizer=tok, compare=True, chat=False, max_new_tokens=12,
                      eos_token_id=None)
    base, adapter = res.outputs
    assert base.adapter is None and adapter.adapter == "default"
    reference = _reference_greedy(model, tok, prompt, len(adapter.token_ids))
    assert adapter.token_ids == reference  # token for token
    assert adapter.token_ids != base.token_ids  # the adapter changes what the model says
    # the base column is the base model: the same as generating with the adapters off
    with model.disable_adapter():
        ids = tok(prompt, return_tensors="pt").input_ids
        plain = model.get_base_model().generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                max_new_tokens=12, do_sample=False,
                                                pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    assert base.token_ids == plain[:len(base.token_ids)]
    # generating did not change what trains
    assert any(p.requires_grad for p in model.parameters())


def test_sampling_is_reproducible_with_a_seed_and_chat_template_is_used():
    loaded = pm.load("tiny-llama")
    tok = loaded.tokenizer
    assert tok.chat_template  # the built-in tiny model is set up like an instruct model
    model = pm.attach(loaded.model, "lora", r=4).model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    a = pm.generate(model, "hello there", tokenizer=tok, temperature=0.9, max_new_tokens=10, seed=3)
    b = pm.generate(model, "hello there", tokenizer=tok, temperature=0.9, max_new_tokens=10, seed=3)
    assert a.chat is True
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    # with the template the model sees something else than the raw prompt
    raw = pm.generate(model, "hello there", tokenizer=tok, chat=False, max_new_tokens=10)
    templ = pm.generate(model, "hello there", tokenizer=tok, max_new_tokens=10)
    assert raw.chat is False and templ.chat is True
    text = tok.apply_chat_template([{"role": "user", "content": "hello there"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        direct = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    assert templ.outputs[0].token_ids == direct[:len(templ.outputs[0].token_ids)]


def test_compare_two_lora_adapters_side_by_side_and_active_adapter_restored():
    loaded = pm.load("tiny-llama")
    tok = loaded.tokenizer
    model = pm.attach(loaded.model, "lora", r=4).model
    model = pm.attach(model, "lora", r=4, name="other").model
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0)
    pm.use_adapter(model, "default")
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    res = pm.generate(model, "a b c", tokenizer=tok, compare=True, chat=False, max_new_tokens=8,
                      eos_token_id=None)
    labels = [o.label for o in res.outputs]
    assert labels == ["base model", "default (lora)", "other (lora)"]
    assert res.outputs[1].token_ids != res.outputs[2].token_ids
    assert model.active_adapter == "default"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    html = res._repr_html_()
    assert "default (lora)" in html and "other (lora)" in html and "base model" in html
    assert "── other (lora)" in repr(res)


def test_bad_generation_settings_are_one_line():
    loaded = pm.load("tiny-llama")
    with pytest.raises(PeftMagicError, match="unknown generation setting 'max_new_tokns': did you mean "
                                             "'max_new_tokens'"):
        pm.generate(loaded.model, "hi", tokenizer=loaded.tokenizer, max_new_tokns=5)
    with pytest.raises(PeftMagicError, match="needs the model's tokenizer"):
        pm.generate(loaded.model, "hi")
    with pytest.raises(PeftMagicError, match="prompt is empty"):
        pm.generate(loaded.model, "  ", tokenizer=loaded.tokenizer)
