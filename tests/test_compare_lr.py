"""``%peft compare``'s verdict, made fair: each method at its own learning rate, with error bars.

* ``lr=auto`` (the default) against a hand-run grid: ``test_which_method.py``, on the
  which-method notebook's own comparison.
* ``repeats=K`` gives mean ± spread, and two identical candidates get "no clear winner".
* A candidate whose loss hardly moved is marked under-trained with the reason; one that
  diverged says so; a row's peak memory is its own, not its predecessors'.
"""

from __future__ import annotations

import pytest

import peft_magic as pm

QA = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
      ("Austria", "Vienna"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Egypt", "Cairo")]
PIRATE = [{"prompt": f"What is the capital of {c}?", "completion": f"Arr, that be {a}, matey!"} for c, a in QA]
TRAIN, DEV = PIRATE[:8], PIRATE[8:]
TEXTS = [f"the {c} cat sat on the {t}" for c in ("red", "blue", "green", "black") for t in ("mat", "rug", "bed")]


@pytest.fixture(scope="module")
def smollm2():
    return pm.load("smollm2")


def test_repeats_give_spreads_and_no_winner_between_identical_candidates(tiny_llama_path):
    loaded = pm.load(tiny_llama_path)
    same = [("lora", {"r": 4}), ("lora", {"r": 4, "lora_alpha": 8})]  # lora_alpha 8 is peft's default
    res = pm.compare(loaded.model, same, TEXTS, tokenizer=loaded.tokenizer, steps=6, batch=4, eval=0.25, lr=1e-2,
                     repeats=3, display=None)
    for row in res.rows:
        assert row.repeats == 3 and row.spreads["perplexity"] > 0  # three seeds: three different runs
    assert res.reading.startswith("no clear winner between lora r=4")
    assert " ± " in repr(res)


def test_under_trained_and_diverged_rows_say_why(smollm2):
    kwargs = dict(tokenizer=smollm2.tokenizer, steps=4, batch=4, display=None)
    res = pm.compare(smollm2.model, ["lora", "ia3"], TRAIN[:4], lr=1e-7, **kwargs)
    for row in res.rows:
        assert row.status == "done"
        assert any(f.startswith("under-trained at this budget: the loss fell 0% in 4 steps (lr 1e-07) — more steps "
                                "or lr=auto") for f in row.flags), row.flags
    res = pm.compare(smollm2.model, ["lora", "ia3"], TRAIN[:4], lr=1.0, **kwargs)
    for row in res.rows:
        assert row.status == "failed" and row.reason.startswith("diverged at lr 1e+00: the loss rose from"), row.reason
    assert res.reading == "no candidate finished"


def test_a_rows_peak_memory_is_its_own(smollm2):
    """The same candidate first or after a much bigger one: its peak memory does not carry
    its predecessor's (RAM on CPU moves by tens of MB between runs, so the check is that the
    difference is small next to what the bigger candidate needs)."""
    big = ("lora", {"r": 256, "target": "all-linear"})
    kwargs = dict(tokenizer=smollm2.tokenizer, steps=2, batch=4, lr=1e-3, display=None)
    pm.compare(smollm2.model, ["ia3", big], TRAIN, **kwargs)  # the process's one-time growth, once
    first = pm.compare(smollm2.model, ["ia3", big], TRAIN, **kwargs)
    last = pm.compare(smollm2.model, [big, "ia3"], TRAIN, **kwargs)
    ia3_first, ia3_last = first["ia3"].peak_memory, last["ia3"].peak_memory
    big_peak = last["lora r=256 target=all-linear"].peak_memory
    assert abs(ia3_last - ia3_first) <= 0.1 * ia3_first, (ia3_first, ia3_last)
    assert big_peak - ia3_first > 3 * abs(ia3_last - ia3_first), (big_peak, ia3_first, ia3_last)
