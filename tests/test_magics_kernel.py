"""The %peft magics through a real kernel (nbclient): attach, re-run, replace, errors."""

from __future__ import annotations

import pytest

from conftest import FINGERPRINT

pytestmark = pytest.mark.kernel


def test_load_ext_imports_nothing_heavy(tmp_path):
    from kernel import Kernel

    fresh = Kernel(cwd=tmp_path)  # its own kernel: the module's shared one has loaded models by now
    try:
        fresh.ok("%load_ext peft_magic")
        heavy = fresh.eval("[m for m in ('torch', 'transformers', 'peft') if m in __import__('sys').modules]")
        assert heavy == []
        doc = fresh.ok("%peft?").text + fresh.run("print(get_ipython().find_line_magic('peft').__doc__)").stdout
        assert "%peft load" in doc and "%peft METHOD" in doc
    finally:
        fresh.shutdown()


def test_load_attach_and_summary(kernel):
    res = kernel.ok("%peft load tiny-llama")
    assert "Loaded tiny-llama" in res.text
    assert kernel.eval("type(model).__name__") == "LlamaForCausalLM"
    assert kernel.eval("type(tokenizer).__name__").endswith("Tokenizer") or kernel.eval("tokenizer is not None")
    res = kernel.ok("%peft lora r=8 alpha=16 dropout=0.05")
    assert "attached lora adapter 'default'" in res.text
    assert "trainable params: 3,584" in res.text
    assert "q_proj ×2, v_proj ×2" in res.text
    assert "trainable params" in res.html  # rich output in notebooks
    assert kernel.eval("type(model).__name__") == "PeftModelForCausalLM"
    assert kernel.eval("model.peft_config['default'].lora_alpha") == 16
    assert kernel.eval("model.peft_config['default'].lora_dropout") == 0.05
    # forward/backward: gradients only on adapter parameters
    kernel.ok(
        "import torch\n"
        "x = torch.randint(5, 500, (2, 10))\n"
        "model(input_ids=x, labels=x).loss.backward()\n"
        "_with_grad = [n for n, p in model.named_parameters() if p.grad is not None]\n"
        "assert _with_grad and all('lora_' in n for n in _with_grad), _with_grad\n"
        "model.zero_grad(set_to_none=True)"
    )


def test_rerun_is_noop_and_change_replaces_with_diff(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(FINGERPRINT + "_before = _fp(model); _obj = id(model)")
    res = kernel.ok("%peft lora r=8")
    assert "already attached with these settings" in res.text
    assert kernel.eval("_fp(model) == _before and id(model) == _obj")
    res = kernel.ok("%peft lora r=16")
    assert "replaced lora adapter 'default' (r: 8 → 16)" in res.text
    assert kernel.eval("list(model.peft_config)") == ["default"]
    assert kernel.eval("model.base_model.model.model.layers[0].self_attn.q_proj.lora_A['default'].weight.shape[0]") == 16
    # never wrapped twice: no PeftModel inside the PeftModel, one LoRA layer per target
    assert kernel.eval("sum(1 for m in model.modules() if type(m).__name__.startswith('PeftModel'))") == 1
    assert kernel.eval("type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__") == "Linear"
    # passing the base model after wrapping finds the same PeftModel
    kernel.ok("base = model.get_base_model()")
    res = kernel.ok("%peft lora r=16 --model base")
    assert "already attached" in res.text
    assert kernel.eval("type(base).__name__") == "PeftModelForCausalLM"
    # a second adapter under another name
    res = kernel.ok("%peft lora r=4 target=q_proj,k_proj --name second")
    assert "added lora adapter 'second'" in res.text
    assert kernel.eval("sorted(model.peft_config)") == ["default", "second"]
    assert kernel.eval("model.active_adapter") == "second"


def test_cell_form_yaml_and_kv(kernel):
    kernel.ok("%peft load tiny-llama")
    res = kernel.ok("%%peft lora\nr: 4\ntarget_modules: [q_proj, k_proj, v_proj, o_proj]\nlora_alpha: 8\n")
    assert "16 modules" in res.text or "targeted 8 modules" in res.text
    assert kernel.eval("sorted(model.peft_config['default'].target_modules)") == ["k_proj", "o_proj", "q_proj",
                                                                                 "v_proj"]
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%%peft ia3\ntarget_modules=['k_proj', 'down_proj']\nfeedforward_modules=down_proj\n")
    assert kernel.eval("type(model.peft_config['default']).__name__") == "IA3Config"


ERRORS = [
    ("%peft lora rr=8", "unknown key 'rr' for lora: did you mean 'r'?"),
    ("%peft lora r=abc", "invalid value for lora 'r': expected an integer"),
    ("%peft lora r=0", "r"),
    ("%peft lorra r=8", "unknown PEFT method 'lorra': did you mean 'lora'?"),
    ("%peft lora target=nope_proj", "not found"),
    ("%peft lora --model missing_var", "no variable 'missing_var'"),
    ("%peft lora --model not_a_model", "'not_a_model' is a list, not a torch model"),
    ("%peft qlora r=8", "--4bit"),
    ("%peft lora r=8 --modle x", "did you mean '--model'"),
    ("%peft lora lora_dropout=high", "expected a number"),
    ("%peft ia3 r=8 alpha=3", "unknown key"),
    ("%peft prompt tokens=0", "prompt"),
    ("%peft prefix --model custom", "prefix needs a task type and none could be inferred from Sequential"),
    ("%peft lora --model custom", "cannot attach lora"),
]


@pytest.mark.parametrize("line,expected", ERRORS)
def test_errors_are_one_line_and_change_nothing(kernel, line, expected):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(FINGERPRINT + "import torch\ncustom = torch.nn.Sequential(torch.nn.Linear(4, 4))\n"
              "_custom_before = _fp(custom)\n"
              "not_a_model = [1, 2]\n_before = _fp(model); _ns = sorted(k for k in globals() "
              "if not k.startswith('_')); _obj = id(model)")
    message = kernel.run(line).one_line_error()
    assert expected in message, message
    assert kernel.eval("_fp(model) == _before and id(model) == _obj")
    assert kernel.eval("_fp(custom) == _custom_before")
    assert kernel.eval("sorted(k for k in globals() if not k.startswith('_')) == _ns")


def test_targets_show_methods_help(kernel):
    kernel.ok("%peft load tiny-llama")
    res = kernel.ok("%peft targets")
    assert "q_proj" in res.text and "gate_proj" in res.text and "peft default: q_proj, v_proj" in res.text
    res = kernel.ok("%peft targets q_proj,v_proj,qproj")
    assert "matches 4 modules" in res.text
    assert "'qproj' matches no layer (did you mean 'q_proj'?)" in res.text
    res = kernel.ok('%peft targets "model\\.layers\\.0\\..*_proj"')
    assert "q_proj' matched only 1 of 2 layers" in res.text
    res = kernel.ok("%peft targets all-linear")
    assert "matches 14 modules" in res.text
    kernel.ok("%peft lora r=8")
    res = kernel.ok("%peft show")
    assert "[active] default: lora (r=8)" in res.text and "process RAM" in res.text
    assert "<table" in res.html
    res = kernel.ok("info = %peft show")
    assert kernel.eval("info.trainable") == 3584
    res = kernel.ok("%peft methods")
    assert "prefix_tuning" in res.text and "LoRA family" in res.text
    # every PeftType of the installed peft is listed, plus our bottleneck adapters
    assert kernel.eval("{t.value for t in __import__('peft').PeftType} <= "
                       "{m.peft_type for m in __import__('peft_magic').methods().methods}")
    assert "bottleneck" in res.text
    res = kernel.ok("%peft help lora")
    assert "lora_alpha" in res.text and "alpha→lora_alpha" in res.text
    res = kernel.ok("%peft help load")
    assert "--4bit" in res.text
    res = kernel.run("%peft help nonsense")
    assert res.error is not None and res.error["ename"] == "UsageError"
