"""Our padding collators give exactly the batches of their transformers twins.

They are kept (``tasks/common.PaddingCollator`` says why: no tokenizer needed, right padding
whatever the tokenizer's side, the token count); this is the check that they are not a
re-write that drifted: same tensors as ``DataCollatorForSeq2Seq`` (causal LM and seq2seq
labels padded with -100), ``DataCollatorWithPadding`` (classification, QA positions) and
``DataCollatorForTokenClassification``, with ``pad_to_multiple_of=8``.
"""

from __future__ import annotations

import random

import pytest

import peft_magic as pm
from peft_magic.tasks.causal_lm import Collator
from peft_magic.tasks.qa import QACollator
from peft_magic.tasks.seq2seq import Seq2SeqCollator


@pytest.fixture(scope="module")
def tok():
    return pm.load("tiny-llama").tokenizer


def _rows(n=6, labels="copy", seed=0):
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [rnd.randint(5, 400) for _ in range(rnd.randint(3, 40))]
        row = {"input_ids": ids}
        if labels == "copy":
            row["labels"] = [-100] * 2 + ids[2:]
        elif labels == "class":
            row["labels"] = rnd.randint(0, 2)
        elif labels == "target":
            row["labels"] = [rnd.randint(5, 400) for _ in range(rnd.randint(2, 20))]
        rows.append(row)
    return rows


def _same(ours, theirs):
    import torch

    assert set(ours) <= set(theirs)
    for k in ours:
        assert torch.equal(ours[k], theirs[k].to(ours[k].dtype)), k


def test_causal_lm_and_token_classification_match(tok):
    from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification

    rows = _rows()
    ours = Collator(tok.pad_token_id)([dict(r) for r in rows])
    _same(ours, DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8)([dict(r) for r in rows]))
    _same(ours, DataCollatorForTokenClassification(tok, pad_to_multiple_of=8)([dict(r) for r in rows]))
    assert ours["input_ids"].shape[1] % 8 == 0


def test_classification_matches(tok):
    from transformers import DataCollatorWithPadding

    rows = _rows(labels="class")
    ours = Collator(tok.pad_token_id, classify=True)([dict(r) for r in rows])
    _same(ours, DataCollatorWithPadding(tok, pad_to_multiple_of=8)([dict(r) for r in rows]))


def test_seq2seq_matches(tok):
    from transformers import DataCollatorForSeq2Seq

    rows = _rows(labels="target")
    ours = Seq2SeqCollator(tok.pad_token_id)([dict(r) for r in rows])
    _same(ours, DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8)([dict(r) for r in rows]))


def test_qa_matches(tok):
    from transformers import DataCollatorWithPadding

    rows = [dict(r, start_positions=i, end_positions=i + 1) for i, r in enumerate(_rows(labels=None))]
    ours = QACollator(tok.pad_token_id)([dict(r) for r in rows])
    _same(ours, DataCollatorWithPadding(tok, pad_to_multiple_of=8)([dict(r) for r in rows]))


def test_a_left_padding_tokenizer_still_gives_right_padded_training_rows(tok):
    import copy

    left = copy.copy(tok)
    left.padding_side = "left"
    rows = _rows()
    ours = Collator(left.pad_token_id)([dict(r) for r in rows])
    first = rows[0]["input_ids"]
    assert ours["input_ids"][0, :len(first)].tolist() == first  # the row starts at position 0

