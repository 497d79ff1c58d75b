"""Preference tuning through the ordinary run (engine level, the tiny built-in Llama): the
numbers are TRL's own, the reference is the base with the adapter off, the user's model
comes back as it was, the stop button and --resume work, every objective trains, and bad
settings are one line."""

from __future__ import annotations

import copy
import io
import os
import signal

import pytest

import peft_magic as pm
from peft_magic.errors import PeftMagicError
from peft_magic.tasks.preference import tokenize_preference

TOPICS = ["the sea", "a cat", "the moon", "winter", "coffee", "a forest", "the city", "rain", "music", "a garden",
          "the desert", "trains", "books", "snow"]


def pairs(topics: list[str] = TOPICS) -> list[dict]:
    return [{"prompt": f"Describe {t} in one sentence.", "chosen": f"Ah, {t}! It is truly wonderful.",
             "rejected": f"{t.upper()} IS OK."} for t in topics]


def unpaired() -> list[dict]:
    out = []
    for r in pairs():
        out += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                {"prompt": r["prompt"], "completion": r["rejected"], "label": False}]
    return out


@pytest.fixture(scope="module")
def tiny():
    return pm.load("tiny-llama")


@pytest.fixture
def fresh(tiny):
    """A fresh LoRA on the shared model, taken off again after the test."""
    import torch

    torch.manual_seed(0)
    model = pm.attach(tiny.model, "lora", r=8).model
    yield model
    pm.detach(model)


def _logged(history: list[dict], keys: tuple[str, ...]) -> list[tuple[int, dict]]:
    return [(h["step"], {k: h[k] for k in keys}) for h in history if all(k in h for k in keys)]


def test_loss_and_rewards_are_trls_own_logs(tiny, fresh, tmp_path):
    """The same run through %peft train and through plain TRL (DPOTrainer on a PeftModel, no
    peft_magic), from the same adapter weights: every logged loss and reward is the same."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    plain_model = copy.deepcopy(fresh)
    data = pairs()[:8]
    run = pm.train(fresh, data, tokenizer=tiny.tokenizer, steps=4, batch=2, lr=5e-3, display=None)
    plain_args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                           activation_checkpointing=False, max_steps=4, per_device_train_batch_size=2,
                           learning_rate=5e-3, logging_steps=1, save_strategy="no", max_length=512)
    records = tokenize_preference(data, tiny.tokenizer).records
    plain = DPOTrainer(model=plain_model, args=plain_args, processing_class=copy.deepcopy(tiny.tokenizer),
                       train_dataset=Dataset.from_list(records))
    plain.train()
    history = plain.state.log_history
    keys = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    theirs = _logged(history, ("loss",))
    assert run.objective == "dpo" and len(run.losses) == len(theirs) == 4
    for (step, loss), (their_step, their) in zip(run.losses, theirs):
        assert step == their_step and loss == pytest.approx(their["loss"], rel=1e-5, abs=1e-6)
    for (step, ours), (their_step, their) in zip(run.rewards, _logged(history, keys)):
        assert step == their_step
        assert [ours["chosen"], ours["rejected"], ours["margin"], ours["accuracy"]] == \
            pytest.approx([their[k] for k in keys], rel=1e-4, abs=1e-6)
    assert run.losses[-1][1] < run.losses[0][1] and run.rewards[-1][1]["margin"] > 0


def test_on_the_cpu_the_lm_head_projects_only_the_completions_and_trl_is_left_as_it_was(tiny, fresh, monkeypatch):
    """TRL's fused LM head gathers the positions that have a target before its vocabulary
    projection on the CPU too (training/preference.py, ``_targets_only``): the rows it
    projects in a step are the completions' tokens of that step's pairs, not every position
    (the losses stay TRL's: ``test_loss_and_rewards_are_trls_own_logs`` runs plain TRL beside
    it). After the run TRL's own switch is back, and says no for the CPU again."""
    import torch
    import trl.trainer.utils as tu

    own = tu._use_triton
    real = tu._ChunkedLogProbFunction.apply
    rows: list[int] = []

    def counting(hidden, *args):  # the real function, its input rows written down
        rows.append(hidden.shape[0])
        return real(hidden, *args)

    monkeypatch.setattr(tu._ChunkedLogProbFunction, "apply", staticmethod(counting))
    data = pairs()[:4]
    ex = tokenize_preference(data, tiny.tokenizer)
    targets = sorted(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ex.rows)
    positions = max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in ex.rows)
    run = pm.train(fresh, data, tokenizer=tiny.tokenizer, steps=2, batch=2, lr=5e-3, display=None)
    assert run.status == "completed" and len(rows) == 4  # policy and reference, 2 steps
    assert all(targets[0] + targets[1] <= n <= targets[-1] + targets[-2] for n in rows), (rows, targets)
    assert max(rows) < 2 * 2 * (positions - 1), (rows, positions)  # every position of the batch: the plain way
    assert tu._use_triton is own and own(torch.device("cpu")) is False


def test_the_reference_is_the_base_and_the_model_comes_back_as_it_was(tiny):
    """Any adapter name (TRL's own reference copies an adapter called 'default'); rewards of a
    trained adapter are against the base, not against a copy of itself; dropout, forward,
    tokenizer and adapters are as they were after the run."""
    import torch

    torch.manual_seed(0)
    model = pm.attach(tiny.model, "lora", r=8, dropout=0.1, name="polite").model
    try:
        base = model.get_base_model()
        dropouts = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
        assert any(p == 0.1 for p in dropouts.values())
        pad, adapters = tiny.tokenizer.pad_token, list(model.peft_config)
        first = pm.train(model, pairs(), tokenizer=tiny.tokenizer, steps=3, batch=4, lr=5e-3, display=None)
        assert first.status == "completed" and first.rewards[0][1]["margin"] == 0.0  # a fresh LoRA is the base
        assert list(model.peft_config) == adapters and "ref" not in model.peft_config
        assert "forward" not in base.__dict__  # TRL's fused LM head is off the model again
        assert {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)} == dropouts
        assert tiny.tokenizer.pad_token == pad
        second = pm.train(model, pairs(), tokenizer=tiny.tokenizer, steps=1, batch=4, lr=5e-3, display=None)
        # against the base, the trained adapter's first batch already has a margin (a frozen copy of
        # the adapter as the reference would give exactly 0 here)
        assert abs(second.rewards[0][1]["margin"]) > 1e-3
    finally:
        pm.detach(model)


def test_stop_button_keeps_the_adapter_and_resume_finishes(tiny, fresh):
    """A real SIGINT mid-run (the notebook's stop button): the run stops at a step boundary as
    interrupted, the model is given back, and --resume continues the same DPO run to the end."""
    calls = {"n": 0}

    def press_stop(_module, _args):
        calls["n"] += 1
        if calls["n"] == 6:  # the policy and the reference forward of a few steps
            os.kill(os.getpid(), signal.SIGINT)

    hook = fresh.get_base_model().model.layers[0].register_forward_pre_hook(press_stop)
    try:
        before = {n: p.detach().clone() for n, p in fresh.named_parameters() if p.requires_grad}
        run = pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=12, batch=2, lr=5e-3, display=None)
    finally:
        hook.remove()
    assert run.status == "interrupted" and 0 < run.steps_done < 12
    assert any(not p.equal(before[n]) for n, p in fresh.named_parameters() if p.requires_grad)
    assert "forward" not in fresh.get_base_model().__dict__
    done = run.steps_done
    resumed = pm.train(fresh, resume=True, display=None)
    assert resumed is run and run.status == "completed" and run.steps_done == 12 and run.objective == "dpo"
    assert [s for s, _ in run.rewards] == list(range(1, 13)) and run.rewards[done][0] == done + 1


def test_autosave_and_resume_from_disk_continue_the_dpo_run_exactly(tiny, tmp_path):
    """A DPO run autosaves like any run; a new adapter with the same seed (a new kernel's cells
    re-run) resumes from the step-4 checkpoint on disk: every later loss and reward equals the
    uninterrupted run's, and the reward history before the checkpoint comes back with it."""
    import shutil
    import torch

    def run(**kw):
        torch.manual_seed(0)
        model = pm.attach(tiny.model, "lora", r=8).model
        try:
            return pm.train(model, pairs(), tokenizer=tiny.tokenizer, steps=8, batch=2, lr=5e-3, save_every=4,
                            save_to=str(tmp_path), display=None, **kw)
        finally:
            pm.detach(model)

    whole = run()
    folder = tmp_path / os.path.basename(whole.output_dir)
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    shutil.rmtree(folder / "checkpoint-8")  # as if the kernel died after step 4's checkpoint
    resumed = run(resume=True)
    assert resumed is not whole and resumed.status == "completed" and resumed.objective == "dpo"
    assert [s for s, _ in resumed.losses] == list(range(1, 9))
    assert [v for _, v in resumed.losses] == pytest.approx([v for _, v in whole.losses], rel=1e-5)
    assert [s for s, _ in resumed.rewards] == list(range(1, 9))
    for (s, got), (_, want) in zip(resumed.rewards, whole.rewards):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), s


@pytest.mark.parametrize("objective, data", [("orpo", "pairs"), ("simpo", "pairs"), ("kto", "unpaired"),
                                             ("kto", "pairs")])
def test_every_objective_trains_with_its_readouts(tiny, fresh, objective, data):
    rows = pairs() if data == "pairs" else unpaired()
    run = pm.train(fresh, rows, tokenizer=tiny.tokenizer, steps=2, batch=8, lr=1e-3, objective=objective,
                   display=None)
    assert run.status == "completed" and run.objective == objective and len(run.losses) == 2
    assert all(loss == loss for _, loss in run.losses)  # finite, not NaN
    # KTO logs a margin for a batch with both desirable and undesirable completions (8 rows: all but surely)
    assert {"chosen", "rejected", "margin"} <= set().union(*(r for _, r in run.rewards))
    assert "forward" not in fresh.get_base_model().__dict__


def test_the_display_shows_the_rewards_and_runs_lists_them(tiny, fresh):
    from peft_magic.display.progress import TrainingView
    from peft_magic.display.run_readouts import snapshot_html

    out = io.StringIO()
    view = TrainingView("text", stream=out, width=None)
    run = pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=3, batch=4, lr=5e-3, display=view)
    text = out.getvalue()
    assert "· DPO" in text and "margin" in text and "accuracy" in text and "rewards chosen" in text
    html = snapshot_html(view.state, run.losses, view.title, "completed", margins=[(s, r["margin"])
                                                                                   for s, r in run.rewards])
    assert "reward margin" in html and "accuracy" in html
    row = pm.runs().rows()[-1]
    assert row[pm.runs().HEADERS.index("rewards")].startswith("DPO · margin ")
    assert "DPO (margin" in repr(run)


@pytest.mark.parametrize("settings, needle", [
    ({"betta": 0.2}, "unknown setting 'betta' for DPO training: did you mean 'beta'?"),
    ({"objective": "dpx"}, "unknown objective 'dpx': did you mean 'dpo'?"),
    ({"objective": "ipo", "loss_type": "sigmoid"}, "objective=ipo sets loss_type"),
    ({"simpo_gamma": 1.0}, "unknown setting 'simpo_gamma' for DPO training"),
    ({"beta": "high"}, "beta"),
])
def test_bad_settings_are_one_line_and_start_nothing(tiny, fresh, settings, needle):
    runs = len(pm.runs())
    with pytest.raises(PeftMagicError) as err:
        pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=2, batch=2, display=None, **settings)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert len(pm.runs()) == runs


def test_objective_and_data_must_agree(tiny, fresh):
    runs = len(pm.runs())
    with pytest.raises(PeftMagicError, match=r"DPO learns from pairs .* use objective=kto"):
        pm.train(fresh, unpaired(), tokenizer=tiny.tokenizer, steps=1, objective="dpo", display=None)
    with pytest.raises(PeftMagicError, match=r"objective=dpo trains on preference data, and this data is not"):
        pm.train(fresh, ["plain text to copy"] * 4, tokenizer=tiny.tokenizer, steps=1, objective="dpo",
                 display=None)
    with pytest.raises(PeftMagicError, match=r"eval= for DPO must be preference data"):
        pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=1, eval=["some text"] * 2, display=None)
    assert len(pm.runs()) == runs  # each refused before a run started


def test_evaluate_gives_trls_own_eval_readouts(tiny, fresh):
    """%peft evaluate's rewards (ours, from TRL's log-softmax) equal the eval readouts TRL's
    trainer logs on the same held-out pairs at the end of the run."""
    held = pairs(["the sun", "a dog", "the night", "summer"])
    base = pm.evaluate(fresh, held, tokenizer=tiny.tokenizer, compare=True)
    assert base.metrics["accuracy"] == 0.0 and base.metrics["margin"] == 0.0  # where every adapter starts
    run = pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=4, batch=2, lr=5e-3, eval=held, eval_steps=4,
                   display=None)
    step, trl_eval = run.eval_metrics[-1]
    assert step == 4
    ours = pm.evaluate(fresh, held, tokenizer=tiny.tokenizer, compare=True)
    for key in ("chosen", "rejected", "margin", "accuracy"):
        assert ours.metrics[key] == pytest.approx(trl_eval[key], rel=1e-3, abs=1e-5), key
    assert ours.base["margin"] == 0.0 and ours.base["accuracy"] == 0.0
    assert "preference pairs" in repr(ours) and "likelihood_accuracy" in repr(ours)


def test_plan_counts_the_paired_batch(tiny):
    """A DPO batch of 2 pairs is 4 sequences in the forward that keeps activations; the
    reference forward keeps none (a note, no second model)."""
    dpo = pm.plan("tiny-llama", "lora", batch=2, seq=64, objective="dpo", limits=False)
    sft4 = pm.plan("tiny-llama", "lora", batch=4, seq=64, limits=False)
    sft2 = pm.plan("tiny-llama", "lora", batch=2, seq=64, limits=False)
    assert dpo.batch == 2 and dpo["lora"].parts.activations == sft4["lora"].parts.activations
    assert dpo["lora"].parts.activations > sft2["lora"].parts.activations
    note = " ".join(dpo.notes)
    assert "each of the 2 pairs is two sequences" in note and "no second model" in note
    kto = pm.plan("tiny-llama", "lora", batch=2, seq=64, objective="kto", limits=False)
    assert kto["lora"].parts.activations == sft2["lora"].parts.activations
    # TRL computes the preference loss from the logits: never planned fused, even when asked
    assert pm.plan("tiny-llama", "lora", batch=2, seq=64, fused_loss=True, limits=False).fused_loss
    assert not pm.plan("tiny-llama", "lora", batch=2, seq=64, objective="dpo", fused_loss=True, limits=False).fused_loss


def test_a_preference_loss_is_never_fused_and_says_so(tiny, fresh):
    """fused_loss=True on a DPO run: TRL's trainer and loss run, the run says which loss ran,
    and the request that could not be honoured is a warning of the run."""
    run = pm.train(fresh, pairs(), tokenizer=tiny.tokenizer, steps=1, batch=2, fused_loss=True, display=None)
    assert run.status == "completed" and run.objective == "dpo" and run.loss_path == "standard (TRL's DPO loss)"
    assert any("fused loss not used: TRL's DPO loss" in w for w in run.warnings)


def test_compare_takes_an_objective_and_sorts_by_the_margin(tiny):
    """%peft compare … objective=dpo: each candidate trains with DPO from the same base, with
    its own learning rate found by lr=auto's probes, and the table is sorted by the reward margin."""
    res = pm.compare(tiny.model, "lora,ia3", pairs(), tokenizer=tiny.tokenizer, eval=pairs(TOPICS[:4]), steps=3,
                     batch=4, objective="dpo", display=None)
    assert [r.status for r in res.rows] == ["done", "done"], [(r.label, r.reason) for r in res.rows]
    assert all(r.search is not None and r.lr == r.search.chosen for r in res.rows)  # lr=auto ran on DPO too
    assert "margin" in res.metric
    values = [r.value(res.metric) for r in res.rows]
    assert values == sorted(values, reverse=res.higher_is_better)
    assert pm.show(tiny.model).adapters == []  # the model is left as it was
