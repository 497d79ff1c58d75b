"""Data shapes → tokenized examples (engine level, real tokenizer, no kernel)."""

from __future__ import annotations

import json

import pytest

from peft_magic.tasks import data
from peft_magic.errors import PeftMagicError


@pytest.fixture(scope="module")
def tok(tiny_llama_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_path)


def test_text_list_gets_eos_and_full_labels(tok):
    ex = data.tokenize(["hello world", "the quick brown fox"], tok, max_len=64)
    assert ex.shape == "text" and len(ex) == 2
    for row in ex.rows:
        assert row["input_ids"][-1] == tok.eos_token_id
        assert row["labels"] == row["input_ids"]


def test_completion_masks_the_prompt(tok):
    tok_nochat = tok.__class__.from_pretrained(tok.name_or_path)
    tok_nochat.chat_template = None
    ex = data.tokenize([{"prompt": "Question: what is the capital of France?", "completion": "Paris"}],
                       tok_nochat, max_len=64)
    row = ex.rows[0]
    n_prompt = len(tok_nochat("Question: what is the capital of France?")["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert all(x != -100 for x in row["labels"][n_prompt:])
    assert tok_nochat.decode(row["input_ids"][n_prompt:]).strip().startswith("Paris")


def test_completion_with_chat_template_trains_on_the_answer_only(tok):
    ex = data.tokenize([{"prompt": "What is the capital of France?", "completion": "Paris is."}], tok, max_len=128)
    row = ex.rows[0]
    trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert "Paris is." in tok.decode(trained)
    assert "capital" not in tok.decode(trained)


def test_chat_trains_on_assistant_turns_only(tok):
    msgs = [{"role": "user", "content": "Tell me a joke about cats"},
            {"role": "assistant", "content": "Cats love boxes."},
            {"role": "user", "content": "Another one about dogs"},
            {"role": "assistant", "content": "Dogs dig holes."}]
    ex = data.tokenize([{"messages": msgs}], tok, max_len=256)
    row = ex.rows[0]
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    assert "Cats love boxes." in trained and "Dogs dig holes." in trained
    assert "joke" not in trained and "Another" not in trained


def test_classification_labels_by_name(tok):
    ex = data.tokenize([{"text": "great movie", "label": "pos"}, {"text": "awful", "label": "neg"}], tok,
                       task="SEQ_CLS")
    assert ex.shape == "classify" and ex.label_names == ["neg", "pos"]
    assert [r["labels"] for r in ex.rows] == [1, 0]


def test_shape_errors_are_one_line(tok):
    with pytest.raises(PeftMagicError) as e:
        data.tokenize([{"foo": 1, "bar": 2}], tok)
    msg = str(e.value)
    assert "columns ['foo', 'bar']" in msg and "prompt+completion" in msg and "\n" not in msg
    with pytest.raises(PeftMagicError, match="not a classifier"):
        data.tokenize([{"text": "a", "label": 1}], tok)
    with pytest.raises(PeftMagicError, match="cannot train on a int"):
        data.tokenize(42, tok)
    with pytest.raises(PeftMagicError, match="empty"):
        data.tokenize([], tok)


def test_files(tmp_path, tok):
    rows = [{"text": f"example number {i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("text\n" + "\n".join(r["text"] for r in rows))
    (tmp_path / "d.txt").write_text("\n".join(r["text"] for r in rows))
    for name in ("d.jsonl", "d.json", "d.csv", "d.txt"):
        ex = data.tokenize(str(tmp_path / name), tok)
        assert len(ex) == 5, name
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(PeftMagicError, match="not valid JSON"):
        data.tokenize(str(tmp_path / "bad.jsonl"), tok)


def test_dataframe_and_datasets(tok):
    import datasets
    import pandas as pd

    df = pd.DataFrame({"prompt": ["a b", "c d"], "completion": ["e", "f"]})
    assert data.tokenize(df, tok).shape == "completion"
    ds = datasets.Dataset.from_dict({"text": ["one two", "three"]})
    assert len(data.tokenize(ds, tok)) == 2
    dd = datasets.DatasetDict({"train": ds, "validation": ds.select([0])})
    assert len(data.tokenize(dd, tok)) == 2
    assert len(data.tokenize(dd, tok, split="validation")) == 1


def test_tokenization_is_cached(tok):
    texts = [f"sentence {i}" for i in range(100)]
    a = data.tokenize(texts, tok)
    b = data.tokenize(list(texts), tok)  # same content, new object: same cache entry
    assert a is b
    c = data.tokenize(texts, tok, max_len=8)
    assert c is not a


def test_collator_pads_dynamically(tok):
    ex = data.tokenize(["a", "a much longer sentence with many more tokens in it"], tok)
    coll = data.Collator(tok.pad_token_id)
    batch = coll(ex.rows)
    longest = max(len(r["input_ids"]) for r in ex.rows)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
    short = batch["attention_mask"][0].sum().item()
    assert (batch["labels"][0, short:] == -100).all()
    assert coll.tokens == sum(len(r["input_ids"]) for r in ex.rows)


def test_training_warns_before_a_run_that_will_not_fit(tiny_llama_path):
    """The memory plan is asked before training starts; a run that cannot fit gets a warning."""
    import peft_magic as pm
    from peft_magic.state import Run, state_for
    from peft_magic.training.run import _warn_if_too_big

    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=8).model
    examples = data.tokenize(["word " * 500] * 4, loaded.tokenizer, max_len=512)
    run = Run(run_id=0, model_id="m", adapter="default", method="lora", settings={}, total_steps=1)
    _warn_if_too_big(model, state_for(model), run, {"per_device_train_batch_size": 8}, examples, "CAUSAL_LM", "LORA")
    assert run.warnings == []
    _warn_if_too_big(model, state_for(model), run, {"per_device_train_batch_size": 1 << 22}, examples,
                     "CAUSAL_LM", "LORA")
    assert len(run.warnings) == 1 and run.warnings[0].startswith("may not fit: estimated")
    assert "try" in run.warnings[0]
