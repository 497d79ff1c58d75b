"""The panel's Train tab on preference data, driven as a user drives it (real widgets, real
tiny Llama): it recognises the data, offers the objectives for its shape and beta, shows the
same line as ``%peft train``, and the Train button runs the preference objective."""

from __future__ import annotations

from typing import Any

import pytest

import peft_magic as pm

TOPICS = ["the sea", "a cat", "the moon", "winter", "coffee", "a forest", "the city", "rain"]
PAIRS = [{"prompt": f"Describe {t}.", "chosen": f"Ah, {t}! Wonderful.", "rejected": f"{t.upper()} IS OK."}
         for t in TOPICS]
UNPAIRED = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"} for r in PAIRS
            for k in ("chosen", "rejected")]


@pytest.fixture()
def panel():
    from peft_magic.panel import PeftPanel

    loaded = pm.load("tiny-llama")
    ns: dict[str, Any] = {"model": loaded.model, "tokenizer": loaded.tokenizer}
    p = PeftPanel(ns)
    yield p
    p.close()


def test_train_tab_offers_objectives_for_preference_data(panel):
    t = panel.trainer
    panel.attach_button.click()
    panel.ns["prefs"] = PAIRS
    panel.ns["texts"] = ["plain text to copy"] * 8
    t.refresh_data()
    labels = dict((v, k) for k, v in t.data.options)
    assert "paired preferences" in labels["prefs"] and "preferences" not in labels["texts"]
    t.data.value = "texts"
    panel._update_buttons()
    assert t.preference.layout.display == "none" and "objective" not in panel.line.value
    t.data.value = "prefs"
    panel._update_buttons()
    assert t.preference.layout.display != "none"
    assert list(t.objective.options) == ["dpo", "ipo", "orpo", "simpo", "kto"] and t.objective.value == "dpo"
    assert "preference tuning" in t.task_info.value
    t.objective.value = "simpo"
    assert t.beta.value == 2.0  # SimPO's own scale
    t.objective.value = "dpo"
    assert t.beta.value == 0.1
    panel.ns["feedback"] = UNPAIRED
    t.refresh_data()
    t.data.value = "feedback"
    panel._update_buttons()
    assert list(t.objective.options) == ["kto"]


def test_train_button_runs_the_objective(panel):
    t = panel.trainer
    panel.attach_button.click()
    panel.ns["prefs"] = PAIRS
    t.refresh_data()
    t.data.value = "prefs"
    t.steps.value, t.lr.value, t.batch.value = 2, 0.005, 4
    panel.tabs.selected_index = 1
    panel._update_buttons()
    assert panel.line.value == "%peft train data=prefs steps=2 lr=0.005 batch=4 objective=dpo beta=0.1"
    t.button.click()
    run = pm.runs().runs[-1]
    assert run.status == "completed" and run.objective == "dpo" and len(run.rewards) == 2
    assert "training completed: 2 steps" in panel.status.value
