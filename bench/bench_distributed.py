"""Multi-process training on this machine: 2 gloo processes vs 1 process, same global batch.

For tiny-llama (hidden 64) and SmolLM2-135M with LoRA, each variant alternates n times:

* **1 process**: ``train(..., batch=2b)`` in this process (the kernel's way);
* **2 processes**: ``train(..., batch=b, processes=2)`` (torchrun, gloo, DDP).

Figures (medians):

* per-step time in steady state — from the ``elapsed_s`` / ``step`` of the progress
  events (rank 0's own clock, after step 2), so launch and load are not in it;
* time to the first step — from the call to the arrival of the first progress event with
  step ≥ 1 in this process: what "the cell's start to the first step" is in a notebook;
* the agreement of the two runs (sequential sampling, same seed): max |loss diff| over
  the steps and max |weight diff| of the final adapters.

Results go to bench/RESULTS.md (section ``distributed``).
"""

from __future__ import annotations

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

from _results import median, write_section  # noqa: E402

CASES = {  # model: (per-process batch b, steps, max_len, n)
    "tiny-llama": (8, 100, 64, 3),
    "smollm2": (2, 8, 64, 2),
}
#: variant → (worker processes, torch threads of this process for the one-process runs)
VARIANTS = {"1p": (None, None), "1p1t": (None, 1), "2p": (2, None)}


def _texts() -> list[str]:
    return [f"Example number {i}: the quick brown fox jumps over the lazy dog {'and runs far ' * (i % 7)}."
            for i in range(512)]


def _one(model, tok, texts, *, processes: int | None, batch: int, steps: int, max_len: int):
    from peft_magic import events
    from peft_magic.training.run import train

    seen: list[tuple[float, int, float]] = []

    def on(e):
        if e.kind == "progress" and e.data.get("step"):
            seen.append((time.perf_counter(), int(e.data["step"]), float(e.data.get("elapsed_s") or 0.0)))

    unsub = events.subscribe(on)
    t0 = time.perf_counter()
    try:
        extra = {"processes": processes} if processes else {}
        run = train(model, texts, tokenizer=tok, steps=steps, batch=batch, max_len=max_len, lr=1e-3,
                    train_sampling_strategy="sequential", seed=0, **extra)
    finally:
        unsub()
    wall = time.perf_counter() - t0
    first = next(t for t, s, _ in seen if s >= 1) - t0
    steady = [(s, el) for _, s, el in seen if s >= 2]
    (s0, e0), (s1, e1) = steady[0], steady[-1]
    per_step = (e1 - e0) / (s1 - s0) if s1 > s0 else float("nan")
    return {"first": first, "per_step": per_step, "wall": wall, "losses": [v for _, v in run.losses]}


def bench_case(name: str, b: int, steps: int, max_len: int, n: int) -> dict:
    import peft_magic as pm
    from peft_magic import peft_view

    loaded = pm.load(name)
    model = pm.attach(loaded.model, "lora", r=8, dropout=0.0).model
    init = peft_view.adapter_state(model, "default")
    texts = _texts()
    import torch

    default_threads = torch.get_num_threads()
    rows: dict[str, list[dict]] = {k: [] for k in VARIANTS}
    weights: dict[str, dict] = {}
    for _ in range(n):
        for key, (processes, threads) in VARIANTS.items():
            peft_view.set_adapter_state(model, init, "default")
            torch.set_num_threads(threads or default_threads)
            try:
                rows[key].append(_one(model, loaded.tokenizer, texts, processes=processes,
                                      batch=b if processes else 2 * b, steps=steps, max_len=max_len))
            finally:
                torch.set_num_threads(default_threads)
            weights[key] = peft_view.adapter_state(model, "default")
    loss_diff = max(abs(x - y) for x, y in zip(rows["1p"][-1]["losses"], rows["2p"][-1]["losses"]))
    weight_diff = max((weights["1p"][k] - weights["2p"][k]).abs().max().item() for k in init)
    moved = max((weights["1p"][k] - init[k]).abs().max().item() for k in init)
    out = {k: {m: median([r[m] for r in rows[k]]) for m in ("first", "per_step", "wall")} for k in rows}
    out.update(loss_diff=loss_diff, weight_diff=weight_diff, moved=moved, n=n, b=b, steps=steps, max_len=max_len,
               threads=default_threads)
    return out


def main() -> None:
    import psutil

    results = {name: bench_case(name, *spec) for name, spec in CASES.items()}
    load = os.getloadavg()[0]
    lines = ["## Multi-process training: 2 gloo processes vs 1 process, same global batch (LoRA r=8)", "",
             "Per step (steady state, rank 0's clock) and from the call to the first step; one process with "
             "torch's default threads and with 1 thread; two processes with 1 thread each (what the launcher "
             "gives them on 2 cores).", "",
             "| model | global batch × seq | per step: 1 process | 1 process, 1 thread | 2 processes | "
             "to first step: 1 process | 1 process, 1 thread | 2 processes | max loss diff | "
             "max weight diff (max weight change) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        one, lone, two = r["1p"], r["1p1t"], r["2p"]
        lines.append(f"| {name} (n={r['n']}, {r['steps']} steps) | {2 * r['b']} × ≤{r['max_len']} | "
                     f"{one['per_step'] * 1000:.0f} ms ({r['threads']} threads) | {lone['per_step'] * 1000:.0f} ms | "
                     f"{two['per_step'] * 1000:.0f} ms | {one['first']:.1f} s | {lone['first']:.1f} s | "
                     f"{two['first']:.1f} s | {r['loss_diff']:.2g} | {r['weight_diff']:.2g} ({r['moved']:.2g}) |")
    lines += ["", f"{psutil.cpu_count()} cores; load average {load:.1f} when it finished (the machine is shared "
              "with other jobs). Compare 2 processes with 1 process at 1 thread: the same work is split in "
              "two halves on two cores, plus a gloo all-reduce of the gradients every step, so at best ~2× and "
              "less for small steps. One process with torch's default threads is the slowest here: with the "
              "cores oversubscribed by other jobs, its OpenMP threads spin-wait for each other at every op. "
              "The launch costs two fresh interpreters importing torch / transformers / peft and loading the "
              "model, on the same two cores."]
    text = "\n".join(lines)
    print(text)
    write_section("distributed", text)


if __name__ == "__main__":
    main()
