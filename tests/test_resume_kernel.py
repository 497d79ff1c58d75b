"""Training that survives the kernel: autosave, a SIGKILL, a new kernel, ``--resume``.

Real kernels throughout. A reference kernel trains 12 steps uninterrupted. A second kernel
runs the same cells and is killed with SIGKILL in the middle of the run (after two
checkpoints, between two others); a third re-runs the setup cells and adds ``--resume``:
every loss after the resume equals the reference's at the same step, the chart's record has
the whole curve, and the final adapter equals the reference's. The same with the kill landing
inside a checkpoint write (the half-written checkpoint is ignored). Resuming with other data,
other adapter settings, another base model or no checkpoint is refused in one line, and
nothing changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kernel import Kernel
from nbclient.exceptions import DeadKernelError

from conftest import FINGERPRINT

pytestmark = pytest.mark.kernel

ROWS = "rows = [{'prompt': f'Q{i} what?', 'completion': f' A{i} answer {i * 7}'} for i in range(32)]"
SETUP = ["%load_ext peft_magic", "%peft load tiny-llama", "import torch; torch.manual_seed(0)\n%peft lora r=4", ROWS]
TRAIN = "%peft train data=rows steps=12 batch=4 save_every=3 --display none"  # into checkpoints/ (the default)
RUNS = "__import__('peft_magic.state').state.runs()"

#: SIGKILL the kernel when the Trainer starts its 8th step (after checkpoints 3 and 6)
KILL_AT_STEP_8 = """
import os, transformers
_orig = transformers.Trainer.training_step
_n = [0]
def _step(self, *a, **k):
    _n[0] += 1
    if _n[0] == 8:
        os.kill(os.getpid(), 9)
    return _orig(self, *a, **k)
transformers.Trainer.training_step = _step
"""

#: SIGKILL the kernel inside the write of checkpoint 9: the Trainer's files are there, the marker is not
KILL_IN_WRITE_9 = """
import os
from peft_magic.training import checkpoints as _ck
_orig_write = _ck._write_json
def _write(path, data):
    if path.parent.name == 'checkpoint-9':
        os.kill(os.getpid(), 9)
    return _orig_write(path, data)
_ck._write_json = _write
"""


def _kernel(cwd: Path) -> Kernel:
    k = Kernel(cwd=cwd)
    for cell in SETUP:
        k.ok(cell)
    return k


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _losses(k: Kernel) -> dict[int, float]:
    return {int(s): float(v) for s, v in k.eval(f"{RUNS}[-1].losses")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its loss at every step and its final adapter."""
    cwd = tmp_path_factory.mktemp("reference")
    k = _kernel(cwd)
    try:
        k.ok(TRAIN)
        k.ok("%peft save final")
        return _losses(k), _adapter(cwd / "final")
    finally:
        k.shutdown()


def _crash(cwd: Path, fault: str) -> None:
    k = _kernel(cwd)
    try:
        k.ok(fault)
        with pytest.raises(DeadKernelError):
            k.run(TRAIN)
    finally:
        k.shutdown()


def _resume_and_compare(cwd: Path, reference, resumed_from: int) -> Kernel:
    losses, weights = reference
    k = _kernel(cwd)
    res = k.ok(TRAIN + " --resume")
    assert res.stderr == ""
    run = k.eval(f"{{'status': {RUNS}[-1].status, 'steps': {RUNS}[-1].steps_done, "
                 f"'saved': {RUNS}[-1].saved_step}}")
    assert run == {"status": "completed", "steps": 12, "saved": 12}
    got = _losses(k)
    assert sorted(got) == list(range(1, 13))  # the whole curve: steps before the crash come from the record
    after = [s for s in got if s > resumed_from]
    assert after and all(abs(got[s] - losses[s]) <= 1e-5 for s in after), (got, losses)
    k.ok("%peft save final")
    mine = _adapter(cwd / "final")
    assert set(mine) == set(weights)
    assert max(float((mine[n] - weights[n]).abs().max()) for n in mine) <= 1e-6
    return k


def test_a_killed_kernel_resumes_exactly_in_a_new_kernel(tmp_path, reference):
    _crash(tmp_path, KILL_AT_STEP_8)
    run_dir = next((tmp_path / "checkpoints").iterdir())
    done = sorted(p.name for p in run_dir.iterdir() if (p / "peft_magic_checkpoint.json").is_file())
    assert done == ["checkpoint-3", "checkpoint-6"]  # keep=2: both; the kill came before the 9th
    marker = json.loads((run_dir / "checkpoint-6" / "peft_magic_checkpoint.json").read_text())
    assert marker["run"]["status"] == "stopped" and len(marker["run"]["losses"]) == 6
    k = _resume_and_compare(tmp_path, reference, resumed_from=6)
    try:
        # the run folder goes on: the last two checkpoints are kept, the run is complete on disk too
        kept = sorted(p.name for p in run_dir.iterdir() if (p / "peft_magic_checkpoint.json").is_file())
        assert kept == ["checkpoint-12", "checkpoint-9"]
    finally:
        k.shutdown()


def test_a_kill_inside_a_checkpoint_write_resumes_from_the_one_before(tmp_path, reference):
    _crash(tmp_path, KILL_IN_WRITE_9)
    run_dir = next((tmp_path / "checkpoints").iterdir())
    assert (run_dir / "checkpoint-9").is_dir()  # half written: the Trainer's files, no marker
    assert not (run_dir / "checkpoint-9" / "peft_magic_checkpoint.json").exists()
    k = _resume_and_compare(tmp_path, reference, resumed_from=6)
    k.shutdown()


def test_runs_lists_a_dead_kernels_run_and_resume_refuses_what_is_not_that_run(tmp_path):
    _crash(tmp_path, KILL_AT_STEP_8)
    k = _kernel(tmp_path)
    try:
        listed = k.ok("%peft runs").text
        assert "checkpoints on disk" in listed and "step 6/12" in listed and "--resume" in listed
        k.ok("%peft load tiny-gpt2 --as other\n%peft lora r=4 --model other\n%peft load tiny-llama --as wide\n"
             "torch.manual_seed(0)\n%peft lora r=8 --model wide")
        k.ok(FINGERPRINT + f"_before = (_fp(model), _fp(wide), len({RUNS}))")
        files = sorted(str(p) for p in (tmp_path / "checkpoints").rglob("*"))
        cases = [
            ("data=rows[:-1]", "", "cannot resume: the data differs from the checkpoint's"),
            ("data=rows", "--model wide", "cannot resume: lora's settings differ (r: 4 → 8"),
            ("data=rows", "--model other",
             "cannot resume: the base model differs from the one the checkpoint trained"),
            ("data=rows save_to=nowhere", "", "no checkpoint of adapter 'default' to resume in nowhere"),
        ]
        for data, flags, expected in cases:
            res = k.run(f"%peft train {data} steps=12 batch=4 save_every=3 --display none --resume {flags}")
            assert res.error is not None and res.error["ename"] == "UsageError", (data, flags)
            assert res.error["evalue"].startswith(expected), res.error["evalue"]
            assert "\n" not in res.error["evalue"]
        assert k.eval(f"(_fp(model), _fp(wide), len({RUNS})) == _before")  # nothing changed
        assert sorted(str(p) for p in (tmp_path / "checkpoints").rglob("*")) == files
        res = k.run("%peft train data=rows steps=12 batch=4 save_every=3 --display none "
                    "--resume --model other --adapter nope")
        assert res.error["evalue"].startswith("no adapter 'nope' on this model")
        # a run's display says when its last checkpoint was written
        res = k.ok("%peft train data=rows steps=3 batch=4 save_to=more --display text")
        assert "saved step 3 · just now" in res.stdout.replace("\r", "\n"), res.stdout
    finally:
        k.shutdown()
