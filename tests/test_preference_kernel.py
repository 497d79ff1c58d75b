"""Preference tuning through a real kernel: ``%peft train data=prefs objective=dpo`` with the
live display, the status bar's payload, ``%peft runs``, ``%peft evaluate``, ``%peft plan``,
and a bad row as one line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel

DATA = (
    "topics = ['the sea', 'a cat', 'the moon', 'winter', 'coffee', 'a forest', 'the city', 'rain']\n"
    "prefs = [{'prompt': f'Describe {t} in one sentence.', 'chosen': f'Ah, {t}! It is truly wonderful.',\n"
    "          'rejected': f'{t.upper()} IS OK.'} for t in topics]\n"
    "prefs_dev = prefs[:4]\n"
)


def test_dpo_from_a_cell(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(DATA)
    res = kernel.ok("run = %peft train data=prefs objective=dpo steps=3 batch=4 lr=5e-3 --display text")
    assert "· DPO" in res.text and "margin" in res.text and "accuracy" in res.text, res.text
    assert res.stderr.strip() == "", res.stderr  # nothing of TRL's own output (bars, notices) reaches the user
    assert kernel.eval("[run.status, run.objective, len(run.rewards)]") == ["completed", "dpo", 3]
    logged = kernel.eval("run.rewards[-1][1]")
    assert set(logged) == {"chosen", "rejected", "margin", "accuracy"}
    # the status bar's payload (comm.py) carries the objective and TRL's logged readouts
    status = kernel.eval("__import__('peft_magic.comm', fromlist=['x']).channel().status['run']")
    assert status["objective"] == "dpo" and status["rewards"]["margin"] == pytest.approx(logged["margin"])
    runs = kernel.ok("%peft runs")
    assert "DPO · margin" in runs.text
    ev = kernel.ok("%peft evaluate data=prefs_dev --compare")
    assert "preference pairs" in ev.text and "likelihood_accuracy" in ev.text and "base model" in ev.text
    plan = kernel.ok("%peft plan lora batch=2 seq=64 objective=dpo")
    assert "two sequences (chosen + rejected)" in plan.text


def test_a_bad_row_is_one_line(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(DATA + "broken = [dict(r) for r in prefs]\ndel broken[5]['rejected']\n")
    runs = kernel.eval("len(__import__('peft_magic').runs())")
    res = kernel.run("%peft train data=broken steps=2")
    assert res.error is not None and res.error["ename"] == "UsageError", res.error_text
    lines = [ln for ln in res.error_text.strip().splitlines() if ln.strip()]
    assert "row 5 of the preference data has no 'rejected'" in lines[0] and len(lines) == 1, lines
    assert "Traceback" not in res.error_text
    assert kernel.eval("len(__import__('peft_magic').runs())") == runs  # nothing started
