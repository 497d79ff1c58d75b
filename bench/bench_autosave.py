"""What autosave costs a training run (SmolLM2-135M + LoRA r=8, CPU).

Three runs of the same training, interleaved over rounds in one process (the model loaded
once, the data tokenized once):

* ``off``: ``autosave=False`` (``%peft train … --no-autosave``): the plain Trainer run;
* ``default``: autosave as shipped (every ``%config PeftMagic.autosave_minutes`` = 10 minutes
  of training, and at the end): on a run of a few minutes, one checkpoint at the end;
* ``every 10 steps``: ``save_every=10``: a checkpoint every 10 steps (4 in the run).

Reported: the time of one checkpoint write (transformers' ``Trainer._save_checkpoint`` timed
around each call, our marker included), the bytes of one checkpoint folder, and steps/s of
each mode against ``off`` (medians over the rounds). Usage::

    python bench/bench_autosave.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers

    import peft_magic as pm
    from peft_magic import events
    from peft_magic.settings import configure

    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="bench-autosave-"))
    configure(checkpoint_dir=str(root))
    loaded = pm.load("smollm2")
    model = pm.attach(loaded.model, "lora", r=8).model
    texts = [f"Question {i}: what does the fox do on day {i}? Answer: it jumps over the lazy dog "
             f"{'and runs far away ' * (2 + i % 4)}." for i in range(64)]

    writes: list[float] = []
    sizes: list[int] = []
    original = transformers.Trainer._save_checkpoint

    def timed(self, *args, **kw):  # the bench's own instrument, not the product's
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kw)
        finally:
            writes.append(time.perf_counter() - t0)

    transformers.Trainer._save_checkpoint = timed
    events.subscribe(lambda e: sizes.append(e.data["bytes"]) if e.kind == "checkpoint" and "bytes" in e.data
                     else None)
    modes = {"off": dict(autosave=False), "default": {}, "every 10 steps": dict(save_every=10)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    counts: dict[str, int] = {}
    pm.train(model, texts, tokenizer=loaded.tokenizer, steps=4, batch=8, display=None, autosave=False)  # warm
    for _ in range(a.rounds):
        for mode, extra in modes.items():
            before = len(writes)
            t0 = time.perf_counter()
            run = pm.train(model, texts, tokenizer=loaded.tokenizer, steps=a.steps, batch=8, display=None, **extra)
            times[mode].append(time.perf_counter() - t0)
            counts[mode] = len(writes) - before
            assert run.status == "completed", run.message
    transformers.Trainer._save_checkpoint = original

    med = {m: statistics.median(v) for m, v in times.items()}
    per_write = statistics.median(writes) if writes else float("nan")
    size = statistics.median(sizes) if sizes else 0
    lines = [
        "## Autosave: what a checkpoint costs a run (`bench_autosave`)",
        "",
        f"SmolLM2-135M + LoRA r=8, {a.steps} steps of batch 8, CPU, torch {torch.__version__}, "
        f"{a.rounds} interleaved rounds, medians; load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| autosave | checkpoints a run | run time (s) | steps/s | steps/s vs off |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in modes:
        lines.append(f"| {m} | {counts[m]} | {med[m]:.1f} | {a.steps / med[m]:.2f} | **{med['off'] / med[m]:.3f}×** |")
    lines += [
        "",
        f"- one checkpoint write (adapter, optimizer, scheduler, RNG, trainer state, our marker): "
        f"**{per_write * 1000:.0f} ms** median of {len(writes)}; one checkpoint folder: **{size / 2**20:.1f} MiB**",
        "- `default` is what a user gets: a checkpoint every 10 minutes of training and one at the end.",
    ]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        write_section("bench_autosave", text)


if __name__ == "__main__":
    main()
