"""Evaluating and generating with a prompt method writes no warning of the stack's into the
notebook: peft passes ``past_key_values`` on every forward, which transformers calls
deprecated; a user cannot act on it, and %peft compare with lr=auto evaluates many times."""

from __future__ import annotations

import warnings

import peft_magic as pm


def test_evaluate_and_generate_with_prefix_tuning_warn_nothing():
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "prefix").model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pm.evaluate(model, ["the cat sat on the mat"] * 4, tokenizer=loaded.tokenizer)
        pm.generate(model, "the cat", tokenizer=loaded.tokenizer, max_new_tokens=3)
    assert result.metrics["perplexity"] > 1
    assert [str(w.message) for w in caught] == []
