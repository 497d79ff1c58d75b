"""%peft compare: candidates train from the same base for the same budget; the user's model
is left exactly as it was; failures are rows; --keep; the stop button; the task's metrics."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

import peft_magic as pm
from peft_magic.errors import PeftMagicError

TEXTS = [f"the {a} cat sat on the {b}" for a in "red blue green tall small".split() for b in "mat rug bed sofa".split()]


def fingerprint(model) -> str:
    """Every parameter's name, value and trainable flag, the adapters and the active one."""
    h = hashlib.sha256()
    for n, p in model.named_parameters():
        h.update(n.encode())
        h.update(str(p.requires_grad).encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    h.update(str(sorted(getattr(model, "peft_config", {}) or {})).encode())
    h.update(str(getattr(model, "active_adapter", None)).encode())
    h.update(str([type(m).__name__ for m in model.modules()]).encode())
    return h.hexdigest()


def test_compare_leaves_the_model_exactly_as_it_was_and_ranks_the_rows(tiny_llama_path):
    import torch

    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=4).model
    model = pm.attach(model, "lora", r=2, name="second").model
    pm.use_adapter(model, "default")
    with torch.no_grad():  # the user's adapter has trained weights (not the zero init)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    before = fingerprint(model)
    x = torch.tensor([[1, 2, 3, 4, 5]])
    logits = model(input_ids=x).logits.detach().clone()
    n_runs = len(pm.runs())

    res = pm.compare(model, ["lora", "ia3", ("lora", {"r": 16}), "nosuchmethod"], TEXTS,
                     tokenizer=loaded.tokenizer, steps=4, batch=4, display=None)

    assert fingerprint(model) == before and model.active_adapter == "default"
    assert torch.equal(model(input_ids=x).logits, logits)
    assert pm.show(model).active == ["default"] and [a.name for a in pm.adapters(model).rows] == ["default", "second"]
    labels = [r.label for r in res.rows]
    assert set(labels) == {"lora", "ia3", "lora r=16", "nosuchmethod"} and labels[-1] == "nosuchmethod"
    failed = res["nosuchmethod"]
    assert failed.status == "failed" and "unknown PEFT method 'nosuchmethod'" in failed.reason
    done = [r for r in res.rows if r.status == "done"]
    assert len(done) == 3 and all(r.steps == 4 and r.loss is not None and r.trainable for r in done)
    assert [r.loss for r in done] == sorted(r.loss for r in done)  # no eval: sorted by the final loss
    assert res["lora r=16"].trainable == 2 * res["lora"].trainable  # the same base, r 16 vs the default 8
    assert res["ia3"].trainable < res["lora"].trainable
    assert len(pm.runs()) == n_runs + 3  # every candidate is a real, recorded run
    assert res.reading and res.metric == "loss"
    html = res._repr_html_()
    assert "★" in html and "<svg" in html and "unknown PEFT method" in html


def test_compare_with_eval_sorts_by_the_tasks_metric_and_keeps_candidates(tmp_path):
    loaded = pm.load("tiny-llama")
    res = pm.compare(loaded.model, "lora,ia3", TEXTS, tokenizer=loaded.tokenizer, steps=3, batch=4, eval=0.2,
                     keep=True, keep_dir=tmp_path / "kept", display=None)
    assert res.metric == "perplexity" and not res.higher_is_better
    assert all(set(r.metrics) == {"loss", "perplexity"} for r in res.rows)
    assert res.rows[0].metrics["perplexity"] <= res.rows[1].metrics["perplexity"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["ia3", "lora"]
    kept = res.model
    assert kept is not loaded.model  # the best candidate is on the model now, as an adapter named after it
    assert [a.name for a in pm.show(kept).adapters] == [res.rows[0].method]
    # peft keeps one method per model: the other stays in its folder, and the note says where
    saved = [n for n in res.notes if "saved in" in n]
    assert len(saved) == 1 and f"saved in {tmp_path / 'kept' / res.rows[1].method}" in saved[0]


def test_compare_needs_two_methods_and_data():
    loaded = pm.load("tiny-llama")
    with pytest.raises(PeftMagicError, match="at least two methods"):
        pm.compare(loaded.model, ["lora"], TEXTS, tokenizer=loaded.tokenizer, steps=1, display=None)
    with pytest.raises(PeftMagicError, match="twice"):
        pm.compare(loaded.model, ["lora", "lora"], TEXTS, tokenizer=loaded.tokenizer, steps=1, display=None)


@pytest.mark.kernel
def test_compare_magic_line_cell_and_stop_button(kernel, tmp_path):
    flag = tmp_path / "started"
    kernel.ok("%peft load tiny-llama")
    kernel.ok(f"texts = {TEXTS!r}")
    res = kernel.ok("%peft compare lora,ia3 data=texts steps=3 batch=4")
    assert "compare" in res.text and "lora" in res.text and "ia3" in res.text and "<table" in res.html
    res = kernel.ok("%%peft compare data=texts steps=2 batch=4\nlora r=8\nlora r=2  # smaller\n")
    assert "lora r=8" in res.text and "lora r=2" in res.text
    kernel.ok(
        "import time, pathlib, hashlib\n"
        f"_flag = pathlib.Path(r'{flag}')\n"
        "_seen = {'n': 0}\n"
        "def _slow(module, args):\n"
        "    _seen['n'] += 1\n"
        "    time.sleep(0.02)\n"
        "    if _seen['n'] == 60:\n"
        "        _flag.write_text('second candidate running')\n"
        "_h = model.model.layers[0].register_forward_pre_hook(_slow)\n"
        "_fp = lambda m: hashlib.sha256(b''.join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()\n"
        "_before = _fp(model)\n"
    )
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        res=kernel.run("%peft compare lora,ia3,prefix data=texts steps=40 batch=4 lr=default")))
    worker.start()
    deadline = time.time() + 300
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the comparison never reached its second candidate"
    kernel.interrupt()
    worker.join(timeout=300)
    res = result["res"]
    assert res.error is None, res.error_text
    statuses = kernel.eval("[(r.label, r.status) for r in _]")
    assert ["lora", "done"] in statuses and any(s == "stopped" for _, s in statuses)
    assert kernel.eval("_fp(model) == _before") and kernel.eval("type(model).__name__") == "LlamaForCausalLM"
