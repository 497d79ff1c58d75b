"""Bottleneck (Houlsby / Pfeiffer) adapters as a peft method, through the engine.

Real peft, real transformers models (tiny Llama, GPT-2 with Conv1D, BERT), real
bitsandbytes 4-bit on CPU. The kernel-level checks (``%peft bottleneck``, save → fresh
kernel → ``PeftModel.from_pretrained``) are in test_bottleneck_kernel.py.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import peft_magic as pm
from peft_magic.errors import PeftMagicError

MODELS = ("tiny-llama", "tiny-gpt2", "tiny-bert")
#: short names of the layers each placement adapts, per built-in (full names end with these)
EXPECTED_TARGETS = {
    ("tiny-llama", "houlsby"): {"self_attn.o_proj", "mlp.down_proj"},
    ("tiny-llama", "pfeiffer"): {"mlp.down_proj"},
    ("tiny-gpt2", "houlsby"): {"attn.c_proj", "mlp.c_proj"},
    ("tiny-gpt2", "pfeiffer"): {"mlp.c_proj"},
    ("tiny-bert", "houlsby"): {"attention.output.dense", "layer.N.output.dense"},
    ("tiny-bert", "pfeiffer"): {"layer.N.output.dense"},
}


def _load(name: str):
    """A fresh base model: causal LMs through peft_magic.load, BERT as a 2-label classifier."""
    if name == "tiny-bert":
        from transformers import AutoModelForSequenceClassification

        from peft_magic.model.builtins import materialize

        return AutoModelForSequenceClassification.from_pretrained(str(materialize("tiny-bert")), num_labels=2)
    return pm.load(name).model


def _task(name: str) -> str | None:
    return "seq-cls" if name == "tiny-bert" else None


def _short(full: str) -> str:
    """``base_model.model.model.layers.0.self_attn.o_proj`` → ``self_attn.o_proj``;
    BERT's ``...layer.0.output.dense`` → ``layer.N.output.dense`` (to tell it from
    ``attention.output.dense``)."""
    parts = full.split(".")
    if parts[-2:] == ["output", "dense"] and parts[-3].isdigit():
        return "layer.N.output.dense"
    return ".".join(parts[-2:]) if parts[-2] != "output" else ".".join(parts[-3:])


def _targets(peft_model) -> list[str]:
    from peft_magic.bottleneck import BottleneckLayer

    return [n for n, m in peft_model.named_modules() if isinstance(m, BottleneckLayer)]


def _hidden(model) -> int:
    cfg = model.config
    return getattr(cfg, "hidden_size", None) or cfg.n_embd


def _inputs(name: str) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 300, (4, 12), generator=g)
    if name == "tiny-bert":
        return {"input_ids": x, "labels": torch.tensor([0, 1, 0, 1])}
    return {"input_ids": x, "labels": x}


def _expected_trainable(hidden: int, size: int, points: int) -> int:
    """The formula: per insertion point down h·s + s, up s·h + h."""
    return points * (hidden * size + size + size * hidden + hidden)


# ----------------------------------------------------------------------------- registration


def test_bottleneck_is_a_member_of_peft_type_and_registered():
    from peft_magic import stack

    stack.ensure()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import PeftType

    import peft_magic.bottleneck as bn
    from peft_magic.bottleneck import BottleneckConfig, BottleneckModel
    from peft_magic.peft_methods.discovery import registry

    member = PeftType("BOTTLENECK")
    assert member is PeftType.BOTTLENECK is PeftType["BOTTLENECK"]
    assert member in list(PeftType) and len(list(PeftType)) == len(PeftType)
    assert member == "BOTTLENECK" and member.value == "BOTTLENECK" and member.name == "BOTTLENECK"
    assert pickle.loads(pickle.dumps(member)) is member
    assert PEFT_TYPE_TO_CONFIG_MAPPING["BOTTLENECK"] is BottleneckConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[member] is BottleneckModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[member] == "bottleneck_"
    assert BottleneckConfig().peft_type is member
    # idempotent: registering again, or re-importing the package, changes nothing
    n = len(PeftType)
    assert bn.register() is False
    importlib.reload(bn)
    assert len(PeftType) == n and PEFT_TYPE_TO_CONFIG_MAPPING[member] is BottleneckConfig
    info = registry()["BOTTLENECK"]
    assert info.name == "bottleneck" and not info.can_merge and info.supports_quantized
    assert {"houlsby", "pfeiffer"} <= set(info.aliases)
    assert "placement" in info.fields and info.fields["placement"].choices == ("houlsby", "pfeiffer")


def test_registered_in_a_fresh_process_that_imported_peft_first():
    """peft already loaded when peft_magic is imported: registered at once. (The other
    order — import peft_magic, then peft — is the fresh-kernel test in
    test_bottleneck_kernel.py.)"""
    code = textwrap.dedent("""
        import sys
        import peft
        import peft_magic
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        from peft.utils import PeftType
        assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType("BOTTLENECK")].__name__ == "BottleneckConfig"
        assert not any(type(f).__name__ == "_RegisterAfterPeft" for f in sys.meta_path), "hook installed needlessly"
        import peft_magic.bottleneck as bn
        assert bn.register() is False
        print("registered")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "registered" in out.stdout, out.stderr[-2000:]


# ----------------------------------------------------------------------------- no-op at init, placement, count


@pytest.mark.parametrize("name", MODELS)
def test_exact_noop_at_init_placement_and_parameter_count(name):
    """For both placements: logits identical to the base (torch.equal), the right layers
    adapted, and trainable parameters exactly the formula (BERT adds its new classifier)."""
    base = _load(name).eval()
    x = _inputs(name)["input_ids"]
    with torch.no_grad():
        reference = base(input_ids=x).logits.clone()
    hidden = _hidden(base)
    layers = base.config.num_hidden_layers if hasattr(base.config, "num_hidden_layers") else base.config.n_layer
    head = sum(p.numel() for p in base.classifier.parameters()) if name == "tiny-bert" else 0
    for placement, settings, size in (("houlsby", {"size": 8}, 8), ("pfeiffer", {"reduction": 4}, hidden // 4)):
        preview = pm.preview(base, placement, task=_task(name), **settings)
        result = pm.attach(base, placement, task=_task(name), **settings)
        model = result.model.eval()
        with torch.no_grad():
            assert torch.equal(model(input_ids=x).logits, reference), f"{name} {placement}: not a no-op at init"
        points = layers * (2 if placement == "houlsby" else 1)
        expected = _expected_trainable(hidden, size, points) + head
        assert result.summary.trainable == expected == preview.trainable, (result.summary.trainable, expected)
        assert model.get_nb_trainable_parameters()[0] == expected
        targets = _targets(model)
        assert len(targets) == points
        assert {_short(t) for t in targets} == EXPECTED_TARGETS[(name, placement)]
        base = pm.detach(model).eval()


def test_layers_to_transform_works_with_the_bert_regex():
    base = _load("tiny-bert")
    model = pm.attach(base, "houlsby", size=4, layers=[1], task="seq-cls").model
    targets = _targets(model)
    assert len(targets) == 2 and all(".layer.1." in t for t in targets), targets


# ----------------------------------------------------------------------------- training


def _train(model, batch: dict, steps: int = 8, lr: float = 1e-2) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", MODELS)
def test_trains_and_only_adapters_get_gradients(name):
    base = _load(name)
    model = pm.attach(base, "bottleneck", size=8, task=_task(name)).model
    batch = _inputs(name)
    model.train()
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad and with_grad <= trainable
    allowed = ("bottleneck_down", "bottleneck_up") + (("classifier",) if name == "tiny-bert" else ())
    assert all(any(a in n for a in allowed) for n in with_grad), sorted(with_grad)
    # the zero-initialised up-projections receive gradient from the first step
    assert any("bottleneck_up" in n and model.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)
    model.zero_grad(set_to_none=True)
    losses = _train(model, batch)
    assert losses[-1] < losses[0] - 1e-3, losses


def test_4bit_base_noop_trains_and_keeps_quantized_layers():
    from bitsandbytes.nn import Linear4bit

    loaded = pm.load("tiny-llama", bits=4)
    base = loaded.model
    batch = _inputs("tiny-llama")
    # reference in train mode: on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights
    # for inference on the first eval-mode no-grad forward (tiny Llama has no dropout)
    base.train()
    with torch.no_grad():
        reference = base(input_ids=batch["input_ids"]).logits.clone()
    result = pm.attach(base, "bottleneck", size=8)
    model = result.model
    assert any("k-bit" in n for n in result.notes)
    o_proj = model.base_model.model.model.layers[0].self_attn.o_proj
    assert isinstance(o_proj.base_layer, Linear4bit)
    assert o_proj.bottleneck_down["default"].weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, reference)
    assert result.summary.trainable == _expected_trainable(64, 8, 4)
    losses = _train(model, batch)
    assert losses[-1] < losses[0] - 1e-3, losses
    assert isinstance(o_proj.base_layer, Linear4bit)  # the quantized weights were never replaced


# ----------------------------------------------------------------------------- several adapters, merge


def test_two_adapters_switch_delete_and_merge_refused():
    base = _load("tiny-llama").eval()
    x = _inputs("tiny-llama")["input_ids"]
    with torch.no_grad():
        reference = base(input_ids=x).logits.clone()
    model = pm.attach(base, "houlsby", size=8, init=False, name="a").model
    added = pm.attach(model, "pfeiffer", size=4, init=False, name="b", non_linearity="tanh")
    assert added.status == "added" and model.active_adapter == "b"
    model.eval()

    def logits():
        with torch.no_grad():
            return model(input_ids=x).logits.clone()

    out_b = logits()
    model.set_adapter("a")
    out_a = logits()
    assert not torch.equal(out_a, out_b) and not torch.equal(out_a, reference) and not torch.equal(out_b, reference)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".a." in n for n in trainable)  # switching moves trainability too
    model.set_adapter("b")
    assert torch.equal(logits(), out_b)
    with model.disable_adapter():
        assert torch.equal(logits(), reference)
    # b sits only after the MLPs, a also after attention
    o_proj = model.base_model.model.model.layers[0].self_attn.o_proj
    assert set(o_proj.bottleneck_down) == {"a"}

    for merge in (model.merge_and_unload, model.merge_adapter):
        with pytest.raises(ValueError) as err:
            merge()
        msg = str(err.value)
        assert "cannot be merged" in msg and "\n" not in msg
    assert torch.equal(logits(), out_b)  # the refused merge changed nothing

    model.delete_adapter("b")
    assert list(model.peft_config) == ["a"] and model.active_adapter == "a"
    assert not any("b" in m.bottleneck_down for m in model.modules() if hasattr(m, "bottleneck_down"))
    assert torch.equal(logits(), out_a)
    plain = model.unload()  # removing (not merging) works and gives the base model back
    with torch.no_grad():
        assert torch.equal(plain(input_ids=x).logits, reference)
    assert type(plain.model.layers[0].self_attn.o_proj) is torch.nn.Linear


# ----------------------------------------------------------------------------- bad input, other architectures


@pytest.mark.parametrize("settings, says", [
    ({"size": 0}, "bottleneck_size must be a positive integer"),
    ({"size": 8, "reduction": 4}, "set bottleneck_size or reduction_factor, not both"),
    ({"placement": "middle"}, "expected one of 'houlsby', 'pfeiffer'"),
    ({"non_linearity": "swish"}, "expected one of 'relu', 'gelu', 'silu', 'tanh'"),
    ({"sise": 8}, "did you mean 'size'"),
    ({"target": "embed_tokens"}, "Target module Embedding is not supported"),
    ({"target": "nope_proj"}, "not found in the base model"),
])
def test_bad_settings_are_one_line_and_change_nothing(settings, says):
    base = _load("tiny-llama")
    before = [(n, p.requires_grad) for n, p in base.named_parameters()]
    with pytest.raises(PeftMagicError) as err:
        pm.attach(base, "bottleneck", **settings)
    msg = str(err.value)
    assert says in msg and "\n" not in msg, msg
    assert [(n, p.requires_grad) for n, p in base.named_parameters()] == before
    assert type(base).__name__ == "LlamaForCausalLM" and not hasattr(base, "peft_config")


class _Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = torch.nn.ModuleDict({"qkv": torch.nn.Linear(width, 3 * width),
                                         "out_proj": torch.nn.Linear(width, width)})
        self.mlp = torch.nn.ModuleDict({"fc1": torch.nn.Linear(width, 2 * width),
                                        "fc2": torch.nn.Linear(2 * width, width)})

    def forward(self, h):
        h = h + self.attn["out_proj"](self.attn["qkv"](h)[..., : h.shape[-1]])
        return h + self.mlp["fc2"](torch.relu(self.mlp["fc1"](h)))


class _Net(torch.nn.Module):
    def __init__(self, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block(width) for _ in range(depth))

    def forward(self, h):
        for b in self.blocks:
            h = b(h)
        return h


def test_unknown_architecture_uses_the_usual_names_or_says_what_to_do():
    from peft import get_peft_model

    from peft_magic.bottleneck import BottleneckConfig

    model = get_peft_model(_Net(), BottleneckConfig(bottleneck_size=4))
    assert sorted(_targets(model)) == [f"base_model.model.blocks.{i}.{m}" for i in (0, 1)
                                       for m in ("attn.out_proj", "mlp.fc2")]
    pfeiffer = get_peft_model(_Net(), BottleneckConfig(bottleneck_size=4, placement="pfeiffer"))
    assert sorted(_targets(pfeiffer)) == ["base_model.model.blocks.0.mlp.fc2", "base_model.model.blocks.1.mlp.fc2"]

    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = torch.nn.Linear(8, 8)
            self.second = torch.nn.Linear(8, 8)

    odd = Odd()
    with pytest.raises(PeftMagicError) as err:
        pm.attach(odd, "houlsby", size=2)
    msg = str(err.value)
    assert "does not know where the attention and MLP outputs" in msg and "target_modules" in msg, msg
    assert all(p.requires_grad for p in odd.parameters())
    result = pm.attach(odd, "bottleneck", size=2, target="second")  # explicit targets always work
    assert [n.rsplit(".", 1)[-1] for n in _targets(result.model)] == ["second"]
