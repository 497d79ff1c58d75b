"""%peft train through a real kernel: methods learn, data shapes, AdaLoRA, prompt loss, OOM."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.kernel

DATA = (
    "texts = ['The quick brown fox jumps over the lazy dog.'] * 12 + "
    "['I love reading books about science and history.'] * 12 + "
    "['Good morning! How are you? I am fine, thank you.'] * 8\n"
)
EVAL_LOSS = (
    "def _eval_loss(m, tok, texts):\n"
    "    import torch\n"
    "    was = m.training; m.eval()\n"
    "    with torch.no_grad():\n"
    "        enc = tok(sorted(set(texts)), return_tensors='pt', padding=True)\n"
    "        labels = enc['input_ids'].masked_fill(enc['attention_mask'] == 0, -100)\n"
    "        out = m(**enc, labels=labels).loss.item()\n"
    "    m.train(was)\n"
    "    return out\n"
)


# A random tiny model learns slowly at LoRA's default 2e-4; the defaults are for real models.
@pytest.mark.parametrize("method,load,attach,lr", [
    ("lora", "%peft load tiny-llama", "%peft lora r=8 target=all-linear", "lr=5e-3"),
    ("prefix", "%peft load tiny-llama", "%peft prefix tokens=8", ""),
    ("prompt", "%peft load tiny-llama", "%peft prompt tokens=8", ""),
    ("qlora", "%peft load tiny-llama --4bit", "%peft qlora r=8 target=all-linear", "lr=5e-3"),
])
def test_training_lowers_the_loss(kernel, method, load, attach, lr, tmp_path):
    steps = 40
    kernel.ok(load)
    kernel.ok(attach)
    kernel.ok(DATA + EVAL_LOSS + "_before = _eval_loss(model, tokenizer, texts)")
    res = kernel.ok(f"run = %peft train data=texts steps={steps} batch=8 {lr}")
    assert kernel.eval("repr(run)").startswith("Run "), res.text
    assert f"completed {steps}/{steps} steps" in kernel.eval("repr(run)")
    before, after = kernel.eval("_before"), kernel.eval("_eval_loss(model, tokenizer, texts)")
    assert after < before - 0.05, (method, before, after)
    losses = kernel.eval("[l for _, l in run.losses]")
    assert losses[-1] < losses[0]
    # one output: the live widget while it ran; the finished run's static HTML alone after it
    # (a widget view would win over the HTML in nbconvert / VS Code and draw nothing offline)
    outputs = res.outputs
    bundles = [o for o in outputs if o.get("output_type") == "display_data" and "text/html" in o.get("data", {})]
    assert len(bundles) == 1, outputs
    assert "application/vnd.jupyter.widget-view+json" not in bundles[0]["data"]
    static = bundles[0]["data"]["text/html"]
    assert f"{steps}/{steps}" in static and "completed" in static and "<svg" in static
    # the saved notebook keeps the widgets' final state too: the bar ran to the end
    path = kernel.save(tmp_path / "trained.ipynb")
    nb = json.loads(path.read_text())
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    boxes = [s["state"] for s in state.values() if s["model_name"] == "VBoxModel"]
    bars = [state[c.replace("IPY_MODEL_", "")]["state"] for box in boxes for c in _walk(state, box)
            if state[c.replace("IPY_MODEL_", "")]["model_name"] == "IntProgressModel"]
    assert any(b["value"] == b["max"] == steps and b["bar_style"] == "success" for b in bars), bars


def _walk(state, box_state):
    """Every widget id reachable from a container's children."""
    out = []
    for child in box_state.get("children", []):
        out.append(child)
        out += _walk(state, state[child.replace("IPY_MODEL_", "")]["state"])
    return out


def test_every_data_shape_trains(kernel, tmp_path):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    files = {
        "jsonl": "\n".join(json.dumps({"text": f"line {i} of the file"}) for i in range(12)),
        "json": json.dumps([{"prompt": f"Q{i}?", "completion": f"A{i}."} for i in range(12)]),
        "csv": "text\n" + "\n".join(f"csv row {i}" for i in range(12)),
        "txt": "\n".join(f"plain text line {i}" for i in range(12)),
    }
    for ext, content in files.items():
        (tmp_path / f"d.{ext}").write_text(content)
    kernel.ok(
        "import pandas as pd, datasets\n"
        "d_str = [f'string example {i}' for i in range(12)]\n"
        "d_dicts = [{'text': f'dict example {i}'} for i in range(12)]\n"
        "d_pc = [{'prompt': f'What is {i}+{i}?', 'completion': f'{2*i}'} for i in range(12)]\n"
        "d_chat = [{'messages': [{'role': 'user', 'content': f'hi {i}'}, "
        "{'role': 'assistant', 'content': f'hello {i}'}]} for i in range(12)]\n"
        "d_df = pd.DataFrame({'text': [f'frame row {i}' for i in range(12)]})\n"
        "d_ds = datasets.Dataset.from_dict({'text': [f'dataset row {i}' for i in range(12)]})\n"
        "d_dd = datasets.DatasetDict({'train': d_ds})\n"
    )
    for var in ("d_str", "d_dicts", "d_pc", "d_chat", "d_df", "d_ds", "d_dd"):
        res = kernel.ok(f"%peft train data={var} steps=2 batch=4 --display text")
        assert "completed 2/2 steps" in res.text, (var, res.text)
    for ext in files:
        res = kernel.ok(f"%peft train data={tmp_path / ('d.' + ext)} steps=2 batch=4 --display text")
        assert "completed 2/2 steps" in res.text, (ext, res.text)
    # cell form with eval split
    res = kernel.ok("%%peft train\ndata: d_str\nsteps: 5\nbatch: 4\neval: 0.25\n")
    assert "completed 5/5 steps" in res.text
    assert kernel.eval("len(__import__('peft_magic').runs()[-1].eval_losses) > 0")
    # malformed: one line naming the columns
    kernel.ok("bad = [{'foo': 1, 'bar': 2}] * 4")
    assert "columns ['foo', 'bar']" in kernel.run("%peft train data=bad steps=2").one_line_error()
    res = kernel.run("%peft train data=nothing_here steps=2")
    assert "no variable 'nothing_here'" in res.error_text
    res = kernel.run("%peft train data=d_str stepz=2")
    assert "unknown training setting 'stepz': did you mean 'steps'?" in res.error_text


def test_classification_trains(kernel):
    kernel.ok("%peft load tiny-bert --labels 2")
    kernel.ok("%peft lora r=8 target=query,value")
    kernel.ok("cls = [{'text': 'great wonderful movie', 'label': 1}, {'text': 'terrible boring film', 'label': 0}] * 16")
    res = kernel.ok("run = %peft train data=cls steps=30 lr=2e-2 batch=8 --display text")
    assert "completed 30/30" in kernel.eval("repr(run)") and "completed 30/30" in res.text
    losses = kernel.eval("[l for _, l in run.losses]")
    assert min(losses[-5:]) < 0.5 * losses[0]
    kernel.ok("import torch\nmodel.eval()\n"
              "enc = tokenizer(['great wonderful movie', 'terrible boring film'], return_tensors='pt', padding=True)\n"
              "with torch.no_grad():\n    _pred = model(**enc).logits.argmax(-1).tolist()")
    assert kernel.eval("_pred") == [1, 0]  # the classifier learned the two labels


def test_adalora_reallocates_ranks(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft adalora init_r=8 target_r=2")
    assert kernel.eval("model.peft_config['default'].rank_pattern") is None
    kernel.ok(DATA)
    kernel.ok("%peft train data=texts steps=20 lr=1e-2 --display text")
    assert kernel.eval("model.peft_config['default'].total_step") == 20
    ranks = kernel.eval("{k: sum(v) for k, v in model.peft_config['default'].rank_pattern.items()}")
    assert ranks and all(r <= 8 for r in ranks.values()) and min(ranks.values()) < 8


def test_prompt_tuning_loss_matches_hand_computation(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft prompt tokens=8")
    kernel.ok(
        "import torch\n"
        "text = 'The quick brown fox jumps over the lazy dog.'\n"
        "ids = tokenizer(text)['input_ids'] + [tokenizer.eos_token_id]\n"
        "x = torch.tensor([ids] * 8)\n"
        "with torch.no_grad():\n"
        "    logits = model(input_ids=x).logits\n"
        "v, n = 8, x.shape[1]\n"
        "pred = logits[:, v - 1: v + n - 1, :]  # the last virtual token predicts the first real one\n"
        "hand = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), x.reshape(-1)).item()\n"
    )
    kernel.ok("_eight = [text] * 8")
    kernel.ok("run = %peft train data=_eight steps=1 batch=8 lr=1e-9 --display text")
    hand, logged, n = kernel.eval("hand"), kernel.eval("run.losses[0][1]"), kernel.eval("n")
    assert abs(logged - hand) < 1e-4, (logged, hand)
    # plain Trainer's count (labels after the first position) would report hand * n / (n - 1)
    assert abs(hand * n / (n - 1) - hand) > 1e-2


def test_oom_is_caught_and_model_stays_usable(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(DATA)
    kernel.ok(
        "import torch\n"
        "_calls = {'n': 0}\n"
        "def _boom(module, args):\n"
        "    _calls['n'] += 1\n"
        "    if _calls['n'] == 4:\n"
        "        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')\n"
        "_h = model.base_model.model.model.layers[0].register_forward_pre_hook(_boom)\n"
    )
    res = kernel.run("%peft train data=texts steps=10 batch=4 --display text")
    assert res.error is not None and res.error["ename"] == "UsageError"
    msg = res.error_text
    assert "out of memory at step 3/10" in msg
    for tip in ("batch=2", "max_len", "gradient_checkpointing=True", "4-bit"):
        assert tip in msg, tip
    kernel.ok("_h.remove()")
    assert kernel.eval("__import__('peft_magic').runs()[-1].status") == "oom"
    # no trainer left alive, the model still runs forward and backward
    kernel.ok("import gc, transformers; gc.collect()\n"
              "assert not [o for o in gc.get_objects() if isinstance(o, transformers.Trainer)]")
    kernel.ok("x = torch.randint(5, 400, (2, 8)); out = model(input_ids=x, labels=x); out.loss.backward()")
    res = kernel.ok("%peft train data=texts steps=3 batch=4 --display text")
    assert "completed 3/3" in res.text


def test_runs_lists_every_run_with_curves(kernel):
    before = kernel.eval("len(__import__('peft_magic').runs())")
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft ia3")
    kernel.ok(DATA)
    kernel.ok("%peft train data=texts steps=4 --display text")
    res = kernel.ok("%peft runs")
    assert kernel.eval("len(__import__('peft_magic').runs())") == before + 1
    last = res.text.strip().splitlines()[-1]
    assert "ia3 'default'" in last and "4/4" in last and "completed" in last and "RAM" in last
    assert "<svg" in res.html and "<table" in res.html


def test_watch_reports_peak_and_change(kernel):
    kernel.ok("import torch; torch.ones(8) + 1")  # torch's own libraries load before the watch
    res = kernel.ok("%%peft watch\n_big = torch.ones(64_000_000)  # 256 MB\ndel _big\n'done'")
    assert "'done'" in res.text  # the cell's last value comes back, like %%time
    line = [ln for ln in res.text.splitlines() if ln.startswith("memory (process RAM)")][0]
    import re

    peak_over = re.search(r"\(\+([\d.]+) (MB|GB) over the start\)", line)
    assert peak_over, line
    grew = float(peak_over.group(1)) * (1024 if peak_over.group(2) == "GB" else 1)
    assert grew >= 200, line  # the 256 MB tensor was seen at its peak
    change = re.search(r"change ([+−])([\d.]+) (KB|MB|B)", line)
    assert change and not (change.group(3) == "MB" and float(change.group(2)) > 50), line
    res = kernel.run("%%peft watch\nraise ValueError('boom')")
    assert res.error is not None and res.error["ename"] == "ValueError"  # user errors stay user errors
