"""Memory of a training step with and without the fused loss (``fused_loss``), in one run.

1. SmolLM2-135M (vocabulary 49,152) + LoRA r=8, batch 8 × 512 tokens, fp32 on CPU, trained
   through ``peft_magic``'s own ``train`` with ``fused_loss=False`` (the model's loss from
   the full logits: transformers' Trainer unchanged) and ``fused_loss=True``, each with and
   without gradient checkpointing. Every configuration runs in a fresh process (so one
   cannot inherit another's allocator state) and the configurations are interleaved, in
   pairs, round after round, so that the load of a shared machine hits all of them.
   Per run: the step's peak RSS above the loaded model (Linux's exact high-water mark,
   reset when the run starts: ``memory.PeakSampler``; the base is read with every weight
   resident, since they are memory-mapped and a first step would page them in), the median
   step time after the first step (tokens/s), the CPU time per step (less sensitive to other
   processes), and the first step's loss. Goals: peak above the model ≤ 0.5× the standard path's with
   checkpointing, tokens/s ≥ 0.95×, first-step loss equal within 1e-5. One more run per
   round: the fused step with glibc's mmap threshold fixed at 1 MiB (``MALLOC``, below).
2. Llama-3.1-8B (from its config: hidden 4096, 32 layers, 32 heads, 8 KV heads,
   intermediate 14,336, vocabulary 128,256), LoRA r=8 and QLoRA r=8, bf16, batch 2 × 2048
   with gradient checkpointing, on a 24 GB GPU: ``%peft plan`` fused vs standard, next to
   torchtune's published peaks for the same model, batch and length.

``python bench/bench_memory.py [--rounds N] [--steps N]`` (defaults: 3 rounds, 4 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import write_section  # noqa: E402

BATCH, SEQ = 8, 512
CONFIGS = [("standard", False, True), ("fused", True, True), ("standard", False, False), ("fused", True, False)]
# glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so a step's
# activations soon come from the heap, which grows with the holes between them; with a fixed
# threshold every block of 1 MiB or more is its own mapping and goes back to the system when
# freed. peft_magic does not set it (``mallopt``) in the user's kernel: it is process-wide and
# costs a page fault per page of every large block; measured here as the user's own option.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}

CHILD = r'''
import json, os, random, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import gc
import psutil, torch
import peft_magic as pm
from peft_magic.training.run import train
from transformers import TrainerCallback

fused, ckpt, steps, batch, seq = json.loads(sys.argv[1])
torch.manual_seed(0)
loaded = pm.load("smollm2")
model = pm.attach(loaded.model, "lora", r=8).model
words = ("the model learns a little from every example it reads and the loss goes down slowly while "
         "memory stays where the plan said it would be because the logits never exist in full").split()
rnd = random.Random(0)
texts = [" ".join(rnd.choice(words) for _ in range(seq + 64)) for _ in range(batch * steps)]
cpu, wall, mark = [], [], {}

class Meter(TrainerCallback):
    """The loaded model's RSS when training starts (after the Trainer's set-up and imports,
    with every weight resident), the exact peak RSS from there on (Linux's high-water mark), each step's CPU and wall time."""
    def on_train_begin(self, *a, **k):
        # the weights are memory-mapped from the checkpoint and become resident only when a
        # step first reads them (~0.5 GB for SmolLM2): read them now, so that the base is the
        # loaded model and the peak above it is the step's own
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                t.sum()
        gc.collect()
        mark["base"] = psutil.Process().memory_info().rss
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    def on_step_begin(self, *a, **k): self.t, self.w = time.process_time(), time.perf_counter()
    def on_step_end(self, *a, **k):
        cpu.append(time.process_time() - self.t)
        wall.append(time.perf_counter() - self.w)
        with open("/proc/self/status") as f:
            mark["hwm"] = max(mark.get("hwm", 0), next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM")))

import peft_magic.training.run as runmod
make = runmod.make_callbacks
runmod.make_callbacks = lambda *a, **k: make(*a, **k) + [Meter()]
run = train(model, texts, tokenizer=loaded.tokenizer, steps=steps, batch=batch, max_len=seq, lr=1e-4,
            fused_loss=fused, checkpointing=ckpt)
print("RESULT " + json.dumps({"peak_above": mark["hwm"] - mark["base"], "base": mark["base"],
      "loss_path": run.loss_path, "first_loss": run.losses[0][1], "step_s": wall, "cpu_s": cpu,
      "status": run.status, "message": run.message}))
'''


def child(fused: bool, ckpt: bool, steps: int, extra_env: dict[str, str] | None = None) -> dict:
    # one thread by default: on a shared machine two threads spin-wait for each other and
    # their CPU time says more about the neighbours than about the step
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **(extra_env or {}))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([fused, ckpt, steps, BATCH, SEQ])],
                         capture_output=True, text=True, env=env, cwd=str(HERE.parent))
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the benchmark child failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(line[7:])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def llama_plan() -> list[str]:
    import peft_magic as pm

    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
           "max_position_embeddings": 131072, "tie_word_embeddings": False}
    rows = ["| Llama-3.1-8B, batch 2 × 2048, bf16, checkpointing | plan, model's own loss | plan, fused loss | "
            "torchtune's README |", "|---|---:|---:|---:|"]
    published = {"lora": "16.2 GiB (RTX 4090)", "qlora": "7.4 GiB"}
    logits = None
    for method in ("lora", "qlora"):
        totals = []
        for fused in (False, True):
            p = pm.plan(cfg, method, r=8, batch=2, seq=2048, gpu="24GB", dtype="bf16", checkpointing=True,
                        fused_loss=fused, limits=False)
            totals.append(p[method].total)
            logits = p.logits or logits
        label = "LoRA r=8" if method == "lora" else "QLoRA r=8 (NF4)"
        rows.append(f"| {label} | {gib(totals[0])} | {gib(totals[1])} | {published[method]} |")
    if logits:
        rows.append("")
        rows.append(f"The loss alone (head, cross-entropy and their backward): {gib(logits[0])} the model's way, "
                    f"{gib(logits[1])} fused.")
    return rows


def summary(results: dict, rounds: int, steps: int) -> list[str]:
    lines = [f"SmolLM2-135M + LoRA r=8, batch {BATCH} × {SEQ}, fp32, CPU, one thread; each run a fresh process, "
             f"{rounds} round(s) of interleaved pairs, {steps} steps a run (medians after the first step).", "",
             "| checkpointing | loss | peak above the model | tokens/s (wall) | CPU s / step | first loss |",
             "|---|---|---:|---:|---:|---:|"]
    out = []
    for ckpt in (True, False):
        med = {}
        for name in ("standard", "fused"):
            rs = results.get((name, ckpt))
            if not rs:
                continue
            peak = statistics.median(x["peak_above"] for x in rs)
            step = statistics.median(s for x in rs for s in (x["step_s"][1:] or x["step_s"]))
            cpu = statistics.median(s for x in rs for s in (x["cpu_s"][1:] or x["cpu_s"]))
            med[name] = (peak, BATCH * SEQ / step, cpu, rs[0]["first_loss"])
            lines.append(f"| {'on' if ckpt else 'off'} | {rs[0]['loss_path']} | {gib(peak)} | "
                         f"{BATCH * SEQ / step:,.0f} | {cpu:.1f} | {rs[0]['first_loss']:.6f} |")
        if len(med) == 2:
            (ps, ts, cs, ls), (pf, tf, cf, lf) = med["standard"], med["fused"]
            out.append(f"checkpointing {'on' if ckpt else 'off'}: peak above the model fused / standard = "
                       f"**{pf / ps:.3f}×**, tokens/s **{tf / ts:.2f}×** wall, **{cs / cf:.2f}×** by CPU time, "
                       f"first-step loss difference {abs(lf - ls) / abs(ls):.1e} (relative)")
    heap = results.get(("fused", "malloc"))
    if heap and results.get(("fused", True)):
        rs = results[("fused", True)]
        peak = statistics.median(x["peak_above"] for x in heap)
        step = statistics.median(s for x in heap for s in (x["step_s"][1:] or x["step_s"]))
        base = statistics.median(s for x in rs for s in (x["step_s"][1:] or x["step_s"]))
        out.append(f"on CPU most of the fused step's peak is the C library's heap, not tensors: with "
                   f"`MALLOC_MMAP_THRESHOLD_={MALLOC['MALLOC_MMAP_THRESHOLD_']}` in the environment before Python "
                   f"starts (checkpointing on) it is **{gib(peak)}** above the model, at "
                   f"**{base / step:.2f}×** the tokens/s (page faults for every large block)")
    return lines + [""] + [f"- {x}" for x in out] + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-malloc", action="store_true", help="leave out the MALLOC_MMAP_THRESHOLD_ run")
    a = ap.parse_args()
    head = ["## Memory: the loss without the logits (`fused_loss`)", ""]
    plan = llama_plan()
    results: dict[tuple[str, bool | str], list[dict]] = {}
    write_section("bench_memory", "\n".join(head + plan))
    for r in range(0 if a.skip_smollm2 else a.rounds):
        order = CONFIGS if r % 2 == 0 else [CONFIGS[i] for i in (1, 0, 3, 2)]  # pairs, alternating first
        for name, fused, ckpt in order:
            res = child(fused, ckpt, a.steps)
            results.setdefault((name, ckpt), []).append(res)
            print(f"round {r + 1} {name:8s} ckpt={ckpt!s:5s} peak above model {gib(res['peak_above'])} "
                  f"steps {[round(s, 1) for s in res['step_s']]} cpu {[round(s, 1) for s in res['cpu_s']]} "
                  f"loss {res['first_loss']:.6f} ({res['loss_path']})", flush=True)
            write_section("bench_memory", "\n".join(head + summary(results, r + 1, a.steps) + plan))
        if not a.skip_malloc:
            res = child(True, True, a.steps, MALLOC)
            results.setdefault(("fused", "malloc"), []).append(res)
            print(f"round {r + 1} fused    ckpt=True  {MALLOC} peak above model {gib(res['peak_above'])} "
                  f"steps {[round(s, 1) for s in res['step_s']]}", flush=True)
            write_section("bench_memory", "\n".join(head + summary(results, r + 1, a.steps) + plan))
    print((HERE / "RESULTS.md").read_text().split("<!-- bench_memory -->")[1].split("<!--")[0])


if __name__ == "__main__":
    main()
