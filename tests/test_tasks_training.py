"""The other tasks end to end (engine level): seq2seq, token classification and extractive QA
train, report the field's metrics during training, evaluate and predict — and the loss a
run reports is the model's own loss for every method and task."""

from __future__ import annotations

import math
import random

import pytest

import peft_magic as pm
from peft_magic.errors import PeftMagicError
from peft_magic.tasks.families import collator_for
from peft_magic.tasks import data as data_mod
from peft_magic.training.run import train

PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry"]
PLACES = ["Paris", "Berlin", "Rome", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague"]
NER_TAGS = "O,B-PER,I-PER,B-LOC,I-LOC"


def ner_rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        p, c = rnd.choice(PEOPLE), rnd.choice(PLACES)
        words, tags = rnd.choice([([p, "lives", "in", c], ["B-PER", "O", "O", "B-LOC"]),
                                  (["Yesterday", p, "visited", c], ["O", "B-PER", "O", "B-LOC"]),
                                  ([c, "welcomed", p], ["B-LOC", "O", "B-PER"])])
        out.append({"tokens": words, "tags": tags})
    return out


COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
THINGS = ["car", "house", "kite", "boat", "door", "hat", "bike", "cup"]
NAMES = ["Anna", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana"]


def qa_rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        (n1, n2), thing, (c1, c2) = rnd.sample(NAMES, 2), rnd.choice(THINGS), rnd.sample(COLORS, 2)
        ctx = f"{n1} has a {c1} {thing}. {n2} has a {c2} {thing}."
        who, color = rnd.choice([(n1, c1), (n2, c2)])
        start = ctx.index(f"{who} has a {color}") + len(f"{who} has a ")
        out.append({"question": f"What color is the {thing} of {who}?", "context": ctx,
                    "answers": {"text": [color], "answer_start": [start]}})
    return out


WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "bird", "fish"]


def copy_rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    return [{"source": " ".join(w), "target": " ".join(w)} for w in (rnd.sample(WORDS, 2) for _ in range(n))]


@pytest.fixture(scope="module")
def minilm_ner():
    return pm.load("minilm", task="token-cls", labels=NER_TAGS)


# ----------------------------------------------------------------------------- the metric moves


def test_ner_entity_f1_rises_during_training(minilm_ner):
    model = pm.attach(minilm_ner.model, "lora", r=8).model
    dev = ner_rows(40, seed=1)
    before = pm.evaluate(model, dev, tokenizer=minilm_ner.tokenizer).metrics
    run = train(model, ner_rows(200, seed=0), tokenizer=minilm_ner.tokenizer, steps=60, lr=2e-3, batch=8, eval=dev)
    assert run.status == "completed" and run.task == "TOKEN_CLS"
    assert "200 examples" in run.data and "words → tags" in run.data and "B-PER" in run.data
    steps = [s for s, _ in run.eval_metrics]
    assert steps == sorted(steps) and steps[-1] == 60 and len(steps) >= 3
    last = run.eval_metrics[-1][1]
    assert set(last) == {"loss", "precision", "recall", "f1", "accuracy"}
    after = pm.evaluate(model, dev, tokenizer=minilm_ner.tokenizer).metrics
    print(f"\nNER entity F1 {before['f1']:.3f} -> {after['f1']:.3f} ({run.seconds:.1f} s training)")
    assert before["f1"] < 0.5 and after["f1"] >= 0.9, (before, after)
    assert after["f1"] == pytest.approx(last["f1"])  # the run reported what evaluate measures
    assert "f1 " in repr(pm.runs()).splitlines()[-1]


def test_qa_exact_match_rises_during_training():
    loaded = pm.load("minilm", task="qa")
    model = pm.attach(loaded.model, "lora", r=8).model
    dev = qa_rows(40, seed=1)
    before = pm.evaluate(model, dev, tokenizer=loaded.tokenizer).metrics
    run = train(model, qa_rows(200, seed=0), tokenizer=loaded.tokenizer, steps=100, lr=2e-3, batch=8, eval=0.1)
    assert run.status == "completed" and "question + context → answer span" in run.data
    assert set(run.eval_metrics[-1][1]) == {"loss", "exact_match", "f1"}
    after = pm.evaluate(model, dev, tokenizer=loaded.tokenizer).metrics
    print(f"\nQA exact match {before['exact_match']:.3f} -> {after['exact_match']:.3f}, F1 {before['f1']:.3f} -> "
          f"{after['f1']:.3f} ({run.seconds:.1f} s training)")
    assert after["exact_match"] >= max(0.3, before["exact_match"] + 0.2), (before, after)
    assert after["f1"] >= after["exact_match"] and after["loss"] < before["loss"] / 2
    answer = pm.predict(model, dev[0], tokenizer=loaded.tokenizer)[0]
    ctx = dev[0]["context"]
    assert ctx[answer["start"]:answer["end"]] == answer["text"] and 0 < answer["score"] <= 1


def test_seq2seq_copy_exact_match_rises_during_training():
    loaded = pm.load("tiny-t5")
    model = pm.attach(loaded.model, "lora", r=16, target="q,k,v,o,wi,wo").model
    dev = copy_rows(30, seed=1)
    before = pm.evaluate(model, dev, tokenizer=loaded.tokenizer).metrics
    run = train(model, copy_rows(300, seed=0), tokenizer=loaded.tokenizer, steps=400, lr=1e-2, batch=16, eval=dev)
    assert run.status == "completed" and run.task == "SEQ_2_SEQ_LM"
    assert set(run.eval_metrics[-1][1]) == {"loss", "exact_match", "rougeL"}
    after = pm.evaluate(model, dev, tokenizer=loaded.tokenizer).metrics
    print(f"\nseq2seq copy exact match {before['exact_match']:.3f} -> {after['exact_match']:.3f}, ROUGE-L "
          f"{before['rougeL']:.3f} -> {after['rougeL']:.3f} ({run.seconds:.1f} s training)")
    assert before["exact_match"] == 0.0 and after["exact_match"] >= 0.3, (before, after)
    assert after["rougeL"] > before["rougeL"] + 0.4
    out = pm.predict(model, [d["source"] for d in dev[:4]], tokenizer=loaded.tokenizer)
    assert len(out) == 4 and all(isinstance(t, str) for t in out.outputs)


def test_causal_lm_eval_reports_perplexity(tiny_llama_path):
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=4).model
    texts = [f"the {c} cat sat on the {t}" for c in COLORS for t in THINGS]
    run = train(model, texts, tokenizer=loaded.tokenizer, steps=6, lr=1e-3, batch=8, eval=0.2)
    loss, ppl = run.eval_metrics[-1][1]["loss"], run.eval_metrics[-1][1]["perplexity"]
    assert ppl == pytest.approx(math.exp(loss)) and loss == pytest.approx(run.eval_losses[-1][1])


def test_classification_eval_reports_accuracy_and_macro_f1():
    loaded = pm.load("tiny-bert", labels="neg,pos")
    model = pm.attach(loaded.model, "lora", r=4, target="query,value").model
    data = [{"text": f"{w} movie", "label": lab} for w, lab in
            [("great", "pos"), ("awful", "neg"), ("lovely", "pos"), ("boring", "neg")] * 10]
    run = train(model, data, tokenizer=loaded.tokenizer, steps=30, lr=5e-3, batch=8, eval=0.25)
    m = run.eval_metrics[-1][1]
    assert set(m) == {"loss", "accuracy", "f1"}, m
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["f1"] <= 1, m
    rows = data[:8]
    res = pm.evaluate(model, rows, tokenizer=loaded.tokenizer, compare=True)
    assert res.base is not None and set(res.base) == set(res.metrics)
    # the figures are the accuracy and macro F1 of the model's own predictions, worked out here
    preds = [p["label"] for p in pm.predict(model, [r["text"] for r in rows], tokenizer=loaded.tokenizer)]
    gold = [r["label"] for r in rows]
    per_class = []
    for c in set(gold) | set(preds):  # macro over the classes in labels ∪ predictions
        tp = sum(g == p == c for g, p in zip(gold, preds))
        wrong = sum((g == c) != (p == c) for g, p in zip(gold, preds))  # false positives + false negatives
        per_class.append(2 * tp / (2 * tp + wrong))
    assert res.metrics["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, preds)) / len(rows))
    assert res.metrics["f1"] == pytest.approx(sum(per_class) / len(per_class))
    label = pm.predict(model, "great movie", tokenizer=loaded.tokenizer)[0]
    assert label["label"] in ("neg", "pos") and 0.5 <= label["score"] <= 1
    assert sum(label["scores"].values()) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- evaluate, predict


def test_evaluate_compare_leaves_the_model_as_it_was(minilm_ner):
    model = pm.attach(minilm_ner.model, "lora", r=8, name="cmp").model
    train(model, ner_rows(64, seed=3), tokenizer=minilm_ner.tokenizer, steps=20, lr=2e-3, batch=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was = model.training
    res = pm.evaluate(model, ner_rows(24, seed=4), tokenizer=minilm_ner.tokenizer, compare=True)
    assert res.base["loss"] > res.metrics["loss"]  # the trained adapter beats the untrained head
    assert all((model.state_dict()[k] == v).all() for k, v in state.items()) and model.training == was
    assert pm.show(model).adapters_off is False
    text = repr(res)
    assert "base model" in text and "cmp (lora)" in text and "f1" in text
    assert "<table" in res._repr_html_()
    entities = pm.predict(model, "Yesterday Grace visited Oslo", tokenizer=minilm_ner.tokenizer)[0]
    assert entities and {e["type"] for e in entities} <= {"PER", "LOC"}  # names, not LABEL_n
    for e in entities:
        assert "Yesterday Grace visited Oslo"[e["start"]:e["end"]] == e["text"]


# ----------------------------------------------------------------------------- one-line errors


def test_wrong_shapes_and_bad_rows_are_one_line(minilm_ner):
    model = pm.attach(minilm_ner.model, "lora", r=8, name="err").model
    tok = minilm_ner.tokenizer
    with pytest.raises(PeftMagicError, match=r"row 1: .*tokens.*tags|row 1"):
        train(model, [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}], tokenizer=tok,
              steps=1)
    with pytest.raises(PeftMagicError, match=r"has 2 labels but the data has 3 \(O, B-LOC, B-PER\)"):
        two = pm.load("minilm", task="token-cls")
        train(pm.attach(two.model, "lora", r=4).model, ner_rows(8, seed=0), tokenizer=two.tokenizer, steps=1)
    qa_model = pm.attach(pm.load("minilm", task="qa").model, "lora", r=4).model
    bad = qa_rows(2, seed=0)
    bad[1]["answers"] = {"text": ["red"], "answer_start": [0]}
    with pytest.raises(PeftMagicError, match="row 1"):
        train(qa_model, bad, tokenizer=tok, steps=1)
    t5 = pm.load("tiny-t5")
    t5_model = pm.attach(t5.model, "lora", r=4).model
    with pytest.raises(PeftMagicError, match=r"columns.*\['text'\]|text") as e:
        train(t5_model, [{"text": "just text"}], tokenizer=t5.tokenizer, steps=1)
    assert "\n" not in str(e.value) and "source/target" in str(e.value)


def test_plans_know_the_task_heads():
    """A plan's trainable count for a task model is what a real attach gives (the head is
    trained too); seq2seq plans trace decoder inputs."""
    for source, task in (("minilm", "token-cls"), ("minilm", "qa"), ("tiny-t5", None)):
        plan = pm.plan(source, ["lora"], task=task, batch=2, seq=64, limits=False)
        real = pm.attach(pm.load(source, task=task).model, "lora").model
        assert plan["lora"].trainable == pm.show(real).trainable, (source, task)
        assert plan["lora"].parts.activations > 0


def test_heads_that_an_architecture_cannot_take_are_one_line():
    with pytest.raises(PeftMagicError, match="gpt2 models have no sequence-to-sequence head"):
        pm.load("tiny-gpt2", task="seq2seq")
    with pytest.raises(PeftMagicError, match="--labels is for classification heads"):
        pm.load("minilm", task="qa", labels=3)
    qa_model = pm.load("minilm", task="qa").model
    for method in ("prompt", "prefix"):
        with pytest.raises(PeftMagicError, match=f"peft's {method} does not support extractive question answering"):
            pm.attach(qa_model, method)
    plan = pm.plan("minilm", ["prompt", "lora"], task="token-cls", batch=2, seq=64, limits=False)
    assert "does not support token classification" in plan["prompt"].error and plan["lora"].error is None
    t5 = pm.load("tiny-t5")
    with pytest.raises(PeftMagicError, match="cannot attach llama_adapter") as e:
        pm.attach(t5.model, "llama_adapter")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the reported loss


def _own_loss(model, tokenizer, task, rows) -> float:
    import torch

    from peft_magic.inference.running import batch_needs

    batch = collator_for(task, tokenizer, batch_needs(model))(rows)
    model.train()
    with torch.no_grad():
        return float(model(**batch).loss)


CAUSAL_METHODS = [("prompt", {}), ("p-tuning", {}), ("prefix", {}), ("multitask_prompt", {}),
                  ("llama_adapter", {}), ("lora", {"r": 4}), ("ia3", {}),
                  ("cpt", {"cpt_token_ids": [5, 6, 7, 8], "cpt_tokens_type_mask": [1, 2, 3, 4]})]
SEQ2SEQ_METHODS = [("prompt", {}), ("p-tuning", {}), ("prefix", {}), ("multitask_prompt", {}),
                   ("lora", {"r": 4}), ("ia3", {})]


@pytest.mark.parametrize("task,method,settings", [("causal", m, s) for m, s in CAUSAL_METHODS]
                         + [("seq2seq", m, s) for m, s in SEQ2SEQ_METHODS])
def test_reported_loss_is_the_models_own_loss(task, method, settings):
    """One step over one batch: the loss the run reports equals ``model(**batch).loss``.

    Prefix tuning puts no tokens into the sequence, so the Trainer's label-shift count
    applies to it (it was switched off for every prompt method, which reported
    (n-1)/n of the loss); virtual-token methods predict every real label."""
    name = "tiny-llama" if task == "causal" else "tiny-t5"
    loaded = pm.load(name)
    model = pm.attach(loaded.model, method, **settings).model
    if task == "causal":
        data = ["the red cat sat on the mat", "a blue bird sang", "the sun is warm today", "dogs run fast"]
    else:
        data = copy_rows(4, seed=5)
    run = train(model, data, tokenizer=loaded.tokenizer, steps=1, batch=4, lr=1e-12)
    rows = data_mod.tokenize(data, loaded.tokenizer, task=run.task).rows
    own = _own_loss(model, loaded.tokenizer, run.task, list(rows))
    assert run.losses[0][1] == pytest.approx(own, rel=1e-5, abs=1e-6)


def test_the_panels_train_tab_knows_the_task(minilm_ner):
    from peft_magic.panel import PeftPanel

    model = pm.attach(minilm_ner.model, "lora", r=4, name="panel").model
    ns = {"model": model, "tokenizer": minilm_ner.tokenizer, "sentences": ner_rows(24, seed=7)}
    panel = PeftPanel(ns)
    try:
        info = panel.trainer.task_info.value
        assert "token classification" in info and "tokens" in info and "f1" in info
        panel.trainer.data.value = "sentences"
        panel.trainer.steps.value, panel.trainer.eval.value = 4, 0.25
        assert panel.trainer.line() == "%peft train data=sentences steps=4 lr=0.0002 batch=4 eval=0.25"
        panel.trainer.do_train()
        run = pm.runs()[-1]
        assert run.task == "TOKEN_CLS" and run.status == "completed" and run.eval_metrics
        assert "f1" in run.eval_metrics[-1][1]
    finally:
        panel.close()


def test_label_names_come_from_a_datasets_classlabel_and_reach_the_card(minilm_ner, tmp_path):
    import datasets

    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER_TAGS.split(",")))})
    rows = ner_rows(24, seed=9)
    names = NER_TAGS.split(",")
    ds = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows],
                                     "ner_tags": [[names.index(t) for t in r["tags"]] for r in rows]}, features=feats)
    assert data_mod.class_label_names(ds, "TOKEN_CLS") == names
    fresh = pm.load("minilm", task="token-cls", labels=len(names))  # a head without names: the ClassLabel names it
    model = pm.attach(fresh.model, "lora", r=4).model
    run = train(model, ds, tokenizer=fresh.tokenizer, steps=2, batch=8, eval=0.25)
    assert "labels O, B-PER, I-PER, B-LOC, I-LOC" in run.data and run.eval_metrics
    assert fresh.model.config.id2label[1] == "B-PER"  # the head now speaks in the data's names
    card = (pm.save(model, tmp_path / "ner").path and (tmp_path / "ner" / "README.md").read_text())
    assert "Evaluation on held-out data:" in card and "f1 " in card
