"""Multi-process training without starting workers: refusals, generated configs, dry run,
the handoff (no pickle) and loading the result back all or nothing, the socket channel,
and the per-GPU numbers of ``%peft plan --gpus N --strategy …``.

The runs themselves (real torchrun + gloo processes) are in test_distributed_kernel.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from peft_magic.errors import PeftMagicError

WORKER = "peft_magic.training.distributed.worker"


@pytest.fixture(scope="module")
def lora():
    """tiny-llama with a LoRA adapter (what %peft load + %peft lora make)."""
    import peft_magic as pm

    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=8, dropout=0.0).model
    return model, loaded.tokenizer


def pm_dtype(model) -> str:
    """The dtype ``%peft load`` picked for this model on this machine, as peft_magic names it."""
    import peft_magic as pm

    return pm.show(model).dtype


def _launched() -> list[psutil.Process]:
    """Workers or launchers started from this test process (another run's on the machine are not ours)."""
    from conftest import started_here

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (WORKER in cmd or ("torch.distributed.run" in cmd and "peft_magic" in cmd)) and started_here(p):
            out.append(p)
    return out


def _dist_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("peft_magic_dist_*")}


# ----------------------------------------------------------------------------- refusals


#: stands for "one GPU more than this machine has" (0 → 1 on a machine without CUDA)
MORE_GPUS_THAN_HERE = "more-gpus-than-here"


def _gpus_here() -> int:
    from peft_magic.training.distributed.strategies import cuda_count

    return cuda_count()


def _expected(expected: str) -> str:
    """The refusal this machine gives: some depend on its GPUs and on whether deepspeed is installed."""
    from peft_magic.training.distributed.strategies import deepspeed_installed

    have = _gpus_here()
    if expected == "no-gpu-or-count":
        return "this machine has no CUDA GPU" if have == 0 else f"this machine has {have} GPU"
    if expected == "deepspeed-missing-or-needs-cuda":
        return "deepspeed is not installed" if not deepspeed_installed() else "--strategy deepspeed needs CUDA GPUs"
    return expected


class _Watched(list):
    """Training rows that count every read: a refusal "before anything starts" reads none."""

    reads = 0

    def __iter__(self):
        self.reads += 1
        return super().__iter__()

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i)

    def __len__(self):
        self.reads += 1
        return super().__len__()


@pytest.fixture
def started(monkeypatch) -> list[list[str]]:
    """The command line of every process started while the test runs (the launch goes
    through ``subprocess.Popen``; this records and then starts it as usual)."""
    import subprocess

    seen: list[list[str]] = []

    class Recording(subprocess.Popen):
        def __init__(self, args, *a, **kw):
            seen.append(list(args) if isinstance(args, (list, tuple)) else [str(args)])
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return seen


@pytest.mark.device
@pytest.mark.parametrize("kwargs,expected", [
    (dict(processes=2, strategy="fsdp"), "--strategy fsdp needs CUDA GPUs"),
    (dict(processes=2, strategy="deepspeed"), "deepspeed-missing-or-needs-cuda"),
    (dict(gpus=MORE_GPUS_THAN_HERE), "no-gpu-or-count"),
    (dict(processes=2, gpus=2), "not both"),
    (dict(strategy="fsdp"), "--strategy is for multi-process training"),
    (dict(processes=2, zero=3), "--zero is DeepSpeed's stage"),
    (dict(processes=0), "≥ 1"),
    (dict(processes="two"), "whole number"),
    (dict(processes=2, strategy="horovod"), "unknown strategy 'horovod'"),
    (dict(processes=2, stall=0), "--stall must be > 0"),
], ids=["fsdp-on-cpu", "deepspeed-on-cpu", "more-gpus", "both", "strategy-alone", "zero-without-deepspeed",
        "zero-processes", "processes-not-a-number", "unknown-strategy", "stall-0"])
def test_what_this_machine_cannot_run_is_refused_before_anything_starts(lora, kwargs, expected, started):
    from peft_magic.state import runs
    from peft_magic.training.run import train

    model, tok = lora
    if kwargs.get("gpus") == MORE_GPUS_THAN_HERE:
        kwargs = {**kwargs, "gpus": _gpus_here() + 1}
    rows = _Watched(["some text to train on"] * 4)
    before_runs, before_dirs = len(runs()), _dist_folders()
    with pytest.raises(PeftMagicError) as e:
        train(model, rows, tokenizer=tok, steps=2, **kwargs)
    assert _expected(expected) in str(e.value)
    assert "\n" not in str(e.value)  # one line
    assert rows.reads == 0 and started == []  # refused before the data was read or a process started
    assert len(runs()) == before_runs and _dist_folders() == before_dirs and _launched() == []


@pytest.mark.device
def test_gpus_all_means_every_gpu_this_machine_has(started):
    """``--gpus all`` is refused on a machine without CUDA; with GPUs it is one process per GPU."""
    from peft_magic.training.distributed.strategies import request

    have = _gpus_here()
    if have == 0:
        with pytest.raises(PeftMagicError, match="--gpus all: this machine has no CUDA GPU"):
            request(gpus="all")
    else:
        spec = request(gpus="all")
        assert (spec.processes, spec.device, spec.gpu_ids) == (have, "cuda", list(range(have)))
    assert started == []


def test_more_gpus_than_exist_and_sharding_4bit_are_refused(monkeypatch):
    """The GPU count comes from torch; here it is set, to check the rules on a CPU machine."""
    from peft_magic.training.distributed import strategies as s

    monkeypatch.setattr(s, "cuda_count", lambda: 2)
    with pytest.raises(PeftMagicError, match="--gpus 4: this machine has 2 GPUs"):
        s.request(gpus=4)
    assert s.request(gpus="all").processes == 2
    with pytest.raises(PeftMagicError, match="4-bit model trains with --strategy ddp"):
        s.request(gpus=2, strategy="fsdp", bits=4)
    assert s.request(gpus=2, bits=4).strategy == "ddp"
    monkeypatch.setattr(s, "deepspeed_installed", lambda: True)
    assert s.request(gpus=2, strategy="deepspeed", zero=3).zero == 3
    with pytest.raises(PeftMagicError, match="deepspeed needs CUDA GPUs"):  # never a silent fall back on CPU
        s.request(processes=2, strategy="deepspeed")


# ----------------------------------------------------------------------------- configs


def test_fsdp_config_is_full_shard_per_transformer_block_and_accepted_by_transformers():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments

    import peft_magic as pm
    from peft_magic.training.distributed.strategies import LaunchSpec, trainer_overrides

    for name, block in (("tiny-llama", "LlamaDecoderLayer"), ("tiny-gpt2", "GPT2Block")):
        loaded = pm.load(name)
        model = pm.attach(loaded.model, "lora", r=4).model
        over = trainer_overrides(LaunchSpec(2, "cuda", "fsdp", gpu_ids=[0, 1]), model)
        assert over["ddp_backend"] == "nccl" and over["fsdp"] is True
        cfg = over["fsdp_config"]
        assert cfg["transformer_layer_cls_to_wrap"] == [block]
        assert cfg["reshard_after_forward"] is True and cfg["state_dict_type"] == "FULL_STATE_DICT"
        json.dumps(cfg)  # data, shown by --dry-run
        over.pop("ddp_backend")
        targs = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", **over)
        plugin = FullyShardedDataParallelPlugin(**targs.fsdp_plugin_args)  # what the Trainer builds from it
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.transformer_cls_names_to_wrap == [block]


def test_deepspeed_zero_configs_as_data():
    from peft_magic.training.distributed.strategies import (
        LaunchSpec,
        deepspeed_config,
        trainer_overrides,
    )

    two, three = deepspeed_config(2), deepspeed_config(3)
    assert two["zero_optimization"]["stage"] == 2 and three["zero_optimization"]["stage"] == 3
    assert three["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # rank 0 can save
    assert not any(k.startswith("stage3") for k in two["zero_optimization"])
    for cfg in (two, three):
        # every size the Trainer knows is "auto", so it comes from the same settings as a one-process run
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                    "gradient_clipping"):
            assert cfg[key] == "auto"
        assert cfg["bf16"] == {"enabled": "auto"} and "optimizer" not in cfg  # the Trainer's own AdamW
        assert json.loads(json.dumps(cfg)) == cfg
    over = trainer_overrides(LaunchSpec(4, "cuda", "deepspeed", zero=3, gpu_ids=[0, 1, 2, 3]), None)
    assert over["deepspeed"] == three and "fsdp" not in over


@pytest.mark.device
def test_dry_run_shows_launch_and_config_and_starts_nothing(lora, started):
    from peft_magic.state import runs
    from peft_magic.training.distributed.dryrun import dry_run
    from peft_magic.training.distributed.strategies import deepspeed_installed

    model, _ = lora
    before_runs, before_dirs = len(runs()), _dist_folders()
    plan = dry_run(model, gpus=4, strategy="fsdp", batch=8, grad_accum=2)
    text = repr(plan)
    assert text.startswith("Dry run (nothing started): 4 GPUs")
    assert "global batch: 8 per process × 4 processes × 2 accumulation = 64" in text
    assert "-m torch.distributed.run --nnodes=1 --nproc-per-node=4 --master-addr=127.0.0.1" in text
    assert f"-m {WORKER} <FOLDER>" in text
    assert '"transformer_layer_cls_to_wrap": [' in text and '"LlamaDecoderLayer"' in text
    have = _gpus_here()
    if have < 4:  # what is wrong with it here is shown, not refused: the dry run is for another machine
        cannot = "--gpus: this machine has no CUDA GPU" if have == 0 else f"--gpus 4: this machine has {have} GPU"
        assert f"this machine cannot run it: {cannot}" in text, text
    else:
        assert "cannot run" not in text
    assert plan.config["reshard_after_forward"] is True
    ds = repr(dry_run(model, gpus=2, strategy="deepspeed", zero=3))
    assert "deepspeed config (ZeRO-3):" in ds and '"stage": 3' in ds
    assert ("deepspeed is not installed" in ds) == (not deepspeed_installed())
    cpu = dry_run(model, processes=2, batch=4)
    assert cpu.problem is None and "cannot run" not in repr(cpu)
    assert cpu.env["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == ""  # CPU workers never touch a GPU
    dtype = pm_dtype(model)
    assert "ddp_backend=gloo" in repr(cpu) and f"tiny-llama ({dtype}), loaded by each worker" in repr(cpu)
    assert started == []
    assert len(runs()) == before_runs and _dist_folders() == before_dirs and _launched() == []


# ----------------------------------------------------------------------------- handoff


def test_examples_round_trip_through_arrow(tmp_path):
    from peft_magic.tasks.data import Examples
    from peft_magic.training.distributed import handoff

    ex = Examples([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}],
                  "completion", 3, None, skipped=1)
    handoff.write_examples(ex, tmp_path / "train")
    back = handoff.read_examples(tmp_path / "train")
    assert back.rows == ex.rows and back.shape == "completion" and back.n_raw == 3
    cls = Examples([{"input_ids": [1, 2], "labels": 1}], "classify", 1, ["neg", "pos"])
    handoff.write_examples(cls, tmp_path / "cls")
    assert handoff.read_examples(tmp_path / "cls").rows == cls.rows
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pkl", ".pickle", ".bin", ".pt")]


def test_a_model_only_in_the_kernel_is_written_once_without_adapter_layers():
    import torch
    import transformers

    import peft_magic as pm
    from peft_magic.training.distributed import handoff

    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    base = transformers.LlamaForCausalLM(cfg)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = pm.attach(base, "lora", r=4, target="all-linear").model
    src, note = handoff.model_source(model, "CAUSAL_LM")
    folder = Path(src["path"])
    assert note.startswith(f"the model exists only in this kernel: written once to {folder} (")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    from safetensors.torch import load_file

    written = load_file(str(folder / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in written)
    again = transformers.LlamaForCausalLM.from_pretrained(str(folder))
    for k, v in again.state_dict().items():
        assert torch.equal(v, before[k]), k
    src2, note2 = handoff.model_source(model, "CAUSAL_LM")  # a second run reuses the copy
    assert src2["path"] == src["path"] and "using the copy written before" in note2


@pytest.mark.device
def test_a_loaded_model_is_not_copied(lora):
    from peft_magic.training.distributed import handoff

    model, _ = lora
    src, note = handoff.model_source(model, "CAUSAL_LM")
    assert note is None and Path(src["path"]).name.startswith("tiny-llama")
    # the dtype the workers load it in is the one it was loaded in here (float32 on CPU, bf16 / fp16 on a GPU)
    assert src["dtype"] == pm_dtype(model) and src["bits"] is None and src["labels"] is None


def test_the_result_is_loaded_back_all_or_nothing(lora, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from peft_magic import peft_view
    from peft_magic.training.distributed import handoff

    model, _ = lora
    before = peft_view.adapter_state(model, "default")
    peft_view.write_adapter(model, "default", tmp_path / "good")
    state = load_file(str(tmp_path / "good" / handoff.ADAPTER_FILE))
    trained = {k: v + 0.5 for k, v in state.items()}
    # a file missing one tensor, and one with a tensor of another shape: refused, model untouched
    (tmp_path / "missing").mkdir()
    save_file({k: v for k, v in list(trained.items())[1:]}, str(tmp_path / "missing" / handoff.ADAPTER_FILE))
    (tmp_path / "shape").mkdir()
    bad = dict(trained)
    first = next(iter(bad))
    bad[first] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "shape" / handoff.ADAPTER_FILE))
    for folder, what in (("missing", "1 missing"), ("shape", "1 of another shape"), ("nothing", "wrote no adapter")):
        with pytest.raises(PeftMagicError, match=what):
            handoff.load_result(model, "default", tmp_path / folder)
        now = peft_view.adapter_state(model, "default")
        assert all(torch.equal(now[k], before[k]) for k in before)
    (tmp_path / "trained").mkdir()
    save_file(trained, str(tmp_path / "trained" / handoff.ADAPTER_FILE))
    assert handoff.load_result(model, "default", tmp_path / "trained") == len(before)
    now = peft_view.adapter_state(model, "default")
    assert all(torch.equal(now[k], trained[k]) for k in before)
    peft_view.set_adapter_state(model, before, "default")


@pytest.mark.parametrize("method,settings", [("lora", dict(r=4, target="all-linear")), ("prefix", dict(tokens=4)),
                                             ("adalora", dict(init_r=6, target_r=2, tinit=1, tfinal=1))])
def test_the_adapter_crosses_as_its_module_tensors_and_lands_trainable(tmp_path, method, settings):
    """kernel → worker: peft's config + the raw tensors onto a freshly loaded base, exactly; and
    back: a file that does not match is refused with the model untouched."""
    import torch
    from safetensors.torch import load_file, save_file

    import peft_magic as pm
    from peft_magic.training.distributed import handoff

    kernel = pm.attach(pm.load("tiny-llama").model, method, **settings).model
    with torch.no_grad():  # make the tensors non-default, as after some training
        for t in handoff.adapter_tensors(kernel, "default").values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.01)
    handoff.write_adapter(kernel, "default", tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                       handoff.TENSORS_FILE]
    worker = handoff.attach_from(pm.load("tiny-llama").model, tmp_path / "adapter", "default")
    mine, theirs = handoff.adapter_tensors(kernel, "default"), handoff.adapter_tensors(worker, "default")
    assert mine.keys() == theirs.keys() and len(mine) > 0
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    trainable = {n for n, p in worker.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in kernel.named_parameters() if p.requires_grad} and trainable
    state = load_file(str(tmp_path / "adapter" / handoff.TENSORS_FILE))
    first = next(iter(state))
    state[first] = torch.zeros(1)
    (tmp_path / "bad").mkdir()
    save_file(state, str(tmp_path / "bad" / handoff.TENSORS_FILE))
    before = {k: v.clone() for k, v in mine.items()}
    with pytest.raises(PeftMagicError, match="1 of another shape"):
        handoff.load_result(kernel, "default", tmp_path / "bad")
    assert all(torch.equal(handoff.adapter_tensors(kernel, "default")[k], before[k]) for k in before)


# ----------------------------------------------------------------------------- channel


def test_channel_needs_the_token_and_reports_a_closed_worker():
    import socket

    from peft_magic.training.distributed.channel import Client, Listener, new_token

    listener = Listener(new_token())
    stranger = socket.create_connection(("127.0.0.1", listener.port))
    stranger.sendall(b'{"t": "hello", "token": "guess", "rank": 0}\n{"t": "event", "rank": 0}\n')
    stops = []
    client = Client(listener.port, listener.token, 1, on_stop=lambda: stops.append(1))
    client.send({"t": "phase", "phase": "loading the model"})
    got = []
    deadline = time.time() + 60  # a bound against a hang, not a speed
    while len(got) < 2 and time.time() < deadline:
        got += listener.poll(0.1)
    assert [(r, m["t"]) for r, m in got] == [(1, "hello"), (1, "phase")]  # the stranger was dropped
    listener.broadcast({"t": "stop"})
    deadline = time.time() + 60  # a bound against a hang, not a speed
    while not stops and time.time() < deadline:
        time.sleep(0.02)
    assert stops == [1]
    client.close()
    deadline = time.time() + 60  # a bound against a hang, not a speed
    closed = []
    while not closed and time.time() < deadline:
        closed = [m for _, m in listener.poll(0.1) if m["t"] == "closed"]
    assert closed
    stranger.close()
    listener.close()


TORCHRUN_REPORT = ("Failures:\n[1]:\n  time      : now\n  host      : localhost\n  rank      : 0 (local_rank: 0)\n"
                   "  exitcode  : 1 (pid: 11)\n  error_file: <N/A>\n"
                   "Root Cause (first observed failure):\n[0]:\n  time      : now\n  host      : localhost\n"
                   "  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 11)\n--\n"
                   "[2]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 12)\n")


def test_torchrun_report_is_read_for_exit_codes():
    from peft_magic.training.distributed.supervisor import exit_codes, root_cause

    assert root_cause(TORCHRUN_REPORT) == (0, 1)
    assert exit_codes(TORCHRUN_REPORT) == {0: 1, 1: -9}
    assert root_cause("nothing") == (None, None) and exit_codes("nothing") == {}


def _relay(processes=2):
    from peft_magic.state import Run
    from peft_magic.training.distributed.relay import Relay

    run = Run(run_id=1, model_id="m", adapter="default", method="lora", settings={}, total_steps=100, steps_done=7)
    relay = Relay(run, processes, {})
    for r in range(processes):
        relay.handle(r, {"t": "hello", "pid": 100 + r})
        relay.handle(r, {"t": "event", "kind": "run_start", "data": {}, "run": {}})
    return relay, run


def test_the_fault_line_names_the_cause_not_the_ranks_that_lost_their_peer(tmp_path):
    """A rank killed without a word is the cause, even when torchrun saw the survivor's error exit first;
    a rank out of memory is the cause over a broken connection; exit codes come from torchrun."""
    from peft_magic.training.distributed.supervisor import diagnose

    relay, run = _relay()
    relay.handle(0, {"t": "failed", "status": "error", "message": "RuntimeError: Connection reset by peer"})
    relay.handle(1, {"t": "closed"})
    (tmp_path / "rank1.log").write_text("W1130 noise\nsome warning\nlast words\n")
    out = diagnose(relay, TORCHRUN_REPORT, tmp_path, run)
    assert out.status == "error"
    assert out.message.startswith("rank 1 exited with code -9 (SIGKILL) at step 7/100; its stderr ended: "
                                  "some warning | last words; the other 1 worker was stopped")
    relay, run = _relay()
    relay.handle(0, {"t": "failed", "status": "error", "message": "RuntimeError: Connection reset by peer"})
    relay.handle(1, {"t": "failed", "status": "oom", "message": "out of memory at step 7/100; try batch=2"})
    relay.handle(1, {"t": "closed"})
    out = diagnose(relay, "", tmp_path, run)
    assert out.status == "oom" and out.message == ("rank 1: out of memory at step 7/100; try batch=2; "
                                                   "the other 1 worker was stopped")
    relay, run = _relay(3)
    relay.handle(2, {"t": "closed"})
    time.sleep(0.01)
    relay.handle(0, {"t": "closed"})  # went later: stopped by torchrun after rank 2 died
    out = diagnose(relay, "", tmp_path, run)
    assert out.message.startswith("rank 2 exited (exit code unknown) at step 7/100") and "other 2 workers were" in out.message


# ----------------------------------------------------------------------------- plan per GPU


def _parts(**kw):
    from peft_magic.planning.results import Parts

    return Parts(**kw)


def test_per_gpu_memory_by_strategy():
    from peft_magic.planning.results import Target
    from peft_magic.planning.sharding import per_gpu

    cpu = Target("cpu", "CPU RAM", 10**12, "float32", "math")
    p = _parts(weights=800, adapter=80, gradients=80, optimizer=160, activations=1000, overhead=40)
    ddp = per_gpu(p, 4, "ddp", 4, cpu)
    assert (ddp.weights, ddp.adapter, ddp.gradients, ddp.optimizer, ddp.activations) == (800, 80, 80, 160, 1000)
    assert ddp.overhead == 40 + 80  # + DDP's gradient buckets
    z2 = per_gpu(p, 4, "zero2", 4, cpu)
    assert (z2.weights, z2.adapter, z2.gradients, z2.optimizer, z2.activations) == (800, 80, 20, 40, 1000)
    assert z2.overhead == 10  # the optimizer step's temporaries are sharded too
    for key in ("fsdp", "zero3"):
        f = per_gpu(p, 4, key, 4, cpu)
        assert (f.weights, f.adapter, f.gradients, f.optimizer, f.activations) == (200, 20, 20, 40, 1000)
        assert f.overhead == 10 + int(2 * (880 / 4) * 3 / 4)  # two blocks gathered beyond this GPU's shard
    one = per_gpu(p, 1, "fsdp", 4, cpu)
    assert one.total == p.total  # one GPU: nothing to shard, nothing to gather


def test_per_gpu_runtime_is_recomputed_on_cuda():
    from peft_magic.planning.estimate import CUDA_SLACK
    from peft_magic.planning.results import Target
    from peft_magic.planning.sharding import per_gpu

    gpu = Target("cuda", "A100", 40 * 2**30, "bfloat16", "flash", context=512 * 2**20)
    body = dict(weights=8 * 2**30, adapter=0, gradients=8 * 2**30, optimizer=16 * 2**30, activations=2**30)
    pre = sum(body.values())
    temporary = 2**28
    overhead = temporary + gpu.context + int(CUDA_SLACK * (pre + temporary))  # as estimate.parts_of makes it
    f = per_gpu(_parts(**body, overhead=overhead), 8, "fsdp", 32, gpu)
    assert (f.weights, f.gradients, f.optimizer) == (2**30, 2**30, 2 * 2**30)
    extra = int(2 * (8 * 2**30 / 32) * 7 / 8)
    sharded = 2**30 + 2**30 + 2 * 2**30 + 2**30
    expected = temporary // 8 + extra + gpu.context + int(CUDA_SLACK * (sharded + temporary // 8 + extra))
    assert abs(f.overhead - expected) <= 2


def test_plan_gpus_strategy_on_a_real_config():
    import peft_magic as pm

    one = pm.plan("tiny-llama", ["lora", "full"], gpu="A100-40GB", limits=False)
    for strategy, zero in (("ddp", None), ("fsdp", None), ("deepspeed", None), ("deepspeed", 3)):
        p = pm.plan("tiny-llama", ["lora", "full"], gpu="A100-40GB", gpus=4, strategy=strategy, zero=zero,
                    limits=False)
        label = {"ddp": "DDP", "fsdp": "FSDP FULL_SHARD"}.get(strategy, f"DeepSpeed ZeRO-{zero or 2}")
        assert p.sharding == f"per GPU of 4 with {label}" and p.sharding in repr(p).splitlines()[0]
        for m in ("lora", "full"):
            a, b = one[m].parts, p[m].parts
            assert b.activations == a.activations
            if strategy == "ddp":
                assert (b.weights, b.gradients, b.optimizer) == (a.weights, a.gradients, a.optimizer)
                assert b.total > a.total
            elif zero != 3 and strategy == "deepspeed":
                assert b.weights == a.weights and b.gradients == -(-a.gradients // 4)
                assert b.optimizer == -(-a.optimizer // 4)
            else:
                assert b.weights == -(-a.weights // 4) and b.optimizer == -(-a.optimizer // 4)
    with pytest.raises(PeftMagicError, match="add --gpus N"):
        pm.plan("tiny-llama", "lora", strategy="fsdp")
    with pytest.raises(PeftMagicError, match="unknown strategy"):
        pm.plan("tiny-llama", "lora", gpus=2, strategy="horovod")
