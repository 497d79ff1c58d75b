"""The tuner-layer contract of bottleneck adapters, and the peft behaviours they support.

Why: every peft tuner layer exposes ``in_features`` and ``out_features`` equal to the
wrapped layer's (peft's ``test_in_features_out_features_exposed`` checks it, and other
libraries read them from wrapped layers). The bottleneck layer first exposed only
``out_features`` (issue 16). Each case uses different in and out widths, so swapping
them — the classic mistake with GPT-2's ``Conv1D``, whose weight is stored (in, out),
or reading a bitsandbytes layer's packed weight shape — fails the test.

Real layers only: ``torch.nn.Linear``, transformers' ``Conv1D``, bitsandbytes 4-bit and
8-bit layers quantized on the CPU, and a layer type peft does not know. The peft
behaviours (save / load, low-memory loading, half precision) go through peft's own API
(``get_peft_model``, ``PeftModel.from_pretrained``) on tiny transformers models built
from configs, so that they test the method and nothing else of peft_magic.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import peft_magic  # noqa: F401  (registers the BOTTLENECK method with peft)

IN, OUT, SIZE = 12, 20, 4


class _OwnLinear(nn.Module):
    """A layer type peft has never heard of that says its widths the usual way, as many
    third-party (e.g. quantized) linear layers do; its weight is not called ``weight``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.w = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T


class _OutOnly(nn.Module):
    """Says its output width but not its input width: nothing can report ``in_features``."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features
        self.lin = nn.Linear(IN, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _linear() -> nn.Module:
    return nn.Linear(IN, OUT)


def _conv1d() -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(OUT, IN)  # Conv1D(nf=out, nx=in)
    assert tuple(layer.weight.shape) == (IN, OUT)  # transposed compared to nn.Linear
    return layer


def _linear4bit() -> nn.Module:
    from bitsandbytes.nn import Linear4bit

    layer = Linear4bit(IN, OUT, compute_dtype=torch.float32, quant_type="nf4").to("cpu")  # .to quantizes
    assert getattr(layer.weight, "bnb_quantized", False)
    assert tuple(layer.weight.shape) != (OUT, IN)  # packed: the weight's shape says nothing about the layer
    return layer


def _linear8bit() -> nn.Module:
    from bitsandbytes.nn import Linear8bitLt

    layer = Linear8bitLt(IN, OUT, has_fp16_weights=False).to("cpu")  # .to quantizes, on the CPU too
    assert layer.weight.dtype == torch.int8 and layer.weight.SCB is not None
    return layer


def _own_linear() -> nn.Module:
    return _OwnLinear(IN, OUT)


BASE_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "Linear": _linear,
    "Conv1D": _conv1d,
    "Linear4bit": _linear4bit,
    "Linear8bitLt": _linear8bit,
    "other layer with in_features/out_features": _own_linear,
}


def _wrap(layer: nn.Module, **config: object):
    """``get_peft_model`` on a one-layer model; returns (peft model, the wrapped layer)."""
    from peft import get_peft_model

    from peft_magic.bottleneck import BottleneckConfig

    model = get_peft_model(nn.Sequential(layer),
                           BottleneckConfig(target_modules=["0"], bottleneck_size=SIZE, **config))
    return model, model.base_model.model[0]


@pytest.mark.parametrize("kind", list(BASE_LAYERS))
def test_wrapped_layer_exposes_the_base_layers_in_and_out_features(kind):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from peft_magic.bottleneck import BottleneckLayer
    from peft_magic.bottleneck.layer import _own_in_out_features, in_out_features

    torch.manual_seed(0)
    base = BASE_LAYERS[kind]()
    x = torch.randn(3, IN)
    with torch.no_grad():  # train mode (the default): bitsandbytes repacks 4-bit weights on eval no-grad calls
        reference = base(x).clone()
    assert reference.shape == (3, OUT)

    model, wrapped = _wrap(base)
    assert isinstance(wrapped, BottleneckLayer) and wrapped.get_base_layer() is base
    # what peft's own suite checks of every tuner layer, and what callers read
    tuner_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert tuner_layers == [wrapped]
    assert (wrapped.in_features, wrapped.out_features) == (IN, OUT)
    assert type(wrapped.in_features) is int and type(wrapped.out_features) is int
    # the adapter reads the layer's output: its shapes follow out_features
    down, up = wrapped.bottleneck_down["default"], wrapped.bottleneck_up["default"]
    assert (down.in_features, down.out_features) == (wrapped.out_features, SIZE)
    assert (up.in_features, up.out_features) == (SIZE, wrapped.out_features)
    # an input of in_features goes through, the output has out_features, and a new adapter adds nothing
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, wrapped.out_features)
    assert torch.equal(out, reference)
    # a second adapter on the same layer: same contract, adapter sized from out_features again
    model.add_adapter("second", type(model.peft_config["default"])(target_modules=["0"], bottleneck_size=2))
    assert (wrapped.in_features, wrapped.out_features) == (IN, OUT)
    assert wrapped.bottleneck_down["second"].in_features == OUT == wrapped.bottleneck_up["second"].out_features
    # the fallback for peft releases without peft's helper gives the same numbers as the helper
    assert in_out_features(base) == _own_in_out_features(base) == (IN, OUT)


def test_a_trained_adapter_on_each_layer_type_changes_the_output_with_the_right_shape():
    """The contract is not only attributes: with random (non-zero) up-projections the
    adapter really runs on the layer's output, for every accepted layer type."""
    for kind, make in BASE_LAYERS.items():
        torch.manual_seed(0)
        base = make()
        x = torch.randn(5, IN)
        with torch.no_grad():
            reference = base(x).clone()
        model, _ = _wrap(base, init_weights=False)
        with torch.no_grad():
            out = model(x)
            with model.disable_adapter():
                disabled = model(x)
        assert out.shape == (5, OUT), kind
        assert not torch.equal(out, reference), kind
        assert torch.equal(disabled, reference), kind


@pytest.mark.parametrize("make, name", [
    (lambda: nn.Embedding(50, OUT), "Embedding"),
    (lambda: nn.Conv2d(3, OUT, 3), "Conv2d"),
    (lambda: _OutOnly(OUT), "_OutOnly"),
])
def test_unsupported_layer_types_get_the_clear_error(make, name):
    base = make()
    with pytest.raises(ValueError) as err:
        _wrap(base)
    msg = str(err.value)
    assert msg.startswith(f"Target module {name} is not supported: bottleneck adapters go after a Linear or Conv1D")
    assert "\n" not in msg


# ----------------------------------------------------------------------------- real architectures


def _tiny(arch: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny randomly initialised transformers model, the same for the same arch (seeded).

    Built from a config, not through peft_magic's loader, so that these tests exercise
    peft's own API on the method and nothing else of the package."""
    import transformers as tf

    torch.manual_seed(0)
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "bert":
        cfg = tf.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=72, max_position_embeddings=64, num_labels=2)
        model = tf.BertForSequenceClassification(cfg)
    else:
        raise ValueError(arch)
    return model.to(dtype).eval()


def _ids() -> torch.Tensor:
    return torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_every_adapted_layer_of_a_real_architecture_reports_its_base_layers_widths(arch):
    """Llama's and BERT's Linear layers, GPT-2's Conv1D (the MLP output projections have
    in != out, so a swap would be caught), placed by the method's own defaults."""
    from peft import get_peft_model

    from peft_magic.bottleneck import BottleneckConfig, BottleneckLayer

    model = get_peft_model(_tiny(arch), BottleneckConfig(bottleneck_size=4))
    layers = [m for m in model.modules() if isinstance(m, BottleneckLayer)]
    assert len(layers) == 4  # houlsby: attention and MLP outputs of 2 blocks
    assert any(m.in_features != m.out_features for m in layers)
    for m in layers:
        b = m.get_base_layer()
        expected = (b.nx, b.nf) if arch == "gpt2" else (b.in_features, b.out_features)
        assert (m.in_features, m.out_features) == expected, type(b).__name__
        assert m.bottleneck_down["default"].in_features == m.out_features == m.bottleneck_up["default"].out_features


# ----------------------------------------------------------------------------- peft behaviours: save / load


def _train_a_little(model: nn.Module, steps: int = 3) -> None:
    """Make the adapter differ from a fresh one (and from the base) so a roundtrip proves something."""
    ids = _ids()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("low_cpu_mem_usage", [False, True])
def test_save_and_load_roundtrip_gives_identical_outputs(tmp_path, low_cpu_mem_usage):
    """``save_pretrained`` then ``PeftModel.from_pretrained`` (and ``load_adapter`` for a
    second adapter) on a fresh base give bit-identical logits, also with peft's low-memory
    loading, where the adapters are first created on the meta device and then assigned."""
    from peft import PeftModel, get_peft_model

    from peft_magic.bottleneck import BottleneckConfig

    ids = _ids()
    model = get_peft_model(_tiny("gpt2"), BottleneckConfig(bottleneck_size=6, non_linearity="silu"))
    _train_a_little(model)
    with torch.no_grad():
        expected = model(input_ids=ids).logits.clone()
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits.clone()
    assert not torch.equal(expected, base_logits)  # the trained adapter does something
    model.save_pretrained(str(tmp_path / "a"))

    loaded = PeftModel.from_pretrained(_tiny("gpt2"), str(tmp_path / "a"),
                                       low_cpu_mem_usage=low_cpu_mem_usage).eval()
    assert type(loaded.peft_config["default"]) is BottleneckConfig
    assert not [n for n, p in loaded.named_parameters() if p.device.type == "meta"]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, expected)

    loaded.load_adapter(str(tmp_path / "a"), adapter_name="again", low_cpu_mem_usage=low_cpu_mem_usage)
    assert not [n for n, p in loaded.named_parameters() if p.device.type == "meta"]
    loaded.set_adapter("again")
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, expected)


# ----------------------------------------------------------------------------- peft behaviours: dtypes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("autocast_adapter_dtype", [True, False])
def test_half_precision_base_forward_and_backward(dtype, autocast_adapter_dtype):
    """A bf16 / fp16 base: peft keeps the adapter in fp32 (``autocast_adapter_dtype=True``,
    its default) or in the base's dtype (False); either way the output keeps the base's
    dtype, a new adapter changes nothing, and the adapter trains."""
    from peft import get_peft_model

    from peft_magic.bottleneck import BottleneckConfig, BottleneckLayer

    ids = _ids()
    base = _tiny("llama", dtype)
    with torch.no_grad():
        reference = base(input_ids=ids).logits.clone()
    model = get_peft_model(base, BottleneckConfig(bottleneck_size=4), autocast_adapter_dtype=autocast_adapter_dtype)
    adapter_dtype = torch.float32 if autocast_adapter_dtype else dtype
    layers = [m for m in model.modules() if isinstance(m, BottleneckLayer)]
    assert layers and all(p.dtype == adapter_dtype for m in layers
                          for p in (*m.bottleneck_down.parameters(), *m.bottleneck_up.parameters()))
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert out.dtype == dtype and torch.equal(out, reference)

    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_fp32_model_under_cpu_autocast():
    """``torch.autocast`` (bf16) around an fp32 model with a trained adapter: forward and
    backward work, and the adapter still changes the output."""
    from peft import get_peft_model

    from peft_magic.bottleneck import BottleneckConfig

    ids = _ids()
    model = get_peft_model(_tiny("llama"), BottleneckConfig(bottleneck_size=4, init_weights=False))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids)
        with model.disable_adapter():
            base_out = model(input_ids=ids).logits
    assert torch.isfinite(out.loss) and not torch.equal(out.logits, base_out)
    out.loss.backward()
    up = [p for n, p in model.named_parameters() if "bottleneck_up" in n]
    assert up and all(p.grad is not None and p.grad.abs().sum() > 0 for p in up)
