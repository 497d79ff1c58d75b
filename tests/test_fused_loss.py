"""The loss without the logits (``fused_loss``): exactly the same training, refusals in one
line, and a plan that knows it.

Every equality test trains one optimizer step through the real engine (``train``: the real
Trainer, its gradient accumulation and ``num_items_in_batch`` normalisation) twice on the
same model — once with the model's own loss, once fused — at a learning rate of 1e-12 (so
the second run starts from the same weights), and compares the first logged loss and, via
``register_post_accumulate_grad_hook``, every trainable parameter's accumulated gradient.
"""

from __future__ import annotations

import pytest
import torch

import peft_magic as pm
from peft_magic.errors import PeftMagicError
from peft_magic.training.args import normalize_args
from peft_magic.training.run import train

TEXTS = ["the red cat sat on the mat", "a blue bird sang in the old tree", "the sun is warm today",
         "dogs run fast", "a quiet morning by the sea", "green leaves fall in the park"]
COMPLETIONS = [{"prompt": "Question: what colour is the sky? Answer:", "completion": " blue"},
               {"prompt": "Question: how many legs does a spider have? Answer:", "completion": " eight legs"},
               {"prompt": "Translate to French: the house", "completion": " la maison"},
               {"prompt": "Say hello:", "completion": " hello there, how are you today?"}]
CHATS = [{"messages": [{"role": "user", "content": "hi, who are you?"},
                       {"role": "assistant", "content": "a small model"},
                       {"role": "user", "content": "what do you like?"},
                       {"role": "assistant", "content": "red cats and the sun"}]},
         {"messages": [{"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "green"}]},
         {"messages": [{"role": "user", "content": "count to three"}, {"role": "assistant", "content": "one two three"}]},
         {"messages": [{"role": "user", "content": "say yes"}, {"role": "assistant", "content": "yes"}]}]
PAIRS = [{"source": "red cat", "target": "red cat"}, {"source": "blue dog sun", "target": "blue dog sun"},
         {"source": "green tree", "target": "green tree"}, {"source": "moon fish bird", "target": "moon fish bird"}]


def one_step(model, data, tokenizer, fused, **settings):
    """Train one optimizer step; the run and each trainable parameter's accumulated gradient."""
    grads: dict[str, torch.Tensor] = {}
    hooks = [p.register_post_accumulate_grad_hook(lambda p, n=n: grads.__setitem__(n, p.grad.detach().clone()))
             for n, p in model.named_parameters() if p.requires_grad]
    try:
        run = train(model, data, tokenizer=tokenizer, steps=1, lr=1e-12, max_grad_norm=0, fused_loss=fused,
                    **settings)
    finally:
        for h in hooks:
            h.remove()
    assert run.status == "completed", run.message
    return run, grads


def assert_same_training(model, data, tokenizer, **settings):
    std, g_std = one_step(model, data, tokenizer, False, **settings)
    fused, g_fused = one_step(model, data, tokenizer, True, **settings)
    assert std.loss_path == "standard (fused_loss=False)"
    assert fused.loss_path.startswith("fused (chunked"), (fused.loss_path, fused.warnings)
    assert fused.losses[0][1] == pytest.approx(std.losses[0][1], rel=1e-5)
    assert set(g_std) == set(g_fused) and g_std
    for name, g in g_std.items():
        assert g.abs().max() > 0, name  # a gradient that is zero compares nothing
        err = float((g_fused[name] - g).norm() / g.norm())
        assert err <= 1e-5, (name, err)
    return std, fused


@pytest.fixture
def tiny_llama():
    return pm.load("tiny-llama")


@pytest.mark.parametrize("data", [TEXTS, COMPLETIONS, CHATS], ids=["text", "completion", "chat"])
def test_causal_lm_loss_and_gradients_equal_the_models_own(tiny_llama, data):
    # LoRA on the head too (init_lora_weights=False: B ≠ 0, so every LoRA matrix has a gradient);
    # two micro-batches of different lengths share one num_items_in_batch
    model = pm.attach(tiny_llama.model, "lora", r=4, target="q_proj,v_proj,lm_head", init_lora_weights=False).model
    assert any("lm_head" in n for n, p in model.named_parameters() if p.requires_grad)
    std, fused = assert_same_training(model, data, tiny_llama.tokenizer, batch=2, grad_accum=2)
    row = next(r for r in pm.runs().rows() if r[0] == str(fused.run_id))
    assert "loss fused (chunked, 1 chunk)" in row[pm.runs().HEADERS.index("peak memory")]  # %peft runs: which loss


def test_seq2seq_loss_and_gradients_equal_the_models_own():
    # T5: the decoder output is scaled by d_model ** -0.5 before the tied head, and its loss is
    # a mean that ignores num_items_in_batch (the probe finds that out)
    loaded = pm.load("tiny-t5")
    model = pm.attach(loaded.model, "lora", r=4, target="q,v", init_lora_weights=False).model
    assert_same_training(model, PAIRS, loaded.tokenizer, batch=2, grad_accum=2)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_methods_loss_and_gradients_equal_the_models_own(tiny_llama, method):
    # prompt tuning puts virtual tokens in front (every real label is predicted); prefix
    # tuning puts its vectors into the attention (the usual shift)
    model = pm.attach(tiny_llama.model, method, tokens=4).model
    assert_same_training(model, TEXTS, tiny_llama.tokenizer, batch=3, grad_accum=2)


def own_loss(model, tokenizer, texts) -> float:
    """``model(**batch).loss`` on the batch the engine makes of ``texts``."""
    from peft_magic.inference.running import batch_needs
    from peft_magic.tasks.families import collator_for
    from peft_magic.tasks import data as data_mod

    batch = collator_for("CAUSAL_LM", tokenizer, batch_needs(model))(list(data_mod.tokenize(texts, tokenizer).rows))
    model.train()
    with torch.no_grad():
        return float(model(**batch).loss)


def test_fused_loss_false_is_transformers_trainer_and_the_models_own_loss(tiny_llama):
    from transformers import Trainer

    from peft_magic.training import loss_path

    model = pm.attach(tiny_llama.model, "lora", r=4).model
    run, _ = one_step(model, TEXTS[:4], tiny_llama.tokenizer, False, batch=4)
    assert run.loss_path == "standard (fused_loss=False)" and not run.warnings
    assert run.losses[0][1] == pytest.approx(own_loss(model, tiny_llama.tokenizer, TEXTS[:4]), rel=1e-6)
    job = type("Job", (), {"peft_model": model, "task": "CAUSAL_LM", "peft_type": "LORA", "run": run,
                           "args": {"fused_loss": "off"}, "examples": None})()
    assert loss_path.trainer_class(job, None) is Trainer  # not a subclass: transformers' own, unchanged


def test_a_head_the_fused_loss_cannot_reproduce_falls_back_with_one_line(tiny_llama):
    # HyperCLOVAX multiplies its logits by config.logits_scaling (Granite divides by the same
    # field): the probe sees the difference before the first step trains
    from transformers import AutoModelForCausalLM
    from transformers.models.hyperclovax.configuration_hyperclovax import HyperCLOVAXConfig

    torch.manual_seed(0)
    cfg = HyperCLOVAXConfig(vocab_size=len(tiny_llama.tokenizer), hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, logits_scaling=4.0)
    model = pm.attach(AutoModelForCausalLM.from_config(cfg), "lora", r=4, target="q_proj,v_proj").model
    run, _ = one_step(model, TEXTS[:4], tiny_llama.tokenizer, True, batch=4)
    assert run.loss_path.startswith("standard (fused refused: HyperCLOVAXForCausalLM does something to its logits")
    assert len(run.warnings) == 1 and "\n" not in run.warnings[0] and "model's own loss" in run.warnings[0]
    assert run.losses[0][1] == pytest.approx(own_loss(model, tiny_llama.tokenizer, TEXTS[:4]), rel=1e-6)


def test_refusals_before_training_are_one_line(tiny_llama):
    from peft_magic.training.loss_path import choose

    model = pm.attach(tiny_llama.model, "lora", r=4).model
    ok = choose(model, "CAUSAL_LM", "LORA", {"fused_loss": "on"}, None, "cpu")
    assert ok.fused and ok.kernel == "chunked"
    for args, words in [({"fused_loss": "on", "label_smoothing_factor": 0.1}, "label smoothing"),
                        ({"fused_loss": "on", "torch_compile": True}, "compile=True"),
                        ({"fused_loss": "liger"}, "liger")]:
        path = choose(model, "CAUSAL_LM", "LORA", args, None, "cpu")
        assert not path.fused and words in path.reason and "\n" not in path.warning, path
        assert path.warning.startswith("fused loss not used: ")
    cpt = choose(model, "CAUSAL_LM", "CPT", {"fused_loss": "on"}, None, "cpu")
    assert not cpt.fused and "cpt computes a loss of its own" in cpt.reason
    small = choose(model, "CAUSAL_LM", "LORA", {"per_device_train_batch_size": 8}, None, "cpu")
    assert not small.fused and not small.warning  # auto: a 512-token vocabulary is not worth it, silently


def test_auto_fuses_smaller_logits_when_most_positions_have_no_target(tiny_llama):
    """Completion and chat data: the prompt's positions need no logits and the fused path makes
    none, so ``auto`` fuses from 16 MiB of logits there (the tiny Llama's 512-token vocabulary
    at batch 8 × 1024 is exactly that), and from 64 MiB when every position has a target."""
    from types import SimpleNamespace

    from peft_magic.training.loss_path import choose

    model = pm.attach(tiny_llama.model, "lora", r=4).model

    def rows(length, prompt):
        return SimpleNamespace(rows=[{"input_ids": [5] * length, "labels": [-100] * prompt + [5] * (length - prompt)}
                                     for _ in range(8)])

    def path(examples):
        return choose(model, "CAUSAL_LM", "LORA", {"per_device_train_batch_size": 8}, examples, "cpu")

    completion = path(rows(1024, 600))  # 41 % of the positions have a target
    assert completion.fused and completion.kernel == "chunked" and not completion.warning, completion
    assert not path(rows(1024, 400)).fused  # 61 %: the logits are needed for most positions
    assert not path(rows(1024, 0)).fused  # plain text of the same size
    assert not path(rows(1000, 900)).fused  # masked, but under 16 MiB of logits
    assert path(rows(4096, 0)).fused  # 64 MiB: fused whatever the targets


def test_an_unknown_fused_loss_value_is_one_line():
    with pytest.raises(PeftMagicError) as e:
        normalize_args({"fused_loss": "nope"})
    assert "fused_loss='nope'" in e.value.message and "\n" not in e.value.message
    assert "auto" in e.value.hint and "False" in e.value.hint
    assert normalize_args({"fused_loss": False})["fused_loss"] == "off"
    assert normalize_args({"fused_loss": "True"})["fused_loss"] == "on"


@pytest.fixture(scope="module")
def smollm2_lora():
    loaded = pm.load("smollm2")
    return pm.attach(loaded.model, "lora", r=8).model


def test_the_plan_shows_the_logits_and_plans_the_fused_step(smollm2_lora):
    # SmolLM2's vocabulary (49,152) at batch 8 × 512: the logits are most of the activations
    fused = pm.plan("smollm2", "lora", r=8, batch=8, seq=512, checkpointing=True, limits=False)
    standard = pm.plan("smollm2", "lora", r=8, batch=8, seq=512, checkpointing=True, limits=False,
                       fused_loss=False)
    big, small = fused.logits
    assert fused.fused_loss and not standard.fused_loss and big > 1.5e9 and small < big / 10
    line = next(x for x in repr(fused).splitlines() if x.startswith("logits "))
    assert " → fused " in line and "the totals count the loss computed a chunk of tokens at a time" in line
    assert "logits " in fused._repr_html_() and " → fused " in fused._repr_html_()
    saved = standard["lora"].parts.activations - fused["lora"].parts.activations
    assert saved > 0.7 * (big - small), (saved, big, small)
    # the largest batch the plan recommends is recomputed with the fused loss
    with_limits = [pm.plan("smollm2", "lora", r=8, batch=8, seq=512, checkpointing=True, gpu="8GB", fused_loss=f)
                   for f in (False, True)]
    assert with_limits[1].recommendation.batch > 2 * with_limits[0].recommendation.batch


@pytest.mark.parametrize("fused", [False, True], ids=["standard", "fused"])
def test_the_plan_matches_a_measured_step_within_ten_percent(smollm2_lora, fused):
    p = pm.plan(smollm2_lora, "lora", r=8, batch=2, seq=64, measure=True, limits=False, fused_loss=fused)
    m = p.measurement
    assert abs(m.error) <= 0.10, m.line()


@pytest.mark.kernel
def test_peft_train_says_which_loss_ran_and_refuses_a_bad_value_in_one_line(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    kernel.ok("texts = ['the red cat sat on the mat', 'a blue bird sang', 'the sun is warm today'] * 4")
    before = kernel.eval("sum(float(p.sum()) for p in model.parameters() if p.requires_grad)")
    bad = kernel.run("%peft train data=texts steps=2 fused_loss=nope")
    assert bad.error is not None and "fused_loss='nope'" in bad.error_text and "\n" not in bad.error_text.strip()
    assert kernel.eval("sum(float(p.sum()) for p in model.parameters() if p.requires_grad)") == before
    res = kernel.ok("run = %peft train data=texts steps=2 batch=4 fused_loss=True --display text")
    assert kernel.eval("run.status") == "completed" and kernel.eval("run.loss_path") == "fused (chunked, 1 chunk)"
    assert "loss path fused (chunked, 1 chunk)" in res.text, res.text
    assert "loss fused (chunked, 1 chunk)" in kernel.ok("%peft runs").text
    off = kernel.ok("run = %peft train data=texts steps=1 batch=4 fused_loss=False --display text")
    assert kernel.eval("run.loss_path") == "standard (fused_loss=False)" and "loss path standard" in off.text
