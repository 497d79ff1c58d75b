"""Preference tuning learns on a real model (SmolLM2-135M-Instruct, one loaded per module):
DPO and IPO take held-out preference accuracy from 0 to ≥ 0.9 (rewards against the base,
measured by ``%peft evaluate``), and KTO's loss goes down on unpaired data.

The pairs differ in style only — chosen answers enthusiastic, rejected ones curt — so the
held-out topics are new but the preference is the same. A few steps at a high learning rate
(measured here: 5 steps of batch 4 at 1e-3 reach held-out accuracy 1.0, margin ≈ 0.55, for
both DPO and IPO; ~25 s of CPU each)."""

from __future__ import annotations

import pytest

import peft_magic as pm

TRAIN_TOPICS = ["the sea", "a cat", "the moon", "winter", "coffee", "a forest", "the city", "rain", "music",
                "a garden", "the desert", "trains", "books", "snow"]
HELD_TOPICS = ["mountains", "bread", "the wind", "a river", "candles", "autumn", "a bridge", "the stars",
               "tea", "a library"]


def pairs(topics: list[str]) -> list[dict]:
    return [{"prompt": f"Describe {t} in one sentence.", "chosen": f"Ah, {t}! It is truly wonderful.",
             "rejected": f"{t.upper()} IS OK."} for t in topics]


@pytest.fixture(scope="module")
def smol():
    return pm.load("smollm2")


@pytest.fixture
def fresh(smol):
    import torch

    torch.manual_seed(0)
    model = pm.attach(smol.model, "lora", r=8).model
    yield model
    pm.detach(model)


@pytest.mark.slow(seconds=80)
@pytest.mark.parametrize("objective", ["dpo", "ipo"])
def test_held_out_preference_accuracy_rises(smol, fresh, objective):
    held = pairs(HELD_TOPICS)
    before = pm.evaluate(fresh, held, tokenizer=smol.tokenizer)
    assert before.metrics["accuracy"] == 0.0 and before.metrics["margin"] == 0.0  # the adapter is the base
    run = pm.train(fresh, pairs(TRAIN_TOPICS), tokenizer=smol.tokenizer, steps=5, batch=4, lr=1e-3,
                   objective=objective, display=None)
    assert run.status == "completed" and run.objective == objective
    assert run.losses[-1][1] < run.losses[0][1]
    after = pm.evaluate(fresh, held, tokenizer=smol.tokenizer, compare=True)
    assert after.metrics["accuracy"] >= 0.9, after
    assert after.metrics["margin"] > 0.2 and after.metrics["chosen"] > after.metrics["rejected"], after
    assert after.base["accuracy"] == 0.0 and after.base["margin"] == 0.0


def test_kto_loss_goes_down_on_unpaired_data(smol, fresh):
    rows = []
    for r in pairs(TRAIN_TOPICS):  # desirable and undesirable completions, not paired up
        rows += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                 {"prompt": r["prompt"], "completion": r["rejected"], "label": False}]
    run = pm.train(fresh, rows, tokenizer=smol.tokenizer, steps=4, batch=4, lr=1e-3, display=None)
    assert run.status == "completed" and run.objective == "kto"  # the shape picked it
    losses = [loss for _, loss in run.losses]
    assert losses[-1] < losses[0] - 0.02, losses
    assert run.rewards[-1][1]["chosen"] > run.rewards[-1][1]["rejected"]
