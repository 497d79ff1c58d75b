"""The field's standard evaluation metrics, as pure functions on Python data.

Why here and why these: a number is only comparable with published ones when it is
computed the way the field computes it. So extractive QA uses the official SQuAD
normalisation and token-bag F1, token classification uses ``seqeval`` (the conlleval-
compatible entity scorer everyone reports), summarisation uses Google's ``rouge-score``
with stemming (what ``evaluate``'s ``rouge`` wraps). All of them take plain lists of
strings/ints, so they are tested on small fixed inputs with hand-computed values and are
independent of the trainer.

Every score is a fraction in 0..1 (not a percentage), including SQuAD EM/F1, whose
official script prints percentages: multiply by 100 to compare with papers.

``seqeval`` and ``rouge-score`` are imported lazily; a missing one is a one-line error
saying what to install.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PeftMagicError

# ----------------------------------------------------------------------------- SQuAD

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, drop punctuation and the articles a/an/the,
    collapse whitespace (the order of the official v1.1/v2.0 scripts)."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _truths(truths: Any) -> list[str]:
    """Ground truths as a list of strings: a str, a list of str, or a SQuAD ``answers`` dict.

    As in the official v2.0 script, truths that normalise to nothing are dropped; an
    empty list means "unanswerable" and is scored against the empty answer.
    """
    if truths is None:
        texts: list[str] = []
    elif isinstance(truths, str):
        texts = [truths]
    elif isinstance(truths, Mapping):
        t = truths.get("text", [])
        texts = [t] if isinstance(t, str) else list(t)
    else:
        texts = [str(t) for t in truths]
    texts = [t for t in texts if squad_normalize(t)]
    return texts or [""]


def _f1_one(prediction: str, truth: str) -> float:
    pred_toks = squad_normalize(prediction).split()
    true_toks = squad_normalize(truth).split()
    if not pred_toks or not true_toks:
        return float(pred_toks == true_toks)  # both empty: 1; one empty: 0
    same = sum((Counter(pred_toks) & Counter(true_toks)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(true_toks)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, truths: Any) -> float:
    """1.0 when the normalised prediction equals any normalised truth, else 0.0.

    ``truths``: a string, a list of strings, or a SQuAD ``answers`` dict. With no truth
    (SQuAD v2 unanswerable) the score is 1.0 iff the prediction normalises to empty.
    """
    pred = squad_normalize(prediction)
    return float(any(pred == squad_normalize(t) for t in _truths(truths)))


def squad_f1(prediction: str, truths: Any) -> float:
    """Token-bag F1 between prediction and truth after normalisation, max over the truths.

    With no truth (unanswerable) the score is 1.0 iff the prediction normalises to empty.
    """
    return max(_f1_one(prediction, t) for t in _truths(truths))


def squad_metrics(predictions: Sequence[str], references: Sequence[Any]) -> dict[str, float]:
    """Mean SQuAD exact match and F1 over examples, as fractions in 0..1.

    ``references[i]`` holds the truths of example i (see :func:`squad_f1`).
    """
    _same_length(predictions, references)
    n = len(predictions)
    return {
        "exact_match": sum(squad_exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "f1": sum(squad_f1(p, r) for p, r in zip(predictions, references)) / n,
    }


def _same_length(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise PeftMagicError(f"{len(predictions)} predictions but {len(references)} references",
                             "give one reference per prediction")
    if not predictions:
        raise PeftMagicError("nothing to score: there are no predictions")


# ----------------------------------------------------------------------------- token classification


def _seqeval() -> Any:
    try:
        from seqeval import metrics
    except ImportError:
        raise PeftMagicError("token-classification metrics need seqeval", "pip install seqeval") from None
    return metrics


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (micro average) and token accuracy, by ``seqeval``.

    seqeval's default mode is conlleval's: an ``I-X`` after ``O`` or after another type
    starts a new entity, ``B-X I-Y`` are two entities, and an entity counts only when its
    type and exact span match. One sentence per list; a single flat list of tags is taken
    as one sentence. With no entity in either list, P/R/F1 are 0.0 (seqeval's rule).
    """
    if true_tags and isinstance(true_tags[0], str):
        true_tags = [true_tags]  # type: ignore[list-item]
    if pred_tags and isinstance(pred_tags[0], str):
        pred_tags = [pred_tags]  # type: ignore[list-item]
    _same_length(pred_tags, true_tags)
    y_true = [[str(t) for t in s] for s in true_tags]
    y_pred = [[str(t) for t in s] for s in pred_tags]
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise PeftMagicError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted tags")
    m = _seqeval()
    return {
        "precision": float(m.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(m.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(m.f1_score(y_true, y_pred, zero_division=0)),
        "accuracy": float(m.accuracy_score(y_true, y_pred)),
    }


# ----------------------------------------------------------------------------- seq2seq


def rouge_l(predictions: Sequence[str], references: Sequence[Any]) -> float:
    """Mean ROUGE-L F-measure (Google's ``rouge-score``, Porter stemming on).

    ``references[i]`` is a string or a list of strings (the best-matching one counts).
    Note rouge-score's tokenizer keeps only ``[a-z0-9]`` runs, so text in other scripts
    scores 0 — the same as every tool built on it.
    """
    _same_length(predictions, references)
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise PeftMagicError("ROUGE needs rouge-score", "pip install rouge-score") from None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    total = 0.0
    for pred, ref in zip(predictions, references):
        refs = [ref] if isinstance(ref, str) else [str(r) for r in ref]
        if not refs:
            raise PeftMagicError("a reference list is empty", "give at least one reference per prediction")
        total += max(scorer.score(r, str(pred))["rougeL"].fmeasure for r in refs)
    return total / len(predictions)


def exact_match(predictions: Sequence[str], references: Sequence[Any]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace.

    ``references[i]`` is a string or a list of strings (a match with any counts).
    """
    _same_length(predictions, references)
    hits = 0
    for pred, ref in zip(predictions, references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        hits += any(str(pred).strip() == str(r).strip() for r in refs)
    return hits / len(predictions)


# ----------------------------------------------------------------------------- classification / LM


def classification_scores(labels: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
    """Accuracy and macro-F1; the macro average runs over the classes in labels ∪ preds.

    Per class F1 = 2·TP / (2·TP + FP + FN); every class in the union has a non-zero
    denominator, so no class is undefined.
    """
    _same_length(preds, labels)
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for y, p in zip(labels, preds):
        if y == p:
            tp[y] += 1
        else:
            fp[p] += 1
            fn[y] += 1
    classes = set(labels) | set(preds)
    f1s = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in classes]
    return {"accuracy": sum(tp.values()) / len(labels), "f1": sum(f1s) / len(f1s)}


def perplexity(loss: float | None) -> float:
    """exp(mean token cross-entropy); ``inf`` when that overflows, ``nan`` for a nan/None loss."""
    if loss is None:
        return math.nan
    loss = float(loss)
    if math.isnan(loss):
        return math.nan
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
