"""The adapter lifecycle engine on real tiny models: save (atomic, with a card), load (safe,
checked against the model), switch, off / on, delete, merge (incl. 4-bit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import peft_magic as pm
from peft_magic import state
from peft_magic.errors import PeftMagicError

ROOT = Path(__file__).resolve().parents[1]


def _perturb(model, scale: float = 0.3, seed: int = 0, only: str | None = None) -> None:
    """Give every trainable adapter tensor non-trivial values (LoRA's B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and (only is None or only in n.split(".")):
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


IDS = torch.tensor([[5, 17, 99, 230, 41, 8, 77, 300, 12, 64]])


def _fingerprint(model) -> tuple:
    return (type(model).__name__, sorted(getattr(model, "peft_config", {}) or {}),
            tuple((n, tuple(p.shape), p.requires_grad, round(float(p.detach().double().sum()), 6))
                  for n, p in model.named_parameters()))


def test_save_writes_peft_files_and_a_card_and_never_silently_overwrites(tmp_path):
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=4, alpha=8, name="jokes").model
    _perturb(model)
    st = state.state_for(model)
    run = state.Run(run_id=9001, model_id=st.model_id, adapter="jokes", method="lora",
                    settings={"steps": 4, "lr": 1e-3}, total_steps=4, status="completed", steps_done=4,
                    losses=[(1, 3.2), (2, 2.9), (3, 2.5), (4, 2.1)], final_loss=2.1, peak_memory=123 * 2**20,
                    memory_kind="RAM", seconds=12.5)
    other = state.Run(run_id=9002, model_id="m-someone-else", adapter="jokes", method="lora", settings={},
                      total_steps=1)
    state.add_run(run)
    state.add_run(other)
    target = tmp_path / "adapters" / "jokes"
    res = pm.save(model, target)
    assert res.action == "saved" and str(target) in repr(res)
    names = sorted(p.name for p in target.iterdir())
    assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors", "loss_curve.svg"]
    cfg = json.loads((target / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["base_model_name_or_path"] == "peft_magic/tiny-llama"
    card = (target / "README.md").read_text()
    assert "base_model: peft_magic/tiny-llama" in card and "lora" in card
    assert "base_model_class: LlamaForCausalLM" in card and "base_model_type: llama" in card
    assert "| `lora_alpha` | `8` |" in card and "| `r` | `4` |" in card
    assert "| 9001 | completed | 4/4 | 2.1000 | 12.5 s | 123.0 MB RAM |" in card
    assert "9002" not in card  # another model's run
    assert "1: 3.2000" in card and "4: 2.1000" in card  # the loss curve as text
    svg = (target / "loss_curve.svg").read_text()
    assert svg.startswith("<svg") and "polyline" in svg
    assert str(target) in run.saved_to and not other.saved_to
    # no stray temporary folders beside it
    assert [p.name for p in target.parent.iterdir()] == ["jokes"]

    before = (target / "adapter_model.safetensors").read_bytes()
    _perturb(model, seed=5)
    with pytest.raises(PeftMagicError, match="already exists — pass --force"):
        pm.save(model, target)
    assert (target / "adapter_model.safetensors").read_bytes() == before
    pm.save(model, target, force=True)
    assert (target / "adapter_model.safetensors").read_bytes() != before
    assert [p.name for p in target.parent.iterdir()] == ["jokes"]
    # --force replaces adapters, not any folder that happens to be there
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(PeftMagicError, match="not an adapter or model folder"):
        pm.save(model, tmp_path / "notes", force=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    # a non-default adapter name still saves flat (peft would nest it in a sub-folder)
    pm.save(model, tmp_path / "flat", name="jokes")
    assert (tmp_path / "flat" / "adapter_config.json").exists() and not (tmp_path / "flat" / "jokes").exists()


_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    import torch, transformers
    import peft_magic as pm
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = pm.attach(transformers.LlamaForCausalLM(cfg), "lora", r=128, target="all-linear").model
    params = [p for p in model.parameters() if p.requires_grad]
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        with torch.no_grad():
            for p in params:
                p.fill_(float(i))
        pm.save(model, sys.argv[1], force=True)
""")


def _big_lora():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    return transformers.LlamaForCausalLM(cfg)


def test_a_save_killed_mid_write_leaves_the_previous_adapter_intact_and_loadable(tmp_path):
    from safetensors.torch import load_file

    target = tmp_path / "ad"
    model = pm.attach(_big_lora(), "lora", r=128, target="all-linear").model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.fill_(0.5)
    pm.save(model, target)
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(root=str(ROOT)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed_mid_write = False
    for _attempt in range(3):
        child = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, env=env,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # let a few saves complete
            deadline = time.time() + 60
            while time.time() < deadline:
                if any(tmp_path.glob(".ad.peft-tmp-*")):
                    os.kill(child.pid, signal.SIGKILL)  # mid-save: its temporary folder exists
                    break
                time.sleep(0.0005)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        leftovers = list(tmp_path.glob(".ad.peft-tmp-*"))
        # whatever moment the kill hit, the target is one complete adapter: every tensor the same version
        assert sorted(p.name for p in target.iterdir()) == ["README.md", "adapter_config.json",
                                                            "adapter_model.safetensors"]
        json.loads((target / "adapter_config.json").read_text())
        tensors = load_file(str(target / "adapter_model.safetensors"))
        values = {float(t.flatten()[0]) for t in tensors.values()}
        assert len(values) == 1 and all(bool((t == t.flatten()[0]).all()) for t in tensors.values())
        version = values.pop()
        fresh = pm.load_adapter(_big_lora(), target)
        loaded = [p for n, p in fresh.model.named_parameters() if "lora_" in n]
        assert loaded and all(bool((p == version).all()) for p in loaded)
        if leftovers:
            killed_mid_write = True
            break
    assert killed_mid_write, "the kill never landed while a save was in progress"
    # the next save tidies what the killed process left behind
    pm.save(model, target, force=True)
    assert not list(tmp_path.glob(".ad.peft-tmp-*"))
    assert load_file(str(target / "adapter_model.safetensors"))


def test_pickle_adapter_refused_unless_allowed(tmp_path):
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=4).model
    _perturb(model)
    want = _logits(model, IDS)
    model.save_pretrained(str(tmp_path / "pickled"), safe_serialization=False, save_embedding_layers=False)
    assert (tmp_path / "pickled" / "adapter_model.bin").exists()
    fresh = pm.load("tiny-llama").model
    fp = _fingerprint(fresh)
    with pytest.raises(PeftMagicError, match=r"pickle-based adapter_model\.bin.*refused — .*--allow-pickle"):
        pm.load_adapter(fresh, tmp_path / "pickled")
    assert _fingerprint(fresh) == fp and state.peft_model_for(fresh) is None
    res = pm.load_adapter(fresh, tmp_path / "pickled", allow_pickle=True)
    assert "pickle" in repr(res)
    assert torch.equal(_logits(res.model, IDS), want)
    assert not any(p.requires_grad for p in res.model.parameters())  # frozen unless asked
    again = pm.load_adapter(pm.load("tiny-llama").model, tmp_path / "pickled", allow_pickle=True, trainable=True)
    grads = [n for n, p in again.model.named_parameters() if p.requires_grad]
    assert grads and all("lora_" in n for n in grads)
    assert "trainable" in repr(again) and state.state_for(again.model).adapters["default"].method == "lora"


def test_adapter_for_another_model_is_refused_naming_both(tmp_path):
    import transformers

    gpt2 = pm.load("tiny-gpt2").model
    pm.save(pm.attach(gpt2, "lora", r=4).model, tmp_path / "gpt2-lora")
    llama = pm.load("tiny-llama").model
    fp = _fingerprint(llama)
    with pytest.raises(PeftMagicError) as err:
        pm.load_adapter(llama, tmp_path / "gpt2-lora")
    msg = str(err.value)
    assert "made for peft_magic/tiny-gpt2" in msg and "peft_magic/tiny-llama (LlamaForCausalLM)" in msg
    assert "\n" not in msg
    assert _fingerprint(llama) == fp and state.peft_model_for(llama) is None

    # tensors of the right shapes are not enough: a prompt for tiny-llama (width 64) on tiny-gpt2 (width 64)
    pm.save(pm.attach(pm.load("tiny-llama").model, "prompt", tokens=4).model, tmp_path / "llama-prompt")
    with pytest.raises(PeftMagicError, match=r"made for peft_magic/tiny-llama .* it was trained on a llama "
                                             r"model and this is a gpt2 model"):
        pm.load_adapter(pm.load("tiny-gpt2").model, tmp_path / "llama-prompt")

    # same architecture, other sizes: a shape mismatch, not a silent partial load
    pm.save(pm.attach(llama, "lora", r=4).model, tmp_path / "llama-lora")
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    small = transformers.LlamaForCausalLM(cfg)
    small.name_or_path = "my/small-llama"
    with pytest.raises(PeftMagicError, match=r"made for peft_magic/tiny-llama and does not fit this model, "
                                             r"my/small-llama \(LlamaForCausalLM\): .* is \[4, 64\] in the file "
                                             r"but \[4, 32\] here"):
        pm.load_adapter(small, tmp_path / "llama-lora")
    # not an adapter folder at all
    with pytest.raises(PeftMagicError, match="no such folder"):
        pm.load_adapter(small, tmp_path / "nothing-here")


def test_switch_off_on_delete_and_merge_logits(tmp_path):
    base_logits = _logits(pm.load("tiny-llama").model, IDS)
    loaded = pm.load("tiny-llama")
    events = []
    unsubscribe = pm.subscribe(lambda e: events.append(e.data.get("action")) if e.kind == "adapter" else None)
    try:
        model = pm.attach(loaded.model, "lora", r=4, name="a").model
        model = pm.attach(model, "lora", r=4, name="b").model
        _perturb(model, seed=1, only="a")
        _perturb(model, seed=2, only="b")
        pm.use_adapter(model, "a")
        la = _logits(model, IDS)
        pm.use_adapter(model, "b")
        lb = _logits(model, IDS)
        assert not torch.allclose(la, lb, atol=1e-3)  # switching changes outputs
        assert not torch.allclose(lb, base_logits, atol=1e-3)
        table = pm.adapters(model)
        assert [(r.name, r.active) for r in table.rows] == [("a", False), ("b", True)]
        assert "b" in repr(table) and "<table>" in table._repr_html_()

        res = pm.adapters_off(model)
        assert "off" in repr(res)
        assert torch.equal(_logits(model, IDS), base_logits)  # exactly the base model
        assert "switched off" in repr(pm.adapters(model))
        assert "already off" in repr(pm.adapters_off(model))
        pm.adapters_on(model)
        assert torch.equal(_logits(model, IDS), lb)

        with pytest.raises(PeftMagicError, match="no adapter 'c' on this model"):
            pm.use_adapter(model, "c")
        res = pm.delete_adapter(model, "a")
        assert list(model.peft_config) == ["b"] and res.model is model
        assert torch.equal(_logits(model, IDS), lb)

        merged = pm.merge(model)
        assert type(merged.model).__name__ == "LlamaForCausalLM"
        assert torch.allclose(_logits(merged.model, IDS), lb, atol=1e-5)  # same as unmerged
        rows = pm.adapters(merged.model).rows
        assert [(r.name, r.merged) for r in rows] == [("b", True)]
        with pytest.raises(PeftMagicError, match="no adapters to merge"):
            pm.merge(merged.model)
        with pytest.raises(PeftMagicError, match="save it with --merged"):
            pm.save(merged.model, tmp_path / "after-merge")
        pm.save(merged.model, tmp_path / "after-merge", merged=True)
        from transformers import AutoModelForCausalLM

        again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "after-merge"))
        assert torch.allclose(_logits(again, IDS), lb, atol=1e-5)
        assert "merged" in (tmp_path / "after-merge" / "README.md").read_text()
    finally:
        unsubscribe()
    for action in ("activated", "off", "on", "deleted", "merged"):
        assert action in events


def test_deleting_the_last_adapter_gives_back_the_base_model():
    base_logits = _logits(pm.load("tiny-llama").model, IDS)
    model = pm.attach(pm.load("tiny-llama").model, "ia3").model
    _perturb(model)
    res = pm.delete_adapter(model, "default")
    assert type(res.model).__name__ == "LlamaForCausalLM"
    assert torch.equal(_logits(res.model, IDS), base_logits)
    assert not state.state_for(res.model).adapters


def test_methods_that_cannot_merge_are_refused_before_anything_changes(tmp_path):
    model = pm.attach(pm.load("tiny-llama").model, "prefix", tokens=4).model
    _perturb(model)
    fp = _fingerprint(model)
    want = _logits(model, IDS)
    with pytest.raises(PeftMagicError, match="prefix adapters cannot be merged into the weights"):
        pm.merge(model)
    with pytest.raises(PeftMagicError, match="cannot be merged.*nothing was written"):
        pm.save(model, tmp_path / "m", merged=True)
    assert not (tmp_path / "m").exists()
    assert _fingerprint(model) == fp and torch.equal(_logits(model, IDS), want)


def test_save_merged_writes_a_plain_model_and_leaves_the_live_one_exactly_as_it_was(tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "dora", r=4).model
    _perturb(model)
    want = _logits(model, IDS)
    fp = _fingerprint(model)
    pm.save(model, tmp_path / "merged", merged=True, tokenizer=loaded.tokenizer)
    assert _fingerprint(model) == fp and torch.equal(_logits(model, IDS), want)
    assert (tmp_path / "merged" / "model.safetensors").exists()
    assert (tmp_path / "merged" / "tokenizer.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert torch.allclose(_logits(plain, IDS), want, atol=1e-4)


def test_merge_on_a_4bit_base_asks_first_and_dequantize_merges_without_rounding():
    loaded = pm.load("tiny-llama", bits=4)
    model = pm.attach(loaded.model, "qlora", r=8, target="all-linear").model
    _perturb(model, scale=0.5)
    want = _logits(model, IDS)
    fp = _fingerprint(model)
    with pytest.raises(PeftMagicError) as err:
        pm.merge(model)
    msg = str(err.value)
    assert "4-bit base rounds the merged weights" in msg and "--dequantize" in msg and "needs about" in msg
    assert "host memory" in msg and "nothing was changed" in msg
    assert _fingerprint(model) == fp
    res = pm.merge(model, dequantize=True)
    merged = res.model
    assert type(merged.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert not pm.show(merged).quantization
    got = _logits(merged, IDS)
    assert torch.allclose(got, want, atol=2e-2), (got - want).abs().max()
    assert any("dequantized" in n for n in res.notes)


def test_a_dropped_wrapper_is_found_again_so_a_second_adapter_joins_the_first():
    """peft injects its layers into the base in place: after ``pm.attach(base, …)`` with
    the result ignored, the next attach must add to the same wrapper (both adapters listed,
    the new one's head the trainable one), not wrap the injected layers a second time."""
    import gc

    loaded = pm.load("tiny-bert", task="seq-cls", labels="neg,pos")
    base = loaded.model
    pm.attach(base, "lora", r=4)  # result dropped
    gc.collect()
    model = pm.attach(base, "lora", r=4, name="second").model
    assert set(model.peft_config) == {"default", "second"} and model.active_adapter == "second"
    heads = {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n}
    assert heads == {"second"}
    shown = repr(pm.show(base))
    assert "[active] second" in shown and "[inactive] default" in shown
