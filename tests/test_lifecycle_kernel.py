"""The adapter lifecycle through the magics in real kernels: save in one kernel, load in a
fresh one with identical logits (LoRA, QLoRA 4-bit, DoRA, IA3, prefix, prompt tuning);
overwrite, pickle and wrong-model refusals as one line; use / off / on / merge / generate."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel

METHODS = {  # variable → (load flags, attach line)
    "m_lora": ("", "lora r=4"),
    "m_qlora": ("--4bit", "qlora r=4 target=all-linear"),
    "m_dora": ("", "dora r=4"),
    "m_ia3": ("", "ia3"),
    "m_prefix": ("", "prefix tokens=4"),
    "m_prompt": ("", "prompt tokens=4"),
}

PERTURB = """
import torch
_g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for _n, _p in {var}.named_parameters():
        if _p.requires_grad:
            _p.add_(torch.randn(_p.shape, generator=_g) * 0.3)
"""

LOGITS = """
import torch
_ids = torch.tensor([[5, 17, 99, 230, 41, 8, 77, 300, 12, 64]])
{var}.eval()
with torch.no_grad():
    {out} = {var}(input_ids=_ids, attention_mask=torch.ones_like(_ids)).logits
"""


def _one_line_error(res) -> str:
    return res.one_line_error()


def test_round_trip_in_a_fresh_kernel_gives_identical_logits(kernel, tmp_path):
    from kernel import Kernel

    for var, (flags, attach) in METHODS.items():
        kernel.ok(f"%peft load tiny-llama {flags} --as {var}")
        kernel.ok(f"%peft {attach} --model {var}")
        kernel.ok(PERTURB.format(var=var))
        res = kernel.ok(f"%peft save {tmp_path / var} --model {var}")
        assert f"saved {attach.split()[0]} adapter 'default'" in res.text
        kernel.ok(LOGITS.format(var=var, out="_want") + f"\ntorch.save(_want, {str(tmp_path / (var + '.pt'))!r})")
        # the adapter is not trivially zero: it changes the base model's output
        kernel.ok(f"%peft off --model {var}")
        kernel.ok(LOGITS.format(var=var, out="_base"))
        assert not kernel.eval("bool(torch.allclose(_base, _want[:, -_base.shape[1]:], atol=1e-4))")
        kernel.ok(f"%peft on --model {var}")

    fresh = Kernel(cwd=tmp_path)
    try:
        fresh.ok("%load_ext peft_magic")
        for var, (flags, attach) in METHODS.items():
            fresh.ok(f"%peft load tiny-llama {flags} --as {var}")
            res = fresh.ok(f"%peft load-adapter {tmp_path / var} --model {var}")
            method = attach.split()[0]
            assert f"loaded {method} adapter 'default'" in res.text, res.text
            assert fresh.eval(f"type({var}).__name__").startswith("PeftModel")
            fresh.ok(LOGITS.format(var=var, out="_got") + f"\n_want = torch.load({str(tmp_path / (var + '.pt'))!r})")
            assert fresh.eval("bool(torch.equal(_got, _want))"), var
            table = fresh.ok(f"%peft adapters --model {var}").text
            assert "default" in table and method in table
        assert fresh.eval("bool(m_qlora.get_base_model().is_loaded_in_4bit)")
    finally:
        fresh.shutdown()


def test_refusals_are_one_line_and_change_nothing(kernel, tmp_path):
    kernel.ok("%peft load tiny-llama --as r_model")
    kernel.ok("%peft lora r=4 --model r_model")
    kernel.ok(f"%peft save {tmp_path / 'a'} --model r_model")
    text = _one_line_error(kernel.run(f"%peft save {tmp_path / 'a'} --model r_model"))
    assert "already exists" in text and "--force" in text
    assert "overwrote" not in kernel.ok(f"%peft save {tmp_path / 'a'} --model r_model --force").text

    kernel.ok(f"r_model.save_pretrained({str(tmp_path / 'pickled')!r}, safe_serialization=False, "
              "save_embedding_layers=False)")
    kernel.ok("%peft load tiny-llama --as r_fresh")
    text = _one_line_error(kernel.run(f"%peft load-adapter {tmp_path / 'pickled'} --model r_fresh"))
    assert "pickle" in text and "--allow-pickle" in text
    assert kernel.eval("type(r_fresh).__name__") == "LlamaForCausalLM"
    kernel.ok(f"%peft load-adapter {tmp_path / 'pickled'} --model r_fresh --allow-pickle")
    assert kernel.eval("type(r_fresh).__name__").startswith("PeftModel")

    kernel.ok("%peft load tiny-gpt2 --as r_gpt2")
    text = _one_line_error(kernel.run(f"%peft load-adapter {tmp_path / 'a'} --model r_gpt2"))
    assert "made for peft_magic/tiny-llama" in text and "peft_magic/tiny-gpt2 (GPT2LMHeadModel)" in text
    assert kernel.eval("type(r_gpt2).__name__") == "GPT2LMHeadModel"

    kernel.ok("%peft load tiny-llama --as r_prefix")
    kernel.ok("%peft prefix tokens=4 --model r_prefix")
    text = _one_line_error(kernel.run("%peft merge --model r_prefix"))
    assert "prefix adapters cannot be merged" in text
    assert kernel.eval("type(r_prefix).__name__").startswith("PeftModel")
    text = _one_line_error(kernel.run("%peft use nope --model r_prefix"))
    assert "no adapter 'nope'" in text


def test_switch_off_on_generate_and_merge_through_the_magics(kernel):
    kernel.ok("%peft load tiny-llama --as ref")
    kernel.ok(LOGITS.format(var="ref", out="_base"))
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    kernel.ok("%peft lora r=4 --name two")
    kernel.ok(PERTURB.format(var="model"))
    res = kernel.ok("%peft adapters")
    assert "two" in res.text and "<table>" in res.html
    kernel.ok("%peft use default")
    kernel.ok(LOGITS.format(var="model", out="_a"))
    res = kernel.ok("%peft use two")
    assert "active adapter: 'two'" in res.text
    kernel.ok(LOGITS.format(var="model", out="_b"))
    assert not kernel.eval("bool(torch.allclose(_a, _b, atol=1e-4))")
    kernel.ok("%peft off")
    kernel.ok(LOGITS.format(var="model", out="_off"))
    assert kernel.eval("bool(torch.equal(_off, _base))")
    kernel.ok("%peft on")
    kernel.ok(LOGITS.format(var="model", out="_on"))
    assert kernel.eval("bool(torch.equal(_on, _b))")

    res = kernel.ok('%peft generate "hello there" --compare max_new_tokens=6')
    assert "base model" in res.html and "default (lora)" in res.html and "two (lora)" in res.html
    res = kernel.ok("%%peft generate max_new_tokens=4\nhello there")
    assert res.text.strip() != ""
    text = _one_line_error(kernel.run('%peft generate "hi" max_tokens=3'))
    assert "unknown generation setting 'max_tokens'" in text

    res = kernel.ok("%peft merge")
    assert "merged 'two' (lora) into the weights" in res.text
    assert kernel.eval("type(model).__name__") == "LlamaForCausalLM"  # the variable was rebound
    kernel.ok(LOGITS.format(var="model", out="_merged"))
    assert kernel.eval("bool(torch.allclose(_merged, _b, atol=1e-5))")
    res = kernel.ok("%peft adapters")
    assert "merged" in res.text
    res = kernel.ok("%peft help save")
    assert "atomic" in res.text


def test_card_lists_the_real_training_runs_of_the_saved_adapter(kernel, tmp_path):
    kernel.ok("%peft load tiny-llama --as t_model")
    kernel.ok("%peft lora r=4 --model t_model")
    kernel.ok("texts = ['the cat sat on the mat', 'a dog ran in the park', 'birds sing at dawn'] * 8")
    kernel.ok("%peft train data=texts steps=4 batch=4 lr=1e-2 --model t_model --display text")
    res = kernel.ok(f"%peft save {tmp_path / 'trained'} --model t_model")
    assert "training runs recorded in the card" in res.text
    card = (tmp_path / "trained" / "README.md").read_text()
    assert "## Training runs" in card and "| completed | 4/4 |" in card
    assert "Loss by step:" in card and (tmp_path / "trained" / "loss_curve.svg").exists()
    saved_to = kernel.eval("[r.saved_to for r in __import__('peft_magic').state.runs() "
                           "if r.adapter == 'default' and r.model_id == __import__('peft_magic').state."
                           "state_for(t_model).model_id]")
    assert saved_to and all(str(tmp_path / "trained") in s for s in saved_to)
