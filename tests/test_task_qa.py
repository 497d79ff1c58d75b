"""Extractive QA: record validation, windows over long contexts on the real MiniLM
tokenizer, span post-processing on synthetic logits, and a forward pass of a real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.tasks.qa import QACollator, postprocess_qa, qa_examples, tokenize_qa_eval, tokenize_qa_train

FILLER = " ".join(f"Paragraph {i} talks about the weather and nothing important." for i in range(8))
ANSWER = "Zurich near the lake"
CONTEXT = f"{FILLER} The headquarters of the company is in {ANSWER}. {FILLER}"
START = CONTEXT.index(ANSWER)
LONG = {"question": "Where is the headquarters?", "context": CONTEXT,
        "answers": {"text": [ANSWER], "answer_start": [START]}}


def _materialize(name: str) -> str:
    try:
        from peft_magic.model.builtins import materialize
    except ImportError:  # the package is being restructured
        from peft_magic.model.builtins import materialize
    return str(materialize(name))


@pytest.fixture(scope="module")
def minilm() -> str:
    return _materialize("minilm")


@pytest.fixture(scope="module")
def tok(minilm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm)


# ----------------------------------------------------------------------------- records


def test_record_shapes():
    ex = qa_examples([
        LONG,
        {"question": "q", "context": "Paris is big", "answer": "big"},  # flat answer, found
        {"question": "q", "context": "abc", "answers": {"text": [], "answer_start": []}},  # v2 unanswerable
        {"question": "q", "context": "x y", "answers": [{"text": "y", "answer_start": 2}]},
    ])
    assert [e["answers"] for e in ex] == [[(ANSWER, START)], [("big", 9)], [], [("y", 2)]]


def test_wrong_answer_start_names_the_row():
    bad = [LONG, {"question": "q", "context": "The capital is Paris.",
                  "answers": {"text": ["Paris"], "answer_start": [4]}}]
    with pytest.raises(PeftMagicError, match=r"row 1: the answer 'Paris' is not at answer_start 4 .*"
                                             r"there it reads 'capit'.* occurs at character 15"):
        qa_examples(bad)
    with pytest.raises(PeftMagicError, match="row 0: the answer 'Lyon' does not occur in the context"):
        qa_examples([{"question": "q", "context": "Paris", "answer": "Lyon"}])
    with pytest.raises(PeftMagicError, match="row 0: answers has 1 texts but 2 answer_start"):
        qa_examples([{"question": "q", "context": "Paris", "answers": {"text": ["Paris"], "answer_start": [0, 0]}}])
    with pytest.raises(PeftMagicError,
                       match=r"needs 'question' and 'context' columns; the data has \['question', 'answer'\]"):
        qa_examples([{"question": "q", "answer": "a"}])
    with pytest.raises(PeftMagicError, match="row 0 has no 'answers' or 'answer'"):
        qa_examples([{"question": "q", "context": "c"}])


# ----------------------------------------------------------------------------- windows


def _holds_answer(row_offsets, seq_ids, start, end):
    ctx = [o for o, s in zip(row_offsets, seq_ids) if s == 1]
    return ctx[0][0] <= start and ctx[-1][1] >= end


def test_long_context_windows_point_at_the_answer(tok):
    ex = tokenize_qa_train([LONG], tok, max_len=64, stride=16)
    assert ex.shape == "qa" and ex.truncated == 1 and len(ex) >= 3
    # the same windows, independently, with offsets: which ones hold the whole answer?
    enc = tok([LONG["question"]], [CONTEXT], truncation="only_second", max_length=64, stride=16,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(enc["input_ids"]) == len(ex)
    holding = []
    for w, row in enumerate(ex.rows):
        assert len(row["input_ids"]) <= 64 and row["input_ids"] == enc["input_ids"][w]
        assert set(row) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
        offsets = enc["offset_mapping"][w]
        s, e = row["start_positions"], row["end_positions"]
        if _holds_answer(offsets, enc.sequence_ids(w), START, START + len(ANSWER)):
            holding.append(w)
            assert 0 < s <= e
            assert CONTEXT[offsets[s][0]:offsets[e][1]] == ANSWER
            assert tok.decode(row["input_ids"][s:e + 1]) == ANSWER.lower()
        else:
            assert (s, e) == (0, 0), f"window {w} does not hold the answer but points at {s}..{e}"
    assert 1 <= len(holding) < len(ex)


def test_unanswerable_points_at_cls_and_question_too_long(tok):
    ex = tokenize_qa_train([{**LONG, "answers": {"text": [], "answer_start": []}}], tok, max_len=64, stride=16)
    assert all((r["start_positions"], r["end_positions"]) == (0, 0) for r in ex.rows)
    long_q = {**LONG, "question": "why " * 50}
    with pytest.raises(PeftMagicError, match=r"row 1: the question takes 50 tokens, leaving 11 of max_len 64 "
                                             r"for the context, not more than the stride 16"):
        tokenize_qa_train([LONG, long_q], tok, max_len=64, stride=16)


def test_eval_windows_keep_context_offsets_only(tok):
    recs = [LONG, {"question": "Who?", "context": "Ada wrote it."}]  # no answers needed
    ev = tokenize_qa_eval(recs, tok, max_len=64, stride=16)
    assert ev.shape == "qa-eval" and ev.truncated == 1
    ids = [w["example_id"] for w in ev.rows]
    assert ids == sorted(ids) and ids[-1] == 1 and ids.count(1) == 1
    short = ev.rows[-1]
    toks = tok.convert_ids_to_tokens(short["input_ids"])
    assert toks == ["[CLS]", "who", "?", "[SEP]", "ada", "wrote", "it", ".", "[SEP]"]
    assert short["offset_mapping"] == [None, None, None, None, (0, 3), (4, 9), (10, 12), (12, 13), None]
    assert short["cls_index"] == 0


# ----------------------------------------------------------------------------- post-processing


def _peaks(windows, spans, length=64):
    """Logits that are 0 except +v at the given (window, start token, end token, v)."""
    start = np.zeros((len(windows), length))
    end = np.zeros((len(windows), length))
    for w, s, e, v in spans:
        start[w, s] += v
        end[w, e] += v
    return start, end


def _token_span(window, text, char_start):
    offs = window["offset_mapping"]
    s = next(j for j, o in enumerate(offs) if o is not None and o[0] == char_start)
    e = next(j for j, o in enumerate(offs) if o is not None and o[1] == char_start + len(text))
    return s, e


def test_postprocess_finds_the_peaked_span(tok):
    ev = tokenize_qa_eval([LONG], tok, max_len=64, stride=16)
    w = next(k for k, win in enumerate(ev.rows) if _holds_answer(
        [o or (0, 0) for o in win["offset_mapping"]], [1 if o else None for o in win["offset_mapping"]],
        START, START + len(ANSWER)))
    s, e = _token_span(ev.rows[w], ANSWER, START)
    other = (w + 2) % len(ev)  # a weaker candidate in another window
    s2 = next(j for j, o in enumerate(ev.rows[other]["offset_mapping"]) if o is not None)
    start, end = _peaks(ev.rows, [(w, s, e, 10.0), (other, s2, s2, 6.0)])
    (ans,) = postprocess_qa(start, end, ev.rows, [LONG])
    assert ans["text"] == ANSWER and (ans["start"], ans["end"]) == (START, START + len(ANSWER))
    assert ans["logit"] == pytest.approx(20.0) and 0.5 < ans["score"] <= 1.0

    # an end before its start, or a span longer than max_answer_len, is never chosen
    start, end = _peaks(ev.rows, [(w, s, e, 10.0)])
    start -= 100.0
    start[w, s] = 10.0  # only one plausible start …
    end[w, s - 1] += 30.0  # … and a strong end just before it
    (ans,) = postprocess_qa(start, end, ev.rows, [LONG])
    assert ans["text"] == ANSWER
    (short,) = postprocess_qa(start, end, ev.rows, [LONG], max_answer_len=e - s)
    assert short["start"] == START and ANSWER.startswith(short["text"]) and len(short["text"]) < len(ANSWER)


def test_postprocess_null_answer(tok):
    ev = tokenize_qa_eval([LONG], tok, max_len=64, stride=16)
    w = next(k for k, win in enumerate(ev.rows) if any(o and o[0] == START for o in win["offset_mapping"]))
    s, e = _token_span(ev.rows[w], ANSWER, START)
    start, end = _peaks(ev.rows, [(w, s, e, 10.0)] + [(k, 0, 0, 15.0) for k in range(len(ev))])
    (v2,) = postprocess_qa(start, end, ev.rows, [LONG], allow_empty=True)
    assert v2["text"] == "" and v2["start"] is None and v2["logit"] == pytest.approx(30.0)
    (v1,) = postprocess_qa(start, end, ev.rows, [LONG], allow_empty=False)
    assert v1["text"] == ANSWER
    # the null score is the lowest over the windows: one window sure of an answer is enough
    start[1 if w != 1 else 0, 0] = 2.0
    end[1 if w != 1 else 0, 0] = 2.0
    (v2,) = postprocess_qa(start, end, ev.rows, [LONG], allow_empty=True)
    assert v2["text"] == ANSWER
    assert v2["score"] > 0.99 and v2["logit"] == pytest.approx(20.0)


# ----------------------------------------------------------------------------- end to end


def test_windows_train_a_real_qa_model(minilm, tok):
    import torch
    from transformers import AutoModelForQuestionAnswering

    recs = [LONG, {"question": "Who wrote it?", "context": "Ada wrote it in 1843.", "answer": "Ada"}]
    ex = tokenize_qa_train(recs, tok, max_len=64, stride=16)
    collate = QACollator(tok.pad_token_id)
    batch = collate(ex.rows)
    assert batch["input_ids"].shape == (len(ex), 64) and set(batch) == {
        "input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert collate.tokens == ex.real_tokens
    assert batch["token_type_ids"][-1].tolist()[:9] == [0] * 6 + [1] * 3  # [CLS] who wrote it ? [SEP] | ada
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm)
    out = model(**batch)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    assert torch.isfinite(model.qa_outputs.weight.grad).all()

    ev = tokenize_qa_eval(recs, tok, max_len=64, stride=16)
    model.eval()
    with torch.no_grad():
        out = model(**QACollator(tok.pad_token_id)(ev.rows))
    answers = postprocess_qa(out.start_logits.numpy(), out.end_logits.numpy(), ev.rows, recs)
    assert len(answers) == 2
    for a, r in zip(answers, recs):
        assert a["text"] and r["context"][a["start"]:a["end"]] == a["text"]


def test_left_padding_tokenizers_put_the_context_first(minilm):
    from transformers import AutoTokenizer

    left = AutoTokenizer.from_pretrained(minilm, padding_side="left")
    ex = tokenize_qa_train([LONG], left, max_len=64, stride=16)
    hits = [r for r in ex.rows if r["start_positions"] != 0]
    assert hits and len(hits) < len(ex)
    for r in hits:
        assert left.decode(r["input_ids"][r["start_positions"]:r["end_positions"] + 1]) == ANSWER.lower()
        assert left.decode(r["input_ids"][-8:]).endswith("where is the headquarters? [SEP]")
    ev = tokenize_qa_eval([LONG], left, max_len=64, stride=16)
    w = next(k for k, win in enumerate(ev.rows) if any(o and o[0] == START for o in win["offset_mapping"]))
    s, e = _token_span(ev.rows[w], ANSWER, START)
    start, end = _peaks(ev.rows, [(w, s, e, 10.0)])
    assert postprocess_qa(start, end, ev.rows, [LONG])[0]["text"] == ANSWER


def test_numpy_answers_from_pandas():
    ex = qa_examples([{"question": "q", "context": "Paris is big",
                       "answers": {"text": np.array(["big"]), "answer_start": np.array([9])}}])
    assert ex[0]["answers"] == [("big", 9)]
