"""QLoRA with real bitsandbytes 4-bit through the magics in a real kernel: on the CPU in
``make test``, on the GPU in ``make gpu-check`` (marked ``device``: inputs go where the model is)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.device]


def test_qlora_attach_and_one_training_step(kernel):
    res = kernel.ok("%peft load tiny-llama --4bit")
    assert "Loaded tiny-llama" in res.text
    assert kernel.eval("bool(model.is_loaded_in_4bit)")
    assert kernel.eval("type(model.model.layers[0].self_attn.q_proj).__name__") == "Linear4bit"
    assert kernel.eval("model.model.layers[0].self_attn.q_proj.weight.quant_state.quant_type") == "nf4"
    res = kernel.ok("%peft qlora r=8 target=all-linear")
    assert "attached qlora adapter 'default'" in res.text
    assert "prepared the quantized model for k-bit training" in res.text
    assert kernel.eval("type(model.base_model.model.model.layers[0].self_attn.q_proj).__name__") == "Linear4bit"
    kernel.ok(
        "import torch\n"
        "x = torch.randint(5, 400, (4, 16), device=model.device)\n"
        "opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)\n"
        "model.train()\n"
        "loss0 = model(input_ids=x, labels=x).loss\n"
        "loss0.backward(); opt.step(); opt.zero_grad()\n"
        "loss1 = model(input_ids=x, labels=x).loss\n"
        "assert torch.isfinite(loss0) and torch.isfinite(loss1)\n"
        "_with_grad = [n for n, p in model.named_parameters() if p.requires_grad]\n"
        "assert _with_grad and all('lora_' in n for n in _with_grad)\n"
    )
    assert kernel.eval("float(loss1) < float(loss0)")
    res = kernel.ok("%peft show")
    assert "4-bit" in res.text


def test_qlora_on_unquantized_model_says_how(kernel):
    kernel.ok("%peft load tiny-llama")
    res = kernel.run("%peft qlora r=8")
    assert res.error is not None and res.error["ename"] == "UsageError"
    assert "needs a model loaded in 4-bit" in res.error_text and "%peft load PATH --4bit" in res.error_text
    assert kernel.eval("type(model).__name__") == "LlamaForCausalLM"


def test_hub_id_without_network_is_one_plain_line(kernel):
    text = kernel.run("%peft load some-org/some-model-that-is-not-here").one_line_error()
    assert "not a local folder and the Hugging Face Hub is not reachable" in text
    assert "no such folder: ./no/such/folder" in kernel.run("%peft load ./no/such/folder").one_line_error()


def test_4bit_gradients_unchanged_by_a_prior_inference_pass():
    """bitsandbytes repacks CPU 4-bit weights on an eval no-grad forward (AVX512-BF16 CPUs),
    after which backprop went through an op without autograd kernel: wrong LoRA gradients.
    Loading through peft_magic keeps the trainable layout, so the gradients are identical."""
    import torch

    import peft_magic as pm

    def grads(after_inference: bool) -> dict:
        torch.manual_seed(0)
        loaded = pm.load("tiny-llama", bits=4)
        model = pm.attach(loaded.model, "qlora", r=8, target="all-linear").model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
        x = torch.randint(5, 400, (2, 12), device=next(model.parameters()).device)
        if after_inference:
            model.eval()
            with torch.no_grad():
                model(input_ids=x)
        model.train()
        model(input_ids=x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    clean, after = grads(False), grads(True)
    assert clean.keys() == after.keys() and clean
    for name in clean:
        assert torch.equal(clean[name], after[name]), name
