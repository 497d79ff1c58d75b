"""Bottleneck adapters through real kernels: ``%peft bottleneck`` / ``houlsby`` /
``pfeiffer`` equal the Python API, help and methods show the method, bad input is one
line, and an adapter saved in one kernel loads in a fresh kernel with peft's own
``PeftModel.from_pretrained`` (after a plain ``import peft_magic``) with identical logits."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.kernel

_SAME_MODEL = r'''
def _describe(m):
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in m.peft_config["default"].to_dict().items()}
    cfg["peft_type"] = str(getattr(cfg["peft_type"], "value", cfg["peft_type"]))
    shapes = [(n, tuple(p.shape), p.requires_grad) for n, p in m.named_parameters()]
    return cfg, shapes, m.get_nb_trainable_parameters()
'''


def test_magic_and_python_api_give_the_same_model(kernel):
    kernel.ok("%peft load tiny-llama")
    res = kernel.ok("%peft bottleneck size=16 non_linearity=gelu dropout=0.1")
    assert "attached bottleneck adapter 'default'" in res.text
    assert "trainable params: 8,512" in res.text  # 4 insertion points × (64·16 + 16 + 16·64 + 64)
    assert "o_proj ×2, down_proj ×2" in res.text
    kernel.ok("import peft_magic as pm\n"
              "_api = pm.attach(pm.load('tiny-llama').model, 'bottleneck', size=16, non_linearity='gelu', "
              "dropout=0.1).model\n" + _SAME_MODEL)
    assert kernel.eval("type(model).__name__") == "PeftModelForCausalLM"
    assert kernel.eval("type(model.peft_config['default']).__name__") == "BottleneckConfig"
    assert kernel.eval("model.peft_config['default'].adapter_dropout") == 0.1
    assert kernel.eval("_describe(model) == _describe(_api)")
    assert kernel.eval("_describe(model)[2][0]") == 8512


def test_houlsby_and_pfeiffer_aliases_and_bad_input(kernel):
    kernel.ok("%peft load tiny-gpt2")
    res = kernel.ok("%peft pfeiffer size=8")
    assert "attached pfeiffer adapter 'default'" in res.text
    assert kernel.eval("model.peft_config['default'].placement") == "pfeiffer"
    assert kernel.eval("sorted(model.peft_config['default'].target_modules)") == ["mlp.c_proj"]
    assert "trainable params: 2,192" in res.text  # 2 layers × (64·8 + 8 + 8·64 + 64)
    res = kernel.ok("%peft houlsby size=8")
    assert "replaced houlsby adapter 'default'" in res.text and "trainable params: 4,384" in res.text
    assert kernel.eval("sorted(model.peft_config['default'].target_modules)") == ["attn.c_proj", "mlp.c_proj"]
    assert kernel.eval("type(model.base_model.model.transformer.h[0].attn.c_proj.base_layer).__name__") == "Conv1D"
    kernel.ok("%%peft bottleneck --name second\nsize: 4\nplacement: pfeiffer\nnon_linearity: tanh\n")
    assert kernel.eval("sorted(model.peft_config)") == ["default", "second"]
    assert kernel.eval("model.active_adapter") == "second"

    from conftest import FINGERPRINT

    kernel.ok(FINGERPRINT + "_before = _fp(model)")
    for line, says in (("%peft bottleneck size=0 --name third", "bottleneck_size must be a positive integer"),
                       ("%peft bottleneck sise=8 --name third", "did you mean 'size'"),
                       ("%peft houlsby non_linearity=swish --name third", "'relu', 'gelu', 'silu', 'tanh'")):
        message = kernel.run(line).one_line_error()
        assert says in message, (line, message)
    assert kernel.eval("_fp(model) == _before and sorted(model.peft_config) == ['default', 'second']")


def test_help_and_methods_show_it(kernel):
    text = kernel.ok("%peft help bottleneck").text
    for word in ("Houlsby / Pfeiffer", "merge: no", "4/8-bit base: yes", "bottleneck_size", "placement",
                 "non_linearity", "reduction_factor", "adapter_dropout", "size→bottleneck_size"):
        assert word in text, word
    assert "implies: placement='pfeiffer'" in kernel.ok("%peft help pfeiffer").text
    methods = kernel.ok("%peft methods")
    line = next(ln for ln in methods.text.splitlines() if ln.strip().startswith("bottleneck "))
    assert "kbit" in line and "merge" not in line.split("kbit")[0] and "houlsby" in line and "pfeiffer" in line
    assert "bottleneck" in methods.html


def test_saved_adapter_loads_in_a_fresh_kernel_with_identical_logits(kernel, tmp_path):
    from kernel import Kernel

    from peft_magic.model.builtins import materialize

    base_path = str(materialize("tiny-gpt2"))
    adapter_dir = tmp_path / "adapter"
    kernel.ok("%peft load tiny-gpt2")
    kernel.ok("%peft houlsby size=8 non_linearity=silu")
    kernel.ok(
        "import torch\n"
        "torch.manual_seed(0)\n"
        "_x = torch.randint(5, 300, (3, 10))\n"
        "_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)\n"
        "model.train()\n"
        "for _ in range(3):\n"
        "    model(input_ids=_x, labels=_x).loss.backward(); _opt.step(); _opt.zero_grad()\n"
        "model.eval()\n"
        "with torch.no_grad():\n"
        "    _logits = model(input_ids=_x).logits\n"
        "    with model.disable_adapter():\n"
        "        _base_logits = model(input_ids=_x).logits\n"
        "assert not torch.equal(_logits, _base_logits)  # the adapter does something\n"
        f"model.save_pretrained({str(adapter_dir)!r})\n"
        f"torch.save({{'x': _x, 'logits': _logits}}, {str(tmp_path / 'expected.pt')!r})\n"
    )
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "BOTTLENECK" and config["placement"] == "houlsby"
    assert sorted(config["target_modules"]) == ["attn.c_proj", "mlp.c_proj"]
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    assert len(keys) == 16 and all(".bottleneck_down." in k or ".bottleneck_up." in k for k in keys), keys

    fresh = Kernel(cwd=tmp_path)
    try:
        fresh.ok("import sys\nimport peft_magic\n"
                 "assert not [m for m in ('torch', 'peft') if m in sys.modules], 'import peft_magic was heavy'")
        fresh.ok(
            "import torch\n"
            "from peft import PeftModel\n"
            "from transformers import AutoModelForCausalLM\n"
            f"base = AutoModelForCausalLM.from_pretrained({base_path!r})\n"
            f"loaded = PeftModel.from_pretrained(base, {str(adapter_dir)!r}).eval()\n"
            f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
            "with torch.no_grad():\n"
            "    same = torch.equal(loaded(input_ids=expected['x']).logits, expected['logits'])\n"
        )
        assert fresh.eval("same")
        assert fresh.eval("type(loaded.peft_config['default']).__name__") == "BottleneckConfig"
        assert fresh.eval("str(loaded.peft_config['default'].peft_type.value)") == "BOTTLENECK"
        # the one-shot import hook is gone and peft's loader is peft's own again
        assert fresh.eval("[type(f).__name__ for f in sys.meta_path if type(f).__name__ == '_RegisterAfterPeft']") \
            == []
        assert fresh.eval("type(sys.modules['peft'].__spec__.loader).__name__") == "SourceFileLoader"
    finally:
        fresh.shutdown()
