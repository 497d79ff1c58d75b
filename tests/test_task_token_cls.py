"""Token classification: label names, word → sub-word alignment on the real MiniLM
tokenizer, entity decoding with character spans, and a forward pass of a real model."""

from __future__ import annotations

import math

import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.tasks.metrics import entity_scores
from peft_magic.tasks.causal_lm import Collator
from peft_magic.tasks.token_cls import (
    align_predictions,
    decode_entities,
    detect_token_cls,
    encode_for_predict,
    label_names_for,
    tokenize_token_cls,
)

RECORDS = [
    {"tokens": ["Huggingface", "is", "based", "in", "NYC", "."], "ner_tags": ["B-ORG", "O", "O", "O", "B-LOC", "O"]},
    {"tokens": ["John", "Smithsonian", "lives", "in", "New", "York"],
     "ner_tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]},
]


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


# ----------------------------------------------------------------------------- label names


def test_label_names_from_string_tags_sorted_with_o_first():
    assert label_names_for(RECORDS) == ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-PER"]
    assert label_names_for([{"tokens": ["a"], "tags": ["NOUN"]}, {"tokens": ["b"], "tags": ["ADJ"]}]) == ["ADJ", "NOUN"]


def test_label_names_given_or_from_classlabel():
    ints = [{"tokens": ["John", "ran"], "ner_tags": [1, 0]}]
    assert label_names_for(ints, given="O, B-PER ,I-PER") == ["O", "B-PER", "I-PER"]
    assert label_names_for(ints, class_label_names=["O", "B-PER"]) == ["O", "B-PER"]
    with pytest.raises(PeftMagicError, match="integer ids and no tag names"):
        label_names_for(ints)
    with pytest.raises(PeftMagicError, match="row 0: tag id 1 is out of range for the 1 label names"):
        label_names_for(ints, given=["O"])
    with pytest.raises(PeftMagicError, match="row 1: tag 'I-LOC' is not one of the label names"):
        label_names_for(RECORDS, given="O,B-ORG,B-LOC,B-PER,I-PER")
    with pytest.raises(PeftMagicError, match="repeat"):
        label_names_for(RECORDS, given="O,O")


def test_bad_rows_name_the_row():
    bad = RECORDS + [{"tokens": ["a", "b"], "ner_tags": ["O"]}]
    with pytest.raises(PeftMagicError, match="row 2: 2 words in 'tokens' but 1 tags in 'ner_tags'"):
        label_names_for(bad)
    with pytest.raises(PeftMagicError, match="row 0: 'tokens' must be a list of words, got str"):
        label_names_for([{"tokens": "a b", "tags": ["O", "O"]}])
    with pytest.raises(PeftMagicError, match="row 1: tags mix strings and integers"):
        label_names_for([{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["b"], "tags": [0]}])
    with pytest.raises(PeftMagicError, match=r"columns \['text', 'label'\]"):
        detect_token_cls([{"text": "a", "label": 1}])


# ----------------------------------------------------------------------------- alignment


def test_first_subword_carries_the_label(tok):
    names = label_names_for(RECORDS)
    ex = tokenize_token_cls(RECORDS, tok, max_len=64, label_names=names)
    assert ex.shape == "token-cls" and ex.label_names == names and ex.truncated == 0 and len(ex) == 2
    row = ex[0]
    toks = tok.convert_ids_to_tokens(row["input_ids"])
    assert toks[:3] == ["[CLS]", "hugging", "##face"]  # one word, two sub-words
    assert row["word_ids"][:3] == [None, 0, 0]
    assert row["labels"][:3] == [-100, names.index("B-ORG"), -100]
    assert toks[-1] == "[SEP]" and row["labels"][-1] == -100
    for r, rec in zip(ex.rows, RECORDS):
        # exactly one labelled token per word, in order, with the word's tag
        kept = [(w, lab) for w, lab in zip(r["word_ids"], r["labels"]) if lab != -100]
        assert [w for w, _ in kept] == list(range(len(rec["tokens"])))
        assert [names[lab] for _, lab in kept] == rec["ner_tags"]
        assert len(r["labels"]) == len(r["input_ids"]) == len(r["word_ids"])


def test_int_tags_truncation_and_empty_rows(tok):
    recs = [{"words": ["Zurich"] * 40, "tags": [1] * 40}, {"words": [], "tags": []}, {"words": ["x"], "tags": [0]}]
    ex = tokenize_token_cls(recs, tok, max_len=16, label_names=["O", "B-LOC"])
    assert (ex.truncated, ex.skipped, len(ex), ex.n_raw) == (1, 1, 2, 3)
    cut = ex[0]
    assert len(cut["input_ids"]) == 16
    assert tok.convert_ids_to_tokens(cut["input_ids"])[-1] == "[SEP]"  # the closing token survives the cut
    assert [x for x in cut["labels"] if x != -100] == [1] * 14
    with pytest.raises(PeftMagicError, match="row 0: tag 'B-ORG' is not one of the label names"):
        tokenize_token_cls(RECORDS, tok, label_names=["O"])


def test_align_predictions_keeps_labelled_positions():
    import numpy as np

    names = ["O", "B-PER", "I-PER"]
    labels = np.array([[-100, 1, -100, 2, 0, -100, -100, -100]])
    logits = np.zeros((1, 8, 3))
    for j, k in enumerate([0, 1, 2, 1, 0, 0, 2, 2]):
        logits[0, j, k] = 5.0
    true, pred = align_predictions(logits, labels, names)
    assert true == [["B-PER", "I-PER", "O"]]
    assert pred == [["B-PER", "B-PER", "O"]]
    assert entity_scores(true, pred)["f1"] == 0.0


# ----------------------------------------------------------------------------- decoding


def test_decode_entities_on_words():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words = ["John", "Smith", "lives", "in", "New", "York"]
    word_ids = [None, 0, 1, 1, 2, 3, 4, 5, None]
    # the second sub-token of "Smith" says B-LOC: ignored, only first sub-tokens count
    preds = [0, 1, 2, 3, 0, 0, 3, 4, 0]
    ents = decode_entities(words, word_ids, preds, names)
    assert ents == [
        {"text": "John Smith", "type": "PER", "start": 0, "end": 10, "score": None},
        {"text": "New York", "type": "LOC", "start": 20, "end": 28, "score": None},
    ]


def test_decode_entities_follow_conll_rules():
    names = ["O", "B-PER", "I-PER", "I-LOC"]
    words = ["a", "b", "c", "d"]
    # O I-PER → an entity; I-PER I-LOC → split by type
    ents = decode_entities(words, [0, 1, 2, 3], [0, 2, 2, 3], names)
    assert [(e["text"], e["type"]) for e in ents] == [("b c", "PER"), ("d", "LOC")]
    ents = decode_entities(words, [0, 1, 2, 3], [1, 1, 0, 1], names)  # B B → two entities
    assert [e["text"] for e in ents] == ["a", "b", "d"]
    ents = decode_entities(["x", "y"], [0, 1], [0, 0], names)
    assert ents == []


def test_decode_entities_on_raw_text_keeps_original_characters(tok):
    text = "Ask Hugging Face, in New York."
    enc = encode_for_predict(text, tok)
    names = ["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == ["[CLS]", "ask", "hugging", "face", ",", "in", "new", "york", ".", "[SEP]"]
    want = {"hugging": [0, 5, 0], "face": [0, 0, 5], "new": [0, 0, 0, 5, 0], "york": [0, 0, 0, 0, 5]}
    logits = [(want.get(t, [5]) + [0] * 5)[:5] for t in tokens]
    ents = decode_entities(text, enc["word_ids"], logits, names, offsets=enc["offsets"])
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in ents] == [
        ("Hugging Face", "ORG", 4, 16), ("New York", "LOC", 21, 29)]
    for e in ents:
        assert text[e["start"]:e["end"]] == e["text"]
        p = math.exp(5) / (math.exp(5) + 4)  # softmax of one 5 among four 0s
        assert e["score"] == pytest.approx(p)
    with pytest.raises(PeftMagicError, match="needs the tokenizer's offsets"):
        decode_entities(text, enc["word_ids"], logits, names)


def test_encode_for_predict_on_words(tok):
    enc = encode_for_predict(["Huggingface", "rocks"], tok)
    assert enc["word_ids"] == [None, 0, 0, 1, None] and enc["offsets"] is None


# ----------------------------------------------------------------------------- end to end


def test_rows_train_a_real_token_classifier(minilm, tok):
    import torch
    from transformers import AutoModelForTokenClassification

    names = label_names_for(RECORDS)
    ex = tokenize_token_cls(RECORDS, tok, max_len=64, label_names=names)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(minilm, num_labels=len(names)).eval()
    collate = Collator(tok.pad_token_id)
    batch = collate(ex.rows)
    assert batch["input_ids"].shape[1] % 8 == 0
    assert collate.tokens == ex.real_tokens
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    with torch.no_grad():
        loss = model(**batch).loss
        # padding changes nothing: the batch loss is the label-weighted mean of the single losses
        singles = [(model(**Collator(tok.pad_token_id, multiple=1)([r])).loss,
                    sum(x != -100 for x in r["labels"])) for r in ex.rows]
    assert math.isfinite(loss.item())
    want = sum(l * n for l, n in singles) / sum(n for _, n in singles)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    loss_train = model.train()(**batch).loss
    loss_train.backward()
    assert model.classifier.weight.grad is not None and torch.isfinite(model.classifier.weight.grad).all()


def test_numpy_and_datasets_inputs(tok):
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, List, Value

    names = ["O", "B-PER", "I-PER"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    ds = Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]}, features=features)
    got = label_names_for(ds.to_list(), class_label_names=ds.features["ner_tags"].feature.names)
    assert got == names
    # list columns of a pandas DataFrame arrive as numpy arrays
    recs = [{"tokens": np.array(["Ada", "Lovelace", "wrote"]), "ner_tags": np.array([1, 2, 0])}]
    ex = tokenize_token_cls(recs, tok, label_names=got)
    assert [x for x in ex[0]["labels"] if x != -100] == [1, 2, 0]
