"""``%peft compare`` on the which-method task, each method at its default rate and with
``lr=auto`` (notebooks/which-method.ipynb: SmolLM2-135M-Instruct, 8 pirate-style answers to
train on, 2 held out, 12 steps of batch 4).

Both tables in one run, with ``repeats`` seeds each (mean ± spread), so the two can be read
side by side: the chosen rates, held-out perplexity, and what the search cost in time.
Usage::

    python bench/bench_compare_lr.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

QA = [("What is the capital of France?", "Paris"), ("What is the capital of Spain?", "Madrid"),
      ("What is the capital of Italy?", "Rome"), ("What is the capital of Germany?", "Berlin"),
      ("What is the capital of Portugal?", "Lisbon"), ("What is the capital of Austria?", "Vienna"),
      ("What is the capital of Norway?", "Oslo"), ("What is the capital of Greece?", "Athens"),
      ("What is the capital of Poland?", "Warsaw"), ("What is the capital of Egypt?", "Cairo")]
METHODS = "lora,ia3,prefix,prompt,houlsby"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import peft_magic as pm

    pirate = [{"prompt": q, "completion": f"Arr, that be {ans}, matey!"} for q, ans in QA]
    train, dev = pirate[:8], pirate[8:]
    loaded = pm.load("smollm2")
    out = ["## Which method: default rates vs `lr=auto` (`bench_compare_lr`)", "",
           f"notebooks/which-method.ipynb's task on SmolLM2-135M-Instruct: {METHODS}, 12 steps of batch 4, "
           f"held-out perplexity on 2 examples, {a.repeats} seeds per row (mean ± spread).", ""]
    for lr in ("default", "auto"):
        t0 = time.perf_counter()
        res = pm.compare(loaded.model, METHODS, train, tokenizer=loaded.tokenizer, eval=dev, steps=12, batch=4,
                         lr=lr, repeats=a.repeats, display=None)
        seconds = time.perf_counter() - t0
        out += [f"### lr={lr} ({seconds:.0f} s in all)", "", "```", repr(res), "```", ""]
        print(out[-3], flush=True)
    out.append(f"load average {os.getloadavg()[0]:.1f} at the end.")
    text = "\n".join(out)
    if not a.no_write:
        write_section("bench_compare_lr", text)


if __name__ == "__main__":
    main()
