"""Seq2seq: column detection, source/target tokenization, the padding collator, and the
tiny T5 built-in (builds, reloads to identical logits, trains on collated rows)."""

from __future__ import annotations

import json
import math

import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.tasks.seq2seq import PAIRS, Seq2SeqCollator, detect_seq2seq_columns, tokenize_seq2seq
from peft_magic.tasks.tiny_t5 import build_tiny_t5

RECORDS = [
    {"document": "The quick brown fox jumps over the lazy dog.", "summary": "A fox jumped."},
    {"document": "summarize: Once upon a time there was a little robot.", "summary": "A robot."},
    {"document": "Good morning!", "summary": "Hello there, how are you today?"},
]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-t5")
    build_tiny_t5(out)
    return out


@pytest.fixture(scope="module")
def tok(t5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(t5_dir)


# ----------------------------------------------------------------------------- columns


@pytest.mark.parametrize("src,tgt", [("prompt", "completion"), ("input", "target"), ("source", "target"),
                                     ("document", "summary"), ("question", "answer")])
def test_detects_the_pairs(src, tgt):
    assert detect_seq2seq_columns([{src: "a", tgt: "b", "id": 1}]) == (src, tgt)


def test_unknown_columns_name_what_was_found_and_accepted():
    with pytest.raises(PeftMagicError) as e:
        detect_seq2seq_columns([{"en": "a", "de": "b"}])
    msg = str(e.value)
    assert "the data has columns ['en', 'de']" in msg
    assert all(f"{a}/{b}" in msg for a, b in PAIRS)
    with pytest.raises(PeftMagicError, match="the seq2seq data is empty"):
        detect_seq2seq_columns([])
    with pytest.raises(PeftMagicError, match="row 1 of the seq2seq data is a str"):
        detect_seq2seq_columns([{"input": "a", "target": "b"}, "c"])


# ----------------------------------------------------------------------------- tokenization


def test_source_and_target_ids(tok):
    ex = tokenize_seq2seq(RECORDS + [{"document": "x", "summary": ""}], tok, max_len=64)
    assert ex.shape == "seq2seq" and len(ex) == 3 and ex.skipped == 1 and ex.truncated == 0 and ex.n_raw == 4
    for row, rec in zip(ex.rows, RECORDS):
        assert row["input_ids"] == tok(rec["document"])["input_ids"]
        assert row["labels"] == tok(text_target=rec["summary"])["input_ids"]
        assert row["input_ids"][-1] == row["labels"][-1] == tok.eos_token_id == 1
        assert tok.decode(row["labels"], skip_special_tokens=True) == rec["summary"]


def test_truncation_is_counted_and_keeps_eos(tok):
    ex = tokenize_seq2seq(RECORDS, tok, max_len=8, max_target_len=6)
    full_src = [len(tok(r["document"])["input_ids"]) for r in RECORDS]
    full_tgt = [len(tok(text_target=r["summary"])["input_ids"]) for r in RECORDS]
    want = sum(1 for s, t in zip(full_src, full_tgt) if s > 8 or t > 6)
    assert want >= 2 and ex.truncated == want
    for row in ex.rows:
        assert len(row["input_ids"]) <= 8 and len(row["labels"]) <= 6
        assert row["input_ids"][-1] == 1 and row["labels"][-1] == 1


def test_collator_pads_inputs_with_pad_and_labels_with_minus_100():
    rows = [{"input_ids": [5, 6, 7, 1], "labels": [8, 1]},
            {"input_ids": list(range(3, 12)) + [1], "labels": [9, 9, 9, 1]}]
    collate = Seq2SeqCollator(pad_id=0)
    b = collate(rows)
    assert b["input_ids"].shape == (2, 16) and b["labels"].shape == (2, 8)  # each side to a multiple of 8
    assert b["input_ids"][0].tolist() == [5, 6, 7, 1] + [0] * 12
    assert b["attention_mask"][0].tolist() == [1] * 4 + [0] * 12
    assert b["attention_mask"][1].tolist() == [1] * 10 + [0] * 6
    assert b["labels"][0].tolist() == [8, 1] + [-100] * 6
    assert b["labels"][1].tolist() == [9, 9, 9, 1] + [-100] * 4
    assert collate.tokens == 4 + 2 + 10 + 4
    assert Seq2SeqCollator(0, multiple=1)(rows)["labels"].shape == (2, 4)
    with pytest.raises(PeftMagicError, match="no pad token"):
        Seq2SeqCollator(None)


# ----------------------------------------------------------------------------- tiny T5


def test_tiny_t5_tokenizer_follows_t5_conventions(t5_dir, tok):
    assert tok.is_fast
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert (tok.eos_token, tok.eos_token_id) == ("</s>", 1)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", 2)
    ids = tok("summarize: the quick brown fox")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # ASCII text needs no <unk>
    assert tok.decode(ids, skip_special_tokens=True) == "summarize: the quick brown fox"
    cfg = json.loads((t5_dir / "config.json").read_text())
    assert cfg["model_type"] == "t5" and cfg["d_model"] == 64 and cfg["num_layers"] == cfg["num_decoder_layers"] == 2
    assert cfg["num_heads"] == 4 and cfg["d_ff"] == 128 and cfg["vocab_size"] == len(tok)
    assert cfg["decoder_start_token_id"] == cfg["pad_token_id"] == 0 and cfg["eos_token_id"] == 1


def test_tiny_t5_reloads_to_identical_logits(t5_dir, tok):
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, T5ForConditionalGeneration

    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(t5_dir, output_loading_info=True)
    assert isinstance(loaded, T5ForConditionalGeneration)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.manual_seed(0)
    rebuilt = T5ForConditionalGeneration(AutoConfig.from_pretrained(t5_dir))  # the recipe, again
    enc = tok(["summarize: the quick brown fox", "hi"], padding=True, return_tensors="pt")
    dec = torch.tensor([[0, 5, 6], [0, 7, 1]])
    with torch.no_grad():
        a = loaded.eval()(**enc, decoder_input_ids=dec).logits
        b = rebuilt.eval()(**enc, decoder_input_ids=dec).logits
    assert a.shape == (2, 3, len(tok))
    assert torch.equal(a, b)


def test_rows_train_the_tiny_t5(t5_dir, tok):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(t5_dir).eval()
    ex = tokenize_seq2seq(RECORDS, tok, max_len=64)
    batch = Seq2SeqCollator(tok.pad_token_id)(ex.rows)
    with torch.no_grad():
        loss = model(**batch).loss
        # padding changes nothing: the batch loss is the token-weighted mean of the single losses
        singles = [(model(**Seq2SeqCollator(tok.pad_token_id, multiple=1)([r])).loss, len(r["labels"]))
                   for r in ex.rows]
    assert math.isfinite(loss.item())
    want = sum(l * n for l, n in singles) / sum(n for _, n in singles)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    gen = model.eval().generate(batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1], max_new_tokens=4)
    assert gen[0, 0].item() == 0 and gen.shape[1] <= 5  # starts from decoder_start_token_id = pad
