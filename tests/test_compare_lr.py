"""``%peft compare``'s verdict, made fair: each method at its own learning rate, with error bars.

* ``lr=auto`` (the default) against a hand-run grid: ``test_which_method.py``, on the
  which-method notebook's own comparison.
* ``repeats=K`` gives mean ± spread, and two identical candidates get "no clear winner".
* A candidate whose loss hardly moved is marked under-trained with the reason; one that
  diverged says so; a row's peak memory is its own, not its predecessors'.
* The search's walk (``lr_search.search``, given a score for each rate): on a valley it
  chooses what trying every rate would, in fewer probes; a diverging or failing rate is the
  worst; it says what it tried.
"""

from __future__ import annotations

import itertools
import math

import pytest

import peft_magic as pm
from peft_magic.training import lr_search

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


def _walk(scores: dict[float, float | None], default: float = 1e-3, first: float = 10.0):
    """The search over the grid of ``default`` with each rate's score given (None: the probe
    raises); the rates it probed, in order."""
    probed: list[float] = []

    def train_probe(lr: float, steps: int) -> tuple[float, float | None]:
        probed.append(lr)
        if scores[lr] is None:
            raise RuntimeError("out of memory")
        return first, scores[lr]

    return lr_search.search(train_probe, default, steps=12), probed


def test_the_walk_chooses_the_full_grids_rate_on_any_valley_in_fewer_probes():
    rates = lr_search.grid(1e-3)
    assert rates == [3.3e-4, 1e-3, 3e-3, 1e-2, 3e-2] and lr_search.start_index(rates, 1e-3) == 3
    for bottom in range(5):  # a valley with its lowest point at each rate of the grid in turn
        for left, right in itertools.product((0.5, 2.0), repeat=2):  # gentle and steep sides
            scores = {r: 1.0 + (left if i < bottom else right) * abs(i - bottom) for i, r in enumerate(rates)}
            res, probed = _walk(scores)
            assert res.chosen == min(rates, key=scores.get) == rates[bottom], (bottom, probed)
            # from 10× the default: 2 probes when the best is at the top, all 5 when it is at or below the default
            assert probed[0] == 1e-2 and len(probed) == [5, 5, 4, 3, 2][bottom] == len(set(probed)), probed
            assert [p.lr for p in res.probes] == sorted(probed) and all(p.steps == 4 for p in res.probes)
            assert res.chosen in probed and all(res.chosen == p.lr or p.score > scores[res.chosen] for p in res.probes)


def test_a_diverging_or_failing_rate_is_the_worst_and_the_walk_goes_down():
    rates = lr_search.grid(1e-3)
    # 1e-2 and 3e-2 diverge (the score is over 1.5 × the first loss of 4.0), 3e-3 is the best
    res, probed = _walk({3.3e-4: 3.0, 1e-3: 2.0, 3e-3: 1.0, 1e-2: 9.0, 3e-2: math.inf}, first=4.0)
    assert probed == [1e-2, 3e-2, 3e-3, 1e-3] and res.chosen == 3e-3
    assert {p.lr: p.status for p in res.probes} == {1e-3: "ok", 3e-3: "ok", 1e-2: "diverged", 3e-2: "diverged"}
    res, probed = _walk({3.3e-4: 3.0, 1e-3: 2.0, 3e-3: 2.5, 1e-2: None, 3e-2: None})  # out of memory up high
    assert res.chosen == 1e-3 and probed == [1e-2, 3e-2, 3e-3, 1e-3, 3.3e-4]
    assert [p.status for p in res.probes if p.lr >= 1e-2] == ["failed", "failed"]
    assert "RuntimeError: out of memory" in res.probes[-1].note
    res, _ = _walk(dict.fromkeys(rates, None))  # nothing trains: the method's default, as before the search
    assert res.chosen == 1e-3 and all(p.status == "failed" for p in res.probes)
    text = str(_walk({r: 1.0 + i for i, r in enumerate(rates)})[0])  # the lowest rate is the best: all five tried
    assert text.startswith("3e-04 → 1.000 ★ · 1e-03 → 2.000") and "after 4 steps each," in text and "of 5" not in text
    text = str(_walk({r: 5.0 - i for i, r in enumerate(rates)})[0])  # the highest: two tried
    assert text.startswith("1e-02 → 2.000 · 3e-02 → 1.000 ★ (eval loss after 4 steps each; 2 of 5 rates, "), text
