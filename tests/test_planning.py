"""``plan`` / ``check_fit`` / ``measure`` against real tensors and real training steps on CPU.

Ground truth here is not a formula: weights, adapter, gradient and optimizer bytes come
from the tensors of a real model with the method really attached (and a real optimizer
step); activations come from counting live tensor bytes during a real forward/backward.
The estimates come from the config alone, on the meta device.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import peft_magic as pm
from peft_magic.errors import PeftMagicError

warnings.filterwarnings("ignore")

SIZES = [(2, 32), (4, 128)]
METHODS = {
    "lora": {"r": 8, "target_modules": "all-linear"},
    "qlora": {"r": 8, "target_modules": "all-linear"},
    "prompt": {"num_virtual_tokens": 8},
}
RESULTS: list[tuple[str, ...]] = []

# Llama-2-7b's published config (meta-llama/Llama-2-7b-hf, config.json), written out: no weights.
LLAMA2_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False, name="Llama-2-7b")


@pytest.fixture(scope="module")
def small_llama_path(tmp_path_factory) -> str:
    """A small Llama (6 layers, hidden 256, GQA, tied embeddings; 5.4M params), saved as a
    checkpoint folder: deep enough that plans use the two-depth extrapolation."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                                   tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("small-llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module", autouse=True)
def _write_table(artifacts):
    yield
    if RESULTS:
        lines = ["| model | method | batch × seq | estimated activations | measured peak | error |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in RESULTS]
        (Path(artifacts) / "plan_vs_measured.md").write_text("\n".join(lines) + "\n")


def _model_path(name: str, small: str) -> str:
    if name == "small":
        return small
    from peft_magic.model.builtins import materialize

    return str(materialize(name))


def _attached(path: str, method: str, settings: dict):
    loaded = pm.load(path, bits=4 if method == "qlora" else None)
    model = pm.attach(loaded.model, method, **settings).model
    model.train()
    return model


def _optimizer_state_bytes(opt) -> int:
    import torch

    seen, total = set(), 0
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() not in seen:
                seen.add(v.untyped_storage().data_ptr())
                total += v.untyped_storage().nbytes()
    return total


@pytest.mark.parametrize("model_name,method", [(m, k) for m in ("tiny-llama", "small") for k in METHODS])
def test_estimates_match_real_tensors_and_measured_peak(model_name, method, small_llama_path):
    """Weights, adapter, gradients and optimizer states to the byte; activations within
    15% of the live tensor bytes of a real step (they match far closer), at two sizes."""
    import torch

    from peft_magic.planning.sketch import tensor_accounting
    from peft_magic.planning.trace import measure_step, step_inputs

    path = _model_path(model_name, small_llama_path)
    settings = METHODS[method]
    real = _attached(path, method, settings)
    exact = tensor_accounting(real)
    table = [f"{model_name} {method}: estimate vs measured (live tensor bytes of a real step)"]
    for batch, seq in SIZES:
        row = pm.plan(path, method, batch=batch, seq=seq, limits=False, **settings)[method]
        assert row.error is None, row.error
        assert row.parts.weights == exact.frozen, (row.parts.weights, exact.frozen)
        assert row.parts.adapter == exact.trainable > 0
        assert row.trainable == exact.trainable_params

        measured = measure_step(real, step_inputs(real, batch, seq, "CAUSAL_LM", "cpu"))
        assert row.parts.gradients == measured.grads
        err = (row.parts.activations - measured.activations) / measured.activations
        table.append(f"  batch {batch} × seq {seq}: estimated {row.parts.activations:>12,} B · measured "
                     f"{measured.activations:>12,} B · error {err:+.3%}")
        RESULTS.append((model_name, method, f"{batch} × {seq}", f"{row.parts.activations:,} B",
                        f"{measured.activations:,} B", f"{err:+.3%}"))
        assert abs(err) <= 0.15

        opt = torch.optim.AdamW([p for p in real.parameters() if p.requires_grad], lr=0.0)
        opt.step()
        assert row.parts.optimizer == _optimizer_state_bytes(opt)
        real.zero_grad(set_to_none=True)
    print("\n".join(table))


def test_smollm2_real_checkpoint_lora_and_prompt():
    """The real SmolLM2-135M (30 layers, tied embeddings, 9 query / 3 key-value heads):
    parts to the byte and activations against a real step, through the depth extrapolation."""
    from peft_magic.planning.sketch import tensor_accounting
    from peft_magic.planning.trace import measure_step, step_inputs

    lines = ["smollm2: estimate vs measured"]
    for method, settings in (("lora", {"r": 8}), ("prompt", {"num_virtual_tokens": 8})):
        real = _attached("smollm2", method, settings)
        exact = tensor_accounting(real)
        batch, seq = 1, 16
        row = pm.plan("smollm2", method, batch=batch, seq=seq, limits=False, **settings)[method]
        assert (row.parts.weights, row.parts.adapter) == (exact.frozen, exact.trainable)
        measured = measure_step(real, step_inputs(real, batch, seq, "CAUSAL_LM", "cpu"))
        err = (row.parts.activations - measured.activations) / measured.activations
        lines.append(f"  {method} batch {batch} × seq {seq}: estimated {row.parts.activations:,} B · measured "
                     f"{measured.activations:,} B · error {err:+.3%}")
        RESULTS.append(("smollm2", method, f"{batch} × {seq}", f"{row.parts.activations:,} B",
                        f"{measured.activations:,} B", f"{err:+.3%}"))
        assert abs(err) <= 0.15
        assert row.parts.gradients == measured.grads
        del real
    print("\n".join(lines))


@pytest.mark.parametrize("optim", ["adamw_8bit", "paged_adamw", "lion_8bit", "adafactor", "rmsprop", "adagrad",
                                   "sgd"])
def test_optimizer_state_bytes_are_exact(optim, tiny_llama_path):
    """Each optimizer's states as its real implementation allocates them."""
    import bitsandbytes as bnb
    import torch
    from transformers.optimization import Adafactor

    model = _attached(tiny_llama_path, "lora", {"r": 8, "target_modules": "all-linear"})
    # full fine-tuning too: big enough tensors for the 8-bit path (≥ 4096 elements)
    row = pm.plan(tiny_llama_path, ["lora"], optim=optim, batch=1, seq=8, limits=False, r=8,
                  target_modules="all-linear")["lora"]
    params = [p for p in model.parameters() if p.requires_grad]
    make = {"adamw_8bit": lambda: bnb.optim.AdamW8bit(params, lr=0.0),
            "paged_adamw": lambda: bnb.optim.PagedAdamW(params, lr=0.0),
            "lion_8bit": lambda: bnb.optim.Lion8bit(params, lr=0.0),
            "adafactor": lambda: Adafactor(params, lr=0.0, relative_step=False, scale_parameter=False),
            "rmsprop": lambda: torch.optim.RMSprop(params, lr=0.0),
            "adagrad": lambda: torch.optim.Adagrad(params, lr=0.0),
            "sgd": lambda: torch.optim.SGD(params, lr=0.0)}[optim]
    opt = make()
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert row.parts.optimizer == _optimizer_state_bytes(opt)

    full = pm.load(tiny_llama_path).model
    frow = pm.plan(tiny_llama_path, "full", optim=optim, batch=1, seq=8, limits=False)["full"]
    params = [p for p in full.parameters() if p.requires_grad]
    opt = make()
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert frow.parts.optimizer == _optimizer_state_bytes(opt)
    assert frow.parts.gradients == sum(p.numel() * 4 for p in params)


def test_full_fine_tuning_and_other_architectures(tiny_llama_path, tmp_path):
    """Full fine-tuning of a real model; GPT-2's Conv1D layers (which bitsandbytes quantizes
    too); a T5 encoder-decoder (learned position bias, attention dropout); a BERT classifier
    (peft also trains a copy of its head): parts exact, activations close."""
    import torch
    import transformers

    from peft_magic.model.builtins import materialize
    from peft_magic.planning.sketch import tensor_accounting
    from peft_magic.planning.trace import measure_step, step_inputs

    full = pm.load(tiny_llama_path).model
    full.train()
    row = pm.plan(tiny_llama_path, "full", batch=2, seq=32, limits=False)["full"]
    exact = tensor_accounting(full)
    assert row.parts.weights == exact.total and row.parts.adapter == 0
    m = measure_step(full, step_inputs(full, 2, 32, "CAUSAL_LM", "cpu"))
    assert row.parts.gradients == m.grads
    assert abs(row.parts.activations - m.activations) <= 0.15 * m.activations

    torch.manual_seed(0)
    t5 = tmp_path / "t5"
    transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=1000, d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, decoder_start_token_id=0,
    )).save_pretrained(t5)
    cases = [(str(materialize("tiny-gpt2")), "lora", {"r": 4}, None), (str(materialize("tiny-gpt2")), "qlora",
             {"r": 4}, None), (str(t5), "lora", {"r": 4}, None), (str(t5), "qlora", {"r": 4}, None),
             (str(t5), "prompt", {"num_virtual_tokens": 4}, None),
             (str(materialize("tiny-bert")), "lora", {"r": 4}, 3)]
    for path, method, settings, labels in cases:
        loaded = pm.load(path, bits=4 if method == "qlora" else None, labels=labels)
        real = pm.attach(loaded.model, method, **settings).model
        real.train()
        # the classifier is planned from the model in the kernel: its head (3 labels) is not in the file
        row = pm.plan(real if labels else path, method, batch=2, seq=16, limits=False, **settings)[method]
        exact = tensor_accounting(real)
        assert (row.parts.weights, row.parts.adapter) == (exact.frozen, exact.trainable), (path, method)
        m = measure_step(real, step_inputs(real, 2, 16, loaded.task, "cpu"))
        assert abs(row.parts.activations - m.activations) <= 0.15 * m.activations, (path, method)


def test_depth_extrapolation_equals_the_full_depth_trace():
    """SmolLM2's 30 layers from sketches of 1 and 2 layers: the same bytes as tracing all 30."""
    from transformers import AutoConfig

    from peft_magic.model.builtins import materialize
    from peft_magic.peft_methods.coerce import normalize_settings
    from peft_magic.peft_methods.discovery import resolve_method
    from peft_magic.planning.estimate import Estimator as _Estimator
    from peft_magic.planning.requests import Request as _Request
    from peft_magic.planning.subject import subject_of as _subject
    from peft_magic.planning.device import resolve_target

    config = AutoConfig.from_pretrained(materialize("smollm2"))
    subject = _subject(config, "causal-lm")
    target = resolve_target(gpu="L4")
    for method, ck in (("lora", False), ("qlora", True)):
        spec = resolve_method(method)
        req = _Request(method, spec, normalize_settings(spec, {"r": 8}), quantized=spec.needs_quantized)
        short = _Estimator(subject, req, target, ck, None)
        assert short.depths == (1, 2)
        whole = _Estimator(subject, req, target, ck, None)
        whole.depths = (30,)
        whole.sketches = [whole._sketch(30)]
        a, b = short.account(), whole.account()
        assert (a.frozen, a.trainable, sorted(a.trainable_tensors)) == (b.frozen, b.trainable,
                                                                       sorted(b.trainable_tensors))
        for batch, seq in ((1, 64), (3, 200)):
            s, w = short.step(batch, seq), whole.step(batch, seq)
            assert (s.activations, s.grads) == (w.activations, w.grads), (method, batch, seq)


def test_llama2_7b_config_full_vs_qlora_like_published_figures():
    """A Llama-2-7b config (no weights): planned on the meta device, so this process never holds
    its 13 GB of weights; full fine-tuning costs what the published rules say per parameter,
    QLoRA a small fraction of it."""
    from peft_magic.memory import PeakSampler

    with PeakSampler("cpu") as ram:  # exact on Linux (the kernel's high-water mark), however short a spike
        p = pm.plan(LLAMA2_7B, gpu="A100-80GB", batch=1, seq=512)
    p32 = pm.plan(LLAMA2_7B, ["full"], gpu="A100-80GB", dtype="fp32", batch=1, seq=512, limits=False)
    print(p)
    params = p.params
    assert 6.7e9 < params < 6.8e9  # 6,738,415,616 for Llama-2-7b
    assert ram.peak - ram.start < 2 * 2**30, (ram.start, ram.peak)  # vs 13.5 GB of bf16 weights
    full32, full16, qlora, lora = p32["full"].parts, p["full"].parts, p["qlora"].parts, p["lora"].parts
    # HF "Model training anatomy": fp32 AdamW = 4 (weights) + 4 (gradients) + 8 (Adam) bytes / parameter
    assert 16.0 <= (full32.weights + full32.gradients + full32.optimizer) / params < 16.01
    assert 8.0 <= (full16.weights + full16.gradients + full16.optimizer) / params < 8.01
    # QLoRA: 4-bit NF4 base (≈0.5 byte / weight + quantization state), fp32 embeddings and head
    assert 0.5 < qlora.weights / params < 0.7
    assert qlora.total < 10 * 2**30 and p["qlora"].checkpointing
    assert full32.total / qlora.total > 15  # QLoRA paper: 65B from >780 GB to <48 GB (16×)
    assert lora.weights == full16.weights and lora.total < full16.total
    assert p.recommendation.method == "lora" and p.recommendation.batch and p.recommendation.seq
    t4 = pm.plan(LLAMA2_7B, gpu="T4", batch=1, seq=512)
    assert t4["qlora"].fits and not t4["lora"].fits and not t4["full"].fits
    assert t4.recommendation.method == "qlora" and t4.recommendation.batch >= 1
    # with and without gradient checkpointing: every optional row carries the other total
    lora_t4 = t4["lora"]
    assert lora_t4.other is not None and lora_t4.other.activations < lora_t4.parts.activations / 4
    assert lora_t4.other.weights == lora_t4.parts.weights and t4["qlora"].other is None  # QLoRA: always on
    ck = pm.plan(LLAMA2_7B, ["lora", "prefix"], gpu="T4", batch=1, seq=512, checkpointing=True)
    assert ck["lora"].parts.activations == lora_t4.other.activations
    assert ck["lora"].other.activations == lora_t4.parts.activations
    assert "does not work with gradient checkpointing" in ck["prefix"].error  # peft refuses it


def test_named_gpus_and_sizes():
    from peft_magic.planning.gpus import GIB, MIB, gpu_spec

    assert gpu_spec("T4").memory == 15360 * MIB and not gpu_spec("t4").bf16
    assert gpu_spec("A100-80GB").memory == 80 * GIB and gpu_spec("a100 80gb").bf16
    assert gpu_spec("24GB").memory == gpu_spec("24").memory == 24 * GIB
    assert gpu_spec("rtx 4090").name == "RTX-4090"
    with pytest.raises(PeftMagicError, match="unknown GPU 'A1000'.*did you mean"):
        gpu_spec("A1000")
    p = pm.plan("tiny-llama", "lora", gpu="T4", batch=1, seq=16, limits=False)
    assert p.dtype == "float16" and p.target.available == 15360 * MIB  # no bf16 on a T4
    assert pm.plan("tiny-llama", "lora", gpu="L4", limits=False).dtype == "bfloat16"


def test_check_fit_for_the_model_as_it_is(tiny_llama_path):
    """check_fit: the live model's own tensors plus traced activations; one-line message;
    fits=False with a way out when it cannot fit; fits=None (never an exception) otherwise."""
    import torch

    from peft_magic.planning.plan import check_fit
    from peft_magic.planning.trace import measure_step, step_inputs

    model = _attached(tiny_llama_path, "lora", {"r": 8})
    v = check_fit(model, batch=2, seq=32)
    assert v.fits is True and v.available_bytes and "\n" not in v.message
    measured = measure_step(model, step_inputs(model, 2, 32, "CAUSAL_LM", "cpu"))
    assert abs(v.parts.activations - measured.activations) <= 0.15 * measured.activations
    assert v.parts.adapter == sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    same = pm.plan(tiny_llama_path, "lora", batch=2, seq=32, limits=False, r=8)["lora"].parts
    assert v.parts.as_dict() == same.as_dict()  # the live model and its config agree

    huge = check_fit(model, batch=4096, seq=512)
    assert huge.fits is False and huge.estimate_bytes > huge.available_bytes
    assert "try batch=" in huge.message and "gradient checkpointing" in huge.message
    assert "\n" not in huge.message
    with_ck = check_fit(model, batch=4096, seq=512, gradient_checkpointing=True)
    assert with_ck.estimate_bytes < huge.estimate_bytes

    q = _attached(tiny_llama_path, "qlora", {"r": 8})
    vq = check_fit(q, batch=2, seq=32)
    mq = measure_step(q, step_inputs(q, 2, 32, "CAUSAL_LM", "cpu"))
    assert vq.fits and abs(vq.parts.activations - mq.activations) <= 0.15 * mq.activations

    from transformers.training_args import OptimizerNames

    for name in ("adamw_torch_fused", OptimizerNames.ADAMW_BNB, str(OptimizerNames.PAGED_ADAMW)):
        assert check_fit(model, batch=2, seq=32, optim=name).fits is True, name
    unknown = check_fit(model, batch=2, seq=32, optim="galore_adamw")
    assert unknown.fits is None and "unknown optimizer" in unknown.message
    odd = check_fit(torch.nn.Sequential(torch.nn.Linear(4, 4)), batch=1, seq=8)
    assert odd.fits is None and "could not estimate" in odd.message
    assert check_fit(model, batch=0, seq=8).fits is None


def test_measure_compares_and_leaves_the_model_as_it_was(tiny_llama_path):
    import torch

    from peft_magic.planning.measure import measure

    model = _attached(tiny_llama_path, "lora", {"r": 8})
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    m = measure(model, batch=2, seq=32, target_batch=8, target_seq=128)
    assert abs(m.error) <= 0.15 and m.measured.optimizer == m.estimated.optimizer
    assert m.extrapolated is not None and m.extrapolated.activations > m.measured.activations
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert not model.training and torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    assert "measured (live tensor bytes" in m.line()


def test_plan_object_text_html_and_errors():
    p = pm.plan("tiny-llama", batch=2, seq=32, gpu="T4")
    text = repr(p)
    assert "LoRA r=8" in text and "QLoRA" in text and "recommended:" in text and "fits" in text
    html = p._repr_html_()
    assert "memory by part" in html and "available" in html and html.count("<tr>") >= 7
    assert p["lora"].parts.total == p["lora"].total and "lora" in p
    assert set(p.as_dict()["methods"]) >= {"full", "lora", "qlora", "prompt", "prefix"}
    goals = {g: pm.plan("tiny-llama", gpu="T4", goal=g, limits=False).recommendation.method
             for g in ("quality", "memory", "prompts", "reuse")}
    assert goals == {"quality": "lora", "memory": "qlora", "prompts": "prompt", "reuse": "bottleneck"}
    with pytest.raises(PeftMagicError, match="'rr' is not a setting of lora: did you mean 'r'"):
        pm.plan("tiny-llama", "lora", rr=4)
    with pytest.raises(PeftMagicError, match="batch must be a whole number"):
        pm.plan("tiny-llama", batch=0)
    with pytest.raises(PeftMagicError, match="unknown optimizer"):
        pm.plan("tiny-llama", optim="adamx")
    with pytest.raises(PeftMagicError, match="no such folder"):
        pm.plan("./no/such/model")
    with pytest.raises(PeftMagicError, match="unknown goal"):
        pm.plan("tiny-llama", goal="fastest")


def test_houlsby_and_pfeiffer_rows_say_which_they_are():
    """Two bottleneck placements are two different plans; their rows must not read the same."""
    p = pm.plan("tiny-llama", ["houlsby", "pfeiffer"], batch=1, seq=16, limits=False)
    h, f = p["houlsby"], p["pfeiffer"]
    assert h.label.startswith("Houlsby bottleneck adapters") and f.label.startswith("Pfeiffer bottleneck adapters")
    assert h.trainable > f.trainable  # Houlsby adds the adapters after attention too
    assert pm.plan("tiny-llama", "houlsby", bottleneck_size=16, batch=1, seq=16,
                   limits=False)["houlsby"].label.startswith("Houlsby bottleneck adapters (size 16)")
