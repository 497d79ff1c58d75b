"""Preference data: recognised by its columns, every row checked (one line naming the bad
row, nothing changed), and tokenized exactly as TRL's own trainers tokenize it."""

from __future__ import annotations

import copy

import pytest

import peft_magic as pm
from peft_magic.errors import PeftMagicError
from peft_magic.tasks.families import describe
from peft_magic.tasks.preference import PAIRED, UNPAIRED, detect_preference, tokenize_preference

TOPICS = ["the sea", "a cat", "the moon", "winter", "coffee", "a forest"]


def pairs(n: int = 6) -> list[dict]:
    return [{"prompt": f"Describe {t} in one sentence.", "chosen": f"Ah, {t}! It is truly wonderful.",
             "rejected": f"{t.upper()} IS OK."} for t in TOPICS[:n]]


def chat_pairs() -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in pairs()]


def unpaired() -> list[dict]:
    out = []
    for r in pairs():
        out += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                {"prompt": r["prompt"], "completion": r["rejected"], "label": "false"}]
    return out


@pytest.fixture(scope="module")
def tiny():
    return pm.load("tiny-llama")


@pytest.fixture(scope="module")
def plain_tokenizer(tiny):
    """The same tokenizer without a chat template: text data stays text."""
    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    return tok


def test_shapes_are_recognised_by_their_columns(tiny):
    assert detect_preference(pairs()) == PAIRED
    assert detect_preference(chat_pairs()) == PAIRED
    assert detect_preference(unpaired()) == UNPAIRED
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in chat_pairs()]
    assert detect_preference(implicit) == PAIRED
    for supervised in (["some text"], [{"prompt": "a", "completion": "b"}], [{"text": "t", "label": 1}]):
        assert detect_preference(supervised) is None
    ex = tokenize_preference(implicit, tiny.tokenizer)
    assert ex.records[0]["prompt"] == [{"role": "user", "content": "Describe the sea in one sentence."}]
    assert ex.records[0]["chosen"] == [{"role": "assistant", "content": "Ah, the sea! It is truly wonderful."}]
    assert describe(tokenize_preference(pairs(), tiny.tokenizer)) == \
        "6 examples · prompt → chosen / rejected (preference pairs)"
    kto = tokenize_preference(unpaired(), tiny.tokenizer)
    assert [r["label"] for r in kto.records[:2]] == [True, False] and kto.sequences_per_row == 1


def test_text_becomes_the_chat_template_when_the_tokenizer_has_one(tiny, plain_tokenizer):
    """The format prompt → completion training uses, so an SFT adapter and the DPO run on
    it see the same text: one user turn, one assistant turn."""
    chat = tokenize_preference(pairs(), tiny.tokenizer)
    assert chat.conversational and chat.records[0]["prompt"] == [{"role": "user",
                                                                  "content": "Describe the sea in one sentence."}]
    text = tokenize_preference(pairs(), plain_tokenizer)
    assert not text.conversational and text.records[0]["chosen"] == " Ah, the sea! It is truly wonderful."
    assert text.rows[0]["chosen_ids"][-1] == plain_tokenizer.eos_token_id  # TRL appends EOS to text answers


@pytest.mark.parametrize("case, row, needle", [
    ("missing rejected", 2, "row 2 of the preference data has no 'rejected'"),
    ("empty chosen", 1, "row 1 of the preference data: 'chosen' is empty"),
    ("long prompt", 3, "row 3 of the preference data: the prompt is"),
])
def test_a_bad_row_is_one_line_naming_it_and_nothing_changes(tiny, case, row, needle):
    data = pairs()
    if case == "missing rejected":
        del data[row]["rejected"]
    elif case == "empty chosen":
        data[row]["chosen"] = "   "
    else:
        data[row]["prompt"] = "Describe this at length: " + "very " * 40
    model = pm.attach(tiny.model, "lora", r=4, name="bad_rows").model
    try:
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runs = len(pm.runs())
        with pytest.raises(PeftMagicError) as err:
            pm.train(model, data, tokenizer=tiny.tokenizer, steps=2, batch=2, max_len=48, display=None)
        message = str(err.value)
        assert needle in message and "\n" not in message
        if case == "long prompt":
            assert "max_len is 48" in message and "raise max_len=" in (err.value.hint or "")
        assert len(pm.runs()) == runs  # no run was started
        assert all(p.equal(before[n]) for n, p in model.named_parameters() if p.requires_grad)
    finally:
        pm.detach(model)


def test_labels_of_unpaired_data(tiny):
    rows = unpaired()
    rows[3]["label"] = 0
    rows[4]["label"] = "maybe"
    with pytest.raises(PeftMagicError, match=r"row 4 of the preference data: label must be true or false"):
        tokenize_preference(rows, tiny.tokenizer)
    rows[4]["label"] = 1
    assert [r["label"] for r in tokenize_preference(rows, tiny.tokenizer).records[2:5]] == [True, False, True]
    del rows[5]["label"]
    with pytest.raises(PeftMagicError, match=r"row 5 of the preference data has no 'label'"):
        tokenize_preference(rows, tiny.tokenizer)


def _trl_dataset(trainer_cls: type, config_cls: type, model: object, tokenizer: object, records: list,
                 tmp_path: object) -> object:
    """TRL's own tokenized training dataset for ``records`` (its trainer, built on a LoRA)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    args = config_cls(output_dir=str(tmp_path), report_to="none", bf16=False, gradient_checkpointing=False,
                      use_cpu=True, max_length=512, per_device_train_batch_size=2)
    trainer = trainer_cls(model=peft_model, args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list(records))
    return trainer.train_dataset


@pytest.mark.parametrize("form", ["chat", "text"])
def test_token_ids_are_trls_own(tiny, plain_tokenizer, tmp_path, form):
    """Our rows (what %peft evaluate and the fit check read) against the dataset TRL's
    DPOTrainer makes from the same records."""
    from trl import DPOConfig, DPOTrainer

    tok = tiny.tokenizer if form == "chat" else plain_tokenizer
    ex = tokenize_preference(pairs(), tok)
    theirs = _trl_dataset(DPOTrainer, DPOConfig, tiny.model, tok, ex.records, tmp_path)
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert [r[key] for r in ex.rows] == theirs[key], key


def test_kto_token_ids_are_trls_own(tiny, tmp_path):
    from trl import KTOConfig, KTOTrainer

    ex = tokenize_preference(unpaired(), tiny.tokenizer)
    theirs = _trl_dataset(KTOTrainer, KTOConfig, tiny.model, tiny.tokenizer, ex.records, tmp_path)
    assert [r["prompt_ids"] for r in ex.rows] == theirs["prompt_ids"]
    assert [r["completion_ids"] for r in ex.rows] == theirs["completion_ids"]
    assert [r["label"] for r in ex.rows] == theirs["label"]
