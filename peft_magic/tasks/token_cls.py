"""Token classification (NER, POS, chunking): CoNLL-shaped data in, entities out.

Why: the data is a list of sentences already split into words, each word with a tag
(``{"tokens": ["John", "lives", "in", "Zurich"], "ner_tags": ["B-PER", "O", "O",
"B-LOC"]}``), but the model sees sub-word tokens. This module does the two translations
the transformers token-classification guide describes, so a user never writes them:

* training: words → sub-word ids with the fast tokenizer's ``word_ids()``; the first
  sub-token of every word carries the word's label id, the other sub-tokens and the
  special tokens carry -100 (ignored by the loss and by the metrics);
* prediction: per-token predictions → one tag per word (its first sub-token's) →
  B-/I- tags merged into entities with character spans in the user's text.

Label names (id → tag) come from ``--labels``, from a ``datasets`` ClassLabel feature,
or from the string tags themselves (sorted, ``O`` first). The rows pad with the plain
causal-LM collator (labels are as long as the input ids, padded with -100).
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import PeftMagicError
from .common import Examples, as_list, check_records, need_fast

WORD_KEYS = ("tokens", "words")
TAG_KEYS = ("ner_tags", "tags", "labels")
_PREFIXES = {"B", "I", "E", "S", "L", "U"}


def detect_token_cls(records: Sequence[Any]) -> tuple[str, str]:
    """The (words, tags) column names of CoNLL-shaped records; a one-line error otherwise."""
    records = check_records(records, "token-classification")
    cols = list(records[0].keys())
    words = next((k for k in WORD_KEYS if k in records[0]), None)
    tags = next((k for k in TAG_KEYS if k in records[0]), None)
    if words is None or tags is None:
        raise PeftMagicError(f"token classification needs a list of words and a list of tags per row; "
                             f"the data has columns {cols}",
                             "accepted: tokens (or words) + ner_tags (or tags, labels)")
    return words, tags


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _rows(records: Sequence[Any]) -> tuple[list[list[str]], list[list[Any]], list[str]]:
    """Validated words and tags of every row (same length, all-int or all-str tags)."""
    wk, tk = detect_token_cls(records)
    words_all, tags_all = [], []
    kind = None
    for i, r in enumerate(records):
        words, tags = as_list(r.get(wk)), as_list(r.get(tk))
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise PeftMagicError(f"row {i}: '{wk}' must be a list of words, got {type(words).__name__}",
                                 "split each sentence into words (e.g. text.split())")
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise PeftMagicError(f"row {i}: '{tk}' must be a list of tags, got {type(tags).__name__}")
        if len(words) != len(tags):
            raise PeftMagicError(f"row {i}: {len(words)} words in '{wk}' but {len(tags)} tags in '{tk}'",
                                 "give exactly one tag per word")
        for t in tags:
            k = "int" if _is_int(t) else "str" if isinstance(t, str) else None
            if k is None:
                raise PeftMagicError(f"row {i}: tag {t!r} is neither a string nor an integer")
            if kind is None:
                kind = k
            elif k != kind:
                raise PeftMagicError(f"row {i}: tags mix strings and integers",
                                     "use tag names (B-PER) or label ids (1) throughout")
        words_all.append([str(w) for w in words])
        tags_all.append(list(tags))
    return words_all, tags_all, [wk, tk]


def label_names_for(records: Sequence[Any], given: str | Sequence[str] | None = None,
                    class_label_names: Sequence[str] | None = None) -> list[str]:
    """The tag names, id → name, and a check that every tag in the data is one of them.

    ``given`` (``--labels O,B-PER,I-PER`` or a list) wins; then the names of a
    ``datasets`` ClassLabel feature; then the distinct string tags of the data, sorted
    with ``O`` first. Integer tags need names from one of the first two sources.
    """
    _, tags_all, (_, tk) = _rows(records)
    if isinstance(given, str):
        given = [g.strip() for g in given.split(",") if g.strip()]
    names = list(given) if given else list(class_label_names) if class_label_names else None
    if names is not None:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PeftMagicError(f"the label names repeat {dup}", "give each tag once")
        known = set(names)
        for i, tags in enumerate(tags_all):
            for t in tags:
                if _is_int(t) and not 0 <= t < len(names):
                    raise PeftMagicError(f"row {i}: tag id {t} is out of range for the {len(names)} label names")
                if isinstance(t, str) and t not in known:
                    raise PeftMagicError(f"row {i}: tag '{t}' is not one of the label names {names}")
        return [str(n) for n in names]
    if any(_is_int(t) for tags in tags_all for t in tags):
        raise PeftMagicError(f"the '{tk}' column holds integer ids and no tag names were given",
                             "pass --labels O,B-PER,I-PER,… (in id order), or use a datasets "
                             "Dataset whose feature is a ClassLabel")
    found = {t for tags in tags_all for t in tags}
    return (["O"] if "O" in found else []) + sorted(found - {"O"})


def tokenize_token_cls(records: Sequence[Any], tokenizer: Any, max_len: int = 512,
                       label_names: Sequence[str] | None = None) -> Examples:
    """Words → sub-word rows ``{"input_ids", "labels", "word_ids"}`` for a token classifier.

    ``labels[j]`` is the label id of word ``word_ids[j]`` when token j is that word's
    first sub-token, else -100 (other sub-tokens, special tokens). Sentences longer than
    ``max_len`` tokens are cut (counted in ``truncated``; the cut words are not trained
    on); sentences without words are dropped (``skipped``). ``label_names`` defaults to
    :func:`label_names_for` of the records.
    """
    need_fast(tokenizer, "token classification")
    words_all, tags_all, cols = _rows(records)
    names = list(label_names) if label_names else label_names_for(records)
    index = {n: k for k, n in enumerate(names)}
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if max_len <= specials:
        raise PeftMagicError(f"max_len {max_len} leaves no room for words ({specials} special tokens)")

    ids_of: list[list[int]] = []
    for i, tags in enumerate(tags_all):
        row = []
        for t in tags:
            if _is_int(t):
                if not 0 <= t < len(names):
                    raise PeftMagicError(f"row {i}: tag id {t} is out of range for the {len(names)} label names")
                row.append(int(t))
            elif t in index:
                row.append(index[t])
            else:
                raise PeftMagicError(f"row {i}: tag '{t}' is not one of the label names {names}")
        ids_of.append(row)

    keep = [i for i, w in enumerate(words_all) if w]
    rows: list[dict[str, Any]] = []
    truncated = 0
    for lo in range(0, len(keep), 1000):
        chunk = keep[lo:lo + 1000]
        try:
            enc = tokenizer([words_all[i] for i in chunk], is_split_into_words=True, truncation=True,
                            max_length=max_len, return_overflowing_tokens=True, verbose=False)
        except Exception as e:  # e.g. byte-level BPE built without add_prefix_space
            raise PeftMagicError(f"the tokenizer cannot take pre-split words: {str(e).splitlines()[0]}",
                                 "for RoBERTa/GPT-2 style tokenizers load them with add_prefix_space=True") from None
        mapping = enc.get("overflow_to_sample_mapping", list(range(len(chunk))))
        seen: set[int] = set()
        for w, sample in enumerate(mapping):
            if sample in seen:  # a further window of a long sentence: cut
                continue
            seen.add(sample)
            word_ids = enc.word_ids(w)
            tags = ids_of[chunk[sample]]
            labels, prev = [], None
            for wid in word_ids:
                labels.append(tags[wid] if wid is not None and wid != prev else -100)
                prev = wid
            rows.append({"input_ids": list(enc["input_ids"][w]), "labels": labels, "word_ids": list(word_ids)})
        truncated += sum(1 for c in Counter(mapping).values() if c > 1)  # sentences, not windows
    if not rows:
        raise PeftMagicError("no usable examples: every sentence was empty")
    return Examples(rows, "token-cls", len(words_all), names, truncated, len(words_all) - len(keep), cols)


def align_predictions(predictions: Any, label_ids: Any,
                      label_names: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(true tags, predicted tags) per sentence, on the positions whose label is not -100.

    ``predictions``: logits ``(batch, seq, n_labels)`` or ids ``(batch, seq)``; ``label_ids``:
    ``(batch, seq)`` with -100 on sub-tokens, special tokens and padding (what the trainer's
    evaluation loop hands ``compute_metrics``). Feed the result to ``metrics.entity_scores``.
    """
    import numpy as np

    preds = [np.asarray(p) for p in predictions]
    true_out, pred_out = [], []
    for p, lab in zip(preds, label_ids):
        lab = np.asarray(lab)
        ids = p.argmax(-1) if p.ndim == 2 else p
        mask = lab != -100
        true_out.append([label_names[int(x)] for x in lab[mask]])
        pred_out.append([label_names[int(x)] for x in ids[: len(lab)][mask[: len(ids)]]])
    return true_out, pred_out


# ----------------------------------------------------------------------------- prediction


def encode_for_predict(text_or_words: str | Sequence[str], tokenizer: Any, max_len: int = 512) -> dict[str, Any]:
    """Tokenize one input for prediction: ``input_ids``, ``attention_mask``, ``word_ids``, ``offsets``.

    A string is tokenized as running text (words are the tokenizer's pre-tokens, which
    split punctuation like CoNLL does; ``offsets`` are character spans in the string). A
    list of words is tokenized as pre-split words (``offsets`` are None). Pass the result's
    ``word_ids`` and ``offsets`` to :func:`decode_entities`.
    """
    need_fast(tokenizer, "token classification")
    if isinstance(text_or_words, str):
        enc = tokenizer(text_or_words, truncation=True, max_length=max_len, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    else:
        enc = tokenizer([str(w) for w in text_or_words], is_split_into_words=True, truncation=True,
                        max_length=max_len)
        offsets = None
    return {"input_ids": list(enc["input_ids"]), "attention_mask": list(enc["attention_mask"]),
            "word_ids": list(enc.word_ids()), "offsets": offsets}


def _split_tag(tag: str) -> tuple[str, str | None]:
    """``B-PER`` → ("B", "PER"); ``O`` → ("O", None); an unprefixed ``PER`` → ("I", "PER")."""
    if tag == "O" or not tag:
        return "O", None
    head, sep, rest = tag.partition("-")
    if sep and head.upper() in _PREFIXES and rest:
        return head.upper(), rest
    return "I", tag


def _softmax_row(logits: Sequence[float]) -> list[float]:
    m = max(logits)
    e = [math.exp(x - m) for x in logits]
    s = sum(e)
    return [x / s for x in e]


def decode_entities(words_or_text: str | Sequence[str], word_ids: Sequence[int | None], predictions: Any,
                    label_names: Sequence[str], offsets: Sequence[Any] | None = None,
                    scores: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Per-token predictions → entities ``{"text", "type", "start", "end", "score"}``.

    ``predictions`` holds, per token, a label id or a row of logits (then ``score`` is
    the softmax probability). Each word takes the prediction of its first sub-token;
    tags merge conlleval-style: ``B-X``/``S-X`` start an entity, ``I-X``/``E-X`` extend
    an entity of type X and start one otherwise, ``O`` ends it. ``start``/``end`` are
    character offsets: into the text for a string (needs the tokenizer's ``offsets``),
    into ``" ".join(words)`` for a list of words. ``score`` is the mean over the
    entity's words (None when only ids were given without ``scores``).
    """
    ids, probs = _token_labels(predictions, scores)
    text, word_span = _word_spans(words_or_text, word_ids, offsets)
    word_tag: dict[int, tuple[str, float | None]] = {}
    for j, wid in enumerate(word_ids):  # each word takes its first sub-token's prediction
        if wid is not None and wid not in word_tag and j < len(ids):
            word_tag[wid] = (label_names[ids[j]], probs[j])
    return _merge_tags(text, word_span, word_tag)


def _token_labels(predictions: Any, scores: Sequence[float] | None) -> tuple[list[int], list[float | None]]:
    """Per token: the label id and its probability (softmax of a logits row, else ``scores``)."""
    ids: list[int] = []
    probs: list[float | None] = []
    for j, p in enumerate(p.tolist() if hasattr(p, "tolist") else p for p in predictions):
        if isinstance(p, (list, tuple)):
            pr = _softmax_row([float(x) for x in p])
            k = max(range(len(pr)), key=pr.__getitem__)
            ids.append(k)
            probs.append(pr[k])
        else:
            ids.append(int(p))
            probs.append(float(scores[j]) if scores is not None else None)
    return ids, probs


def _word_spans(words_or_text: str | Sequence[str], word_ids: Sequence[int | None],
                offsets: Sequence[Any] | None) -> tuple[str, list[tuple[int, int] | None]]:
    """The text entities point into and each word's character span in it."""
    if not isinstance(words_or_text, str):
        words = [str(w) for w in words_or_text]
        word_span: list[tuple[int, int] | None] = []
        pos = 0
        for w in words:
            word_span.append((pos, pos + len(w)))
            pos += len(w) + 1
        return " ".join(words), word_span
    if offsets is None:
        raise PeftMagicError("decoding entities in raw text needs the tokenizer's offsets",
                             "use encode_for_predict(text, tokenizer) and pass its offsets")
    spans: dict[int, list[int]] = {}
    for wid, off in zip(word_ids, offsets):
        if wid is None or off is None or off[1] <= off[0]:
            continue
        s = spans.setdefault(wid, [off[0], off[1]])
        s[0], s[1] = min(s[0], off[0]), max(s[1], off[1])
    n_words = max(spans) + 1 if spans else 0
    return words_or_text, [(spans[w][0], spans[w][1]) if w in spans else None for w in range(n_words)]


def _merge_tags(text: str, word_span: Sequence[tuple[int, int] | None],
                word_tag: dict[int, tuple[str, float | None]]) -> list[dict[str, Any]]:
    """Word tags → entities, conlleval-style (B/S start, I/E extend the same type, O ends)."""
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            s, e = current["start"], current["end"]
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            sc = current.pop("_scores")
            entities.append({"text": text[s:e], "type": current["type"], "start": s, "end": e,
                             "score": sum(sc) / len(sc) if sc and None not in sc else None})
            current = None

    for w, span in enumerate(word_span):
        if span is None or w not in word_tag:
            close()
            continue
        tag, p = word_tag[w]
        prefix, etype = _split_tag(tag)
        if prefix == "O":
            close()
            continue
        if current is not None and prefix in {"I", "E", "L"} and current["type"] == etype:
            current["end"] = span[1]
            current["_scores"].append(p)
        else:
            close()
            current = {"type": etype, "start": span[0], "end": span[1], "_scores": [p]}
        if prefix in {"E", "S", "L", "U"}:
            close()
    close()
    return entities
