"""Check ``%peft train --gpus all`` with each strategy against ``%peft plan --gpus N --strategy``.

Run on a machine with CUDA GPUs (two or more to see sharding)::

    python bench/gpu_check_distributed.py                    # SmolLM2-135M, LoRA r=16 all-linear
    python bench/gpu_check_distributed.py --model ./my-model --batch 4 --seq 512 --steps 5

For ddp, fsdp (FULL_SHARD per block), DeepSpeed ZeRO-2 and ZeRO-3 (when deepspeed is
installed; otherwise the refusal is printed) it

1. plans the run from the config alone: ``plan(model, "lora", gpus=N, strategy=S)`` —
   each GPU's share (weights, adapter, gradients, optimizer, activations, overhead);
2. trains the same setup for real with ``train(..., gpus="all", strategy=S)`` from the
   adapter's same starting weights (torchrun, nccl), a few steps at batch × seq;
3. compares the largest per-GPU peak (``torch.cuda.max_memory_allocated`` in each worker,
   reported by the workers, max over ranks) with the plan's per-GPU total without its
   runtime part (CUDA context and fragmentation margin, which the allocator's counter does
   not see), and prints the loss curve's ends and the time per step.

Without CUDA it says so, shows each strategy's ``--dry-run`` and refusal, and runs the CPU
path (``--processes 2``, gloo) so the script itself is always exercised. Results of a CUDA
run go to bench/RESULTS.md (section ``distributed_gpu``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STRATEGIES = [("ddp", None), ("fsdp", None), ("deepspeed", 2), ("deepspeed", 3)]


def _fmt(n: float | None) -> str:
    from peft_magic.fmt import fmt_bytes

    return fmt_bytes(n) if n else "–"


def _texts(seq: int, n: int = 256) -> list[str]:
    words = "the quick brown fox jumps over the lazy dog while parameter efficient fine tuning trains adapters".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(seq)) for i in range(n)]


def _allocated_part(total: int, context: int) -> int:
    """The plan's per-GPU total without its runtime part (what max_memory_allocated can see)."""
    from peft_magic.planning.estimate import CUDA_SLACK

    return int((total - context) / (1 + CUDA_SLACK))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--r", type=int, default=16)
    a = ap.parse_args()

    import torch

    import peft_magic as pm
    from peft_magic import peft_view
    from peft_magic.errors import PeftMagicError
    from peft_magic.training.distributed.dryrun import dry_run
    from peft_magic.training.run import train

    loaded = pm.load(a.model)
    model = pm.attach(loaded.model, "lora", r=a.r, target="all-linear", dropout=0.0).model
    init = peft_view.adapter_state(model, "default")
    texts = _texts(a.seq)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        print("no CUDA GPU here: skipping the GPU comparison; dry runs and refusals, then the CPU path\n")
        for strategy, zero in STRATEGIES:
            print(dry_run(model, gpus=2, strategy=strategy, zero=zero, batch=a.batch), "\n")
            try:
                train(model, texts, tokenizer=loaded.tokenizer, gpus=2, strategy=strategy, zero=zero, steps=1)
            except PeftMagicError as e:
                print(f"refused: {e}\n")
        t0 = time.perf_counter()
        run = train(model, texts[:32], tokenizer=loaded.tokenizer, processes=2, steps=a.steps, batch=a.batch,
                    max_len=min(a.seq, 64))
        print(f"CPU path: {run!r} ({time.perf_counter() - t0:.1f} s)")
        return

    rows = []
    for strategy, zero in STRATEGIES:
        label = f"zero{zero}" if strategy == "deepspeed" else strategy
        plan = pm.plan(a.model, "lora", r=a.r, target="all-linear", batch=a.batch, seq=a.seq, gpus=n,
                       strategy=strategy, zero=zero, limits=False)
        part = plan["lora"].parts
        peft_view.set_adapter_state(model, init, "default")
        try:
            t0 = time.perf_counter()
            run = train(model, texts, tokenizer=loaded.tokenizer, gpus="all", strategy=strategy, zero=zero,
                        steps=a.steps, batch=a.batch, max_len=a.seq, lr=1e-4)
            wall = time.perf_counter() - t0
        except PeftMagicError as e:
            print(f"{label}: {e}")
            rows.append((label, part, None, None, str(e)))
            continue
        rows.append((label, part, run, wall, None))
        print(f"{label}: {run!r}")

    context = 512 * 1024**2
    lines = [f"## `--gpus all` ({n} GPUs) vs `%peft plan --gpus {n}`: per-GPU memory ({a.model}, LoRA r={a.r} "
             f"all-linear, batch {a.batch} × seq {a.seq}, {a.steps} steps)", "",
             "| strategy | plan: weights / grads / optimizer / activations / overhead | plan total (allocator part) | "
             "measured peak (max of ranks) | measured / plan | loss first → last | s per step |",
             "|---|---|---|---|---|---|---|"]
    for label, part, run, wall, err in rows:
        planned = f"{_fmt(part.weights + part.adapter)} / {_fmt(part.gradients)} / {_fmt(part.optimizer)} / " \
                  f"{_fmt(part.activations)} / {_fmt(part.overhead)}"
        alloc = _allocated_part(part.total, context)
        if run is None:
            lines.append(f"| {label} | {planned} | {_fmt(part.total)} ({_fmt(alloc)}) | {err} | | | |")
            continue
        peak = run.peak_memory or 0
        losses = f"{run.losses[0][1]:.3f} → {run.losses[-1][1]:.3f}" if run.losses else "–"
        lines.append(f"| {label} | {planned} | {_fmt(part.total)} ({_fmt(alloc)}) | {_fmt(peak)} | "
                     f"{peak / alloc:.2f} | {losses} | {run.seconds / max(1, run.steps_done):.2f} |")
    text = "\n".join(lines)
    print(text)
    from _results import write_section

    write_section("distributed_gpu", text)


if __name__ == "__main__":
    main()
