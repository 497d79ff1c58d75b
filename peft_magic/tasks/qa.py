"""Extractive question answering: SQuAD-shaped data in, answer spans out.

Why: the answer is a span of the context, so the model predicts a start and an end
token; but contexts are often longer than the model's window and answers are given as
characters. This module does the bookkeeping of the transformers QA guide:

* training (:func:`tokenize_qa_train`): question + context → overlapping windows
  (``stride`` tokens shared between neighbours); the window that holds the whole answer
  gets its start/end token positions, every other window (and every unanswerable SQuAD
  v2 question) points at the CLS position;
* evaluation/prediction (:func:`tokenize_qa_eval` → model → :func:`postprocess_qa`):
  windows keep their example index and character offsets (None outside the context),
  and the best-scoring span over all windows of an example is mapped back to the
  context's characters — or the empty answer, for SQuAD v2, when the "no answer"
  (CLS) score is higher.

Records: ``question``, ``context`` and either ``answers={"text": [...], "answer_start":
[...]}`` (SQuAD; empty lists = unanswerable) or a flat ``answer`` string that is looked
up in the context. An ``answer_start`` that does not point at the answer text is an
error naming the row: silently wrong labels train a model that never finds anything.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PeftMagicError
from .common import Examples, PaddingCollator, as_list, check_records, need_fast, round_up

# ----------------------------------------------------------------------------- records


def qa_examples(records: Sequence[Any], need_answers: bool = True) -> list[dict[str, Any]]:
    """Validated records ``{"question", "context", "answers": [(text, start), ...]}``.

    ``answers`` is empty for an unanswerable question (and for records without any
    answer column when ``need_answers`` is False, as in prediction).
    """
    records = check_records(records, "question-answering")
    cols = list(records[0].keys())
    if "question" not in records[0] or "context" not in records[0]:
        raise PeftMagicError(f"extractive QA needs 'question' and 'context' columns; the data has {cols}",
                             "accepted: question + context + answers {text, answer_start} (SQuAD) or answer")
    out = []
    for i, r in enumerate(records):
        q, ctx = r.get("question"), r.get("context")
        if not isinstance(q, str) or not isinstance(ctx, str):
            raise PeftMagicError(f"row {i}: 'question' and 'context' must be strings")
        if "answers" in r:
            answers = _squad_answers(r["answers"], ctx, i)
        elif "answer" in r:
            answers = _flat_answer(r["answer"], r.get("answer_start"), ctx, i)
        elif need_answers:
            raise PeftMagicError(f"row {i} has no 'answers' or 'answer'", "give answers={'text': [...], "
                                 "'answer_start': [...]}, or an answer string found in the context")
        else:
            answers = []
        out.append({"question": q, "context": ctx, "answers": answers})
    return out


def _check_span(text: str, start: Any, ctx: str, i: int) -> tuple[str, int]:
    if not isinstance(start, numbers.Integral) or isinstance(start, bool):
        raise PeftMagicError(f"row {i}: answer_start must be an integer, got {start!r}")
    start = int(start)
    if ctx[start:start + len(text)] != text:
        found = ctx.find(text)
        hint = (f"'{text}' occurs at character {found}; answer_start counts characters from 0"
                if found >= 0 else "the answer must be copied exactly from the context")
        raise PeftMagicError(f"row {i}: the answer '{text}' is not at answer_start {start} of the context "
                             f"(there it reads '{ctx[start:start + len(text)]}')", hint)
    return text, start


def _squad_answers(answers: Any, ctx: str, i: int) -> list[tuple[str, int]]:
    if isinstance(answers, Mapping):
        texts, starts = as_list(answers.get("text", [])), as_list(answers.get("answer_start", []))
        if isinstance(texts, str):
            texts, starts = [texts], ([starts] if not isinstance(starts, Sequence) else list(starts))
        texts, starts = list(texts), list(starts)
        if len(texts) != len(starts):
            raise PeftMagicError(f"row {i}: answers has {len(texts)} texts but {len(starts)} answer_start values")
        return [_check_span(str(t), s, ctx, i) for t, s in zip(texts, starts) if str(t)]
    answers = as_list(answers)
    if isinstance(answers, Sequence) and not isinstance(answers, str):
        out = []
        for a in answers:
            if isinstance(a, Mapping) and "text" in a and "answer_start" in a:
                if str(a["text"]):
                    out.append(_check_span(str(a["text"]), a["answer_start"], ctx, i))
            elif isinstance(a, str):
                out.extend(_flat_answer(a, None, ctx, i))
            else:
                raise PeftMagicError(f"row {i}: cannot read the answer {a!r}",
                                     "use {'text': ..., 'answer_start': ...} or a string")
        return out
    if isinstance(answers, str):
        return _flat_answer(answers, None, ctx, i)
    raise PeftMagicError(f"row {i}: 'answers' must be a dict {{text, answer_start}}, got {type(answers).__name__}")


def _flat_answer(answer: Any, start: Any, ctx: str, i: int) -> list[tuple[str, int]]:
    if answer is None or (isinstance(answer, float) and math.isnan(answer)) or str(answer) == "":
        return []  # unanswerable
    text = str(answer)
    if start is not None:
        return [_check_span(text, start, ctx, i)]
    found = ctx.find(text)
    if found < 0:
        raise PeftMagicError(f"row {i}: the answer '{text}' does not occur in the context",
                             "extractive QA answers are spans copied from the context; for free-form "
                             "answers train a seq2seq or causal model")
    return [(text, found)]


# ----------------------------------------------------------------------------- tokenization


def _encode_windows(examples: list[dict[str, Any]], tokenizer: Any, max_len: int, stride: int) -> tuple[Any, bool]:
    """The tokenizer's windows over (question, context) pairs, checked not to panic."""
    need_fast(tokenizer, "question answering")
    pad_right = getattr(tokenizer, "padding_side", "right") == "right"
    questions = [e["question"].strip() for e in examples]
    contexts = [e["context"] for e in examples]
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    q_lens = [len(x) for x in tokenizer(questions, add_special_tokens=False, verbose=False)["input_ids"]]
    # The Rust tokenizer *panics* (not a Python error) when the stride is not smaller
    # than the room left for the context, so check first and name the row.
    for i, n in enumerate(q_lens):
        room = max_len - n - specials
        if room <= stride:
            raise PeftMagicError(f"row {i}: the question takes {n} tokens, leaving {max(room, 0)} of max_len "
                                 f"{max_len} for the context, not more than the stride {stride}",
                                 "raise max_len, lower the stride, or shorten the question")
    first, second = (questions, contexts) if pad_right else (contexts, questions)
    enc = tokenizer(first, second, truncation="only_second" if pad_right else "only_first",
                    max_length=max_len, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, verbose=False)
    return enc, pad_right


def _context_range(seq_ids: list[int | None], ctx_id: int) -> tuple[int, int]:
    idx = [j for j, s in enumerate(seq_ids) if s == ctx_id]
    return (idx[0], idx[-1]) if idx else (1, 0)


def _cls_index(ids: list[int], tokenizer: Any) -> int:
    cls = getattr(tokenizer, "cls_token_id", None)
    return ids.index(cls) if cls is not None and cls in ids else 0


def _split_count(mapping: Sequence[int]) -> int:
    """How many records were split into more than one window."""
    return sum(1 for c in Counter(mapping).values() if c > 1)


def _window_row(enc: Any, w: int) -> dict[str, Any]:
    row = {"input_ids": list(enc["input_ids"][w]), "attention_mask": list(enc["attention_mask"][w])}
    if "token_type_ids" in enc:
        row["token_type_ids"] = list(enc["token_type_ids"][w])
    return row


def tokenize_qa_train(records: Sequence[Any], tokenizer: Any, max_len: int = 384,
                      stride: int = 128) -> Examples:
    """Training windows ``{"input_ids", "attention_mask", ["token_type_ids"], "start_positions",
    "end_positions"}``: the first answer's token span in the window that holds all of it,
    the CLS position (index of the CLS token, else 0) in every other window and for
    unanswerable questions. ``truncated`` counts contexts split into several windows.
    """
    examples = qa_examples(records, need_answers=True)
    enc, pad_right = _encode_windows(examples, tokenizer, max_len, stride)
    ctx_id = 1 if pad_right else 0
    mapping = enc["overflow_to_sample_mapping"]
    rows = []
    for w, sample in enumerate(mapping):
        row = _window_row(enc, w)
        cls = _cls_index(row["input_ids"], tokenizer)
        offsets = enc["offset_mapping"][w]
        lo, hi = _context_range(enc.sequence_ids(w), ctx_id)
        start_pos = end_pos = cls
        answers = examples[sample]["answers"]
        if answers and lo <= hi:
            text, start_char = answers[0]
            end_char = start_char + len(text)
            if offsets[lo][0] <= start_char and offsets[hi][1] >= end_char:
                j = lo
                while j <= hi and offsets[j][0] <= start_char:
                    j += 1
                start_pos = j - 1
                j = hi
                while j >= lo and offsets[j][1] >= end_char:
                    j -= 1
                end_pos = j + 1
        row["start_positions"], row["end_positions"] = start_pos, end_pos
        rows.append(row)
    return Examples(rows, "qa", len(examples), None, _split_count(mapping), 0, list(records[0].keys()))


def tokenize_qa_eval(records: Sequence[Any], tokenizer: Any, max_len: int = 384,
                     stride: int = 128) -> Examples:
    """Evaluation/prediction windows: the model inputs plus ``example_id`` (the record's
    index), ``offset_mapping`` (character spans, None outside the context, as in the
    transformers QA guide) and ``cls_index``. Records need no answers here."""
    examples = qa_examples(records, need_answers=False)
    enc, pad_right = _encode_windows(examples, tokenizer, max_len, stride)
    ctx_id = 1 if pad_right else 0
    mapping = enc["overflow_to_sample_mapping"]
    rows = []
    for w, sample in enumerate(mapping):
        row = _window_row(enc, w)
        seq_ids = enc.sequence_ids(w)
        row["example_id"] = int(sample)
        row["offset_mapping"] = [tuple(o) if s == ctx_id else None
                                 for o, s in zip(enc["offset_mapping"][w], seq_ids)]
        row["cls_index"] = _cls_index(row["input_ids"], tokenizer)
        rows.append(row)
    return Examples(rows, "qa-eval", len(examples), None, _split_count(mapping), 0, list(records[0].keys()))


# ----------------------------------------------------------------------------- post-processing


def postprocess_qa(start_logits: Any, end_logits: Any, windows: Sequence[Mapping[str, Any]],
                   records: Sequence[Any], n_best: int = 20, max_answer_len: int = 30,
                   allow_empty: bool = False) -> list[dict[str, Any]]:
    """The best answer per record: ``{"text", "start", "end", "score", "logit"}``.

    ``start_logits[w]``/``end_logits[w]`` are the model's logits for window ``w`` of
    ``windows`` (from :func:`tokenize_qa_eval`; rows may be right-padded). Candidates are
    the ``n_best`` top starts × ``n_best`` top ends of every window of a record whose
    tokens lie in the context, end ≥ start, at most ``max_answer_len`` tokens; a span
    scores start logit + end logit (``logit``). With ``allow_empty`` (SQuAD v2) the
    no-answer score — the lowest CLS start+end over the record's windows — competes,
    and wins with ``text=""`` and ``start=end=None`` when higher. ``score`` is the
    softmax probability of the answer among the ``n_best`` best candidates (plus the
    no-answer one).
    """
    import numpy as np

    examples = qa_examples(records, need_answers=False)
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise PeftMagicError(f"{len(start_logits)} start and {len(end_logits)} end logit rows for "
                             f"{len(windows)} windows", "give one row of logits per window")
    by_example: dict[int, list[int]] = {}
    for w, win in enumerate(windows):
        by_example.setdefault(int(win["example_id"]), []).append(w)

    results = []
    for k, ex in enumerate(examples):
        ctx = ex["context"]
        cands: list[tuple[float, int, int]] = []
        null = math.inf
        for w in by_example.get(k, []):
            offsets = windows[w]["offset_mapping"]
            n = len(offsets)
            s_log = np.asarray(start_logits[w], dtype=np.float64)[:n]
            e_log = np.asarray(end_logits[w], dtype=np.float64)[:n]
            cls = int(windows[w].get("cls_index", 0))
            null = min(null, float(s_log[cls] + e_log[cls]))
            s_top = np.argsort(s_log)[::-1][:n_best]
            e_top = np.argsort(e_log)[::-1][:n_best]
            for s in s_top:
                if offsets[s] is None:
                    continue
                for e in e_top:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_len:
                        continue
                    cands.append((float(s_log[s] + e_log[e]), offsets[s][0], offsets[e][1]))
        cands.sort(key=lambda c: -c[0])
        cands = cands[:n_best]
        pool = [c[0] for c in cands] + ([null] if allow_empty and null < math.inf else [])
        if pool:
            top = max(pool)
            z = sum(math.exp(x - top) for x in pool)
        if allow_empty and null < math.inf and (not cands or null > cands[0][0]):
            results.append({"text": "", "start": None, "end": None, "score": math.exp(null - top) / z,
                            "logit": null})
        elif cands:
            logit, a, b = cands[0]
            results.append({"text": ctx[a:b], "start": a, "end": b, "score": math.exp(logit - top) / z,
                            "logit": logit})
        else:
            results.append({"text": "", "start": None, "end": None, "score": 0.0, "logit": None})
    return results


class QACollator(PaddingCollator):
    """Pad QA windows to the longest in the batch (rounded up to a multiple of 8).

    ``input_ids`` pad with ``pad_id``, ``attention_mask`` and ``token_type_ids`` with 0;
    ``start_positions``/``end_positions`` (training windows) become 1-D tensors. Other
    keys (``example_id``, ``offset_mapping``, ``cls_index``) stay behind, so evaluation
    windows batch too. ``tokens`` counts the real (non-pad) tokens seen.
    """

    def __call__(self, batch: list[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        n = len(batch)
        longest = round_up(max(len(b["input_ids"]) for b in batch), self.multiple)
        out = {"input_ids": torch.full((n, longest), self.pad_id, dtype=torch.long),
               "attention_mask": torch.zeros((n, longest), dtype=torch.long)}
        if all("token_type_ids" in b for b in batch):
            out["token_type_ids"] = torch.zeros((n, longest), dtype=torch.long)
        for i, b in enumerate(batch):
            m = len(b["input_ids"])
            out["input_ids"][i, :m] = torch.tensor(b["input_ids"], dtype=torch.long)
            out["attention_mask"][i, :m] = 1
            if "token_type_ids" in out:
                out["token_type_ids"][i, :m] = torch.tensor(b["token_type_ids"], dtype=torch.long)
            self.tokens += m
        for key in ("start_positions", "end_positions"):
            if all(key in b for b in batch):
                out[key] = torch.tensor([int(b[key]) for b in batch], dtype=torch.long)
        return out
