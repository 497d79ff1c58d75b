"""The task metrics against values computed by hand on small fixed inputs."""

from __future__ import annotations

import math
import sys

import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.tasks.metrics import (
    classification_scores,
    entity_scores,
    exact_match,
    perplexity,
    rouge_l,
    squad_exact_match,
    squad_f1,
    squad_metrics,
    squad_normalize,
)

# ----------------------------------------------------------------------------- SQuAD


def test_squad_normalize_follows_the_official_order():
    assert squad_normalize("The  Eiffel-Tower!") == "eiffeltower"  # punctuation removed, not spaced
    assert squad_normalize("An apple a day, the\tdoctor") == "apple day doctor"
    assert squad_normalize("Theatre an") == "theatre"  # articles only as whole words
    assert squad_normalize("  ") == ""


def test_squad_exact_match():
    assert squad_exact_match("the Paris.", ["Paris"]) == 1.0
    assert squad_exact_match("Paris France", ["Paris"]) == 0.0
    assert squad_exact_match("Lyon", ["Paris", "lyon"]) == 1.0  # any truth
    assert squad_exact_match("Paris", "Paris") == 1.0  # a single string
    assert squad_exact_match("Paris", {"text": ["Paris"], "answer_start": [0]}) == 1.0  # SQuAD answers


def test_squad_f1_token_bags():
    # pred {cat, sat, on, mat} vs truth {cat, sat}: P = 2/4, R = 2/2 → F1 = 2/3
    assert squad_f1("the cat sat on the mat", ["a cat sat"]) == pytest.approx(2 / 3)
    # bags, not sets: x x y vs x y y share one x and one y → P = R = 2/3
    assert squad_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert squad_f1("blue car", ["red house", "blue house"]) == pytest.approx(0.5)  # max over truths
    assert squad_f1("blue house", ["red house", "blue house"]) == 1.0
    assert squad_f1("green", ["red"]) == 0.0


def test_squad_unanswerable():
    for empty in ([], {"text": [], "answer_start": []}, [""]):
        assert squad_exact_match("", empty) == 1.0
        assert squad_f1("", empty) == 1.0
        assert squad_exact_match("Paris", empty) == 0.0
        assert squad_f1("Paris", empty) == 0.0
    assert squad_f1("the", []) == 1.0  # normalises to empty
    assert squad_f1("", ["Paris"]) == 0.0


def test_squad_metrics_are_fractions():
    preds = ["Paris", "the cat sat on the mat", ""]
    refs = [["Paris"], ["a cat sat"], []]
    m = squad_metrics(preds, refs)
    assert m["exact_match"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    with pytest.raises(PeftMagicError, match="2 predictions but 3 references"):
        squad_metrics(preds[:2], refs)


# ----------------------------------------------------------------------------- entities


def test_entity_scores_type_must_match():
    # true: PER(0-1), LOC(3); pred: PER(0-1), ORG(3) → 1 of 2 right each way
    s = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    assert s == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.75})


def test_entity_scores_i_after_o_starts_an_entity():
    # conlleval: "O I-PER I-PER" is one PER entity, the same span as "O B-PER I-PER"
    s = entity_scores([["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]])
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert s["accuracy"] == 0.75  # the tags themselves differ at one token


def test_entity_scores_type_change_splits():
    # "B-PER I-LOC" is PER(0) + LOC(1): neither matches the true PER(0-1)
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])
    assert s == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.5}


def test_entity_scores_micro_average_over_sentences():
    true = [["B-PER", "O"], ["B-LOC", "I-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O"], ["B-LOC", "O", "O", "B-ORG"]]  # LOC span too short
    s = entity_scores(true, pred)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(5 / 6)
    assert entity_scores(["B-PER", "O"], ["B-PER", "O"])["f1"] == 1.0  # one flat sentence


def test_entity_scores_errors(monkeypatch):
    with pytest.raises(PeftMagicError, match="sentence 1: 2 true tags but 1 predicted"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    monkeypatch.setitem(sys.modules, "seqeval", None)  # as if not installed
    with pytest.raises(PeftMagicError, match="token-classification metrics need seqeval — pip install seqeval"):
        entity_scores([["O"]], [["O"]])


# ----------------------------------------------------------------------------- seq2seq


def test_rouge_l():
    # target {the, cat, are, run} (stemmed), prediction {the, cat, ran}: LCS 2 → P 2/3, R 2/4, F 4/7
    assert rouge_l(["the cat ran"], ["the cats are running"]) == pytest.approx(4 / 7)
    assert rouge_l(["the cat ran", "a b"], ["the cats are running", "a b"]) == pytest.approx((4 / 7 + 1) / 2)
    assert rouge_l(["running dogs"], ["run dog"]) == 1.0  # stemming is on
    assert rouge_l(["a b"], [["x y", "a b c d"]]) == pytest.approx(2 / 3)  # best reference: P 1, R 1/2


def test_rouge_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(PeftMagicError, match="pip install rouge-score"):
        rouge_l(["a"], ["a"])


def test_exact_match_strips():
    assert exact_match([" Paris ", "paris", "Rome\n"], ["Paris", "Paris", ["Lyon", "Rome"]]) == pytest.approx(2 / 3)
    with pytest.raises(PeftMagicError, match="no predictions"):
        exact_match([], [])


# ----------------------------------------------------------------------------- classification, LM


def test_classification_scores():
    s = classification_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert s["accuracy"] == pytest.approx(0.6)
    # F1 per class: 0 → 2/(2+1+1) = .5, 1 → 4/(4+1) = .8, 2 → 0
    assert s["f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # a class only predicted counts in the macro average
    s = classification_scores(["a", "a"], ["a", "b"])
    assert s == pytest.approx({"accuracy": 0.5, "f1": (2 / 3 + 0) / 2})
    assert classification_scores([1, 1], [1, 1]) == {"accuracy": 1.0, "f1": 1.0}


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(1e6) == math.inf
    assert math.isnan(perplexity(float("nan")))
    assert math.isnan(perplexity(None))
