"""``%peft compare`` on the which-method task, each method at its default rate and with
``lr=auto`` (notebooks/which-method.ipynb: SmolLM2-135M-Instruct, 8 pirate-style answers to
train on, 2 held out, 12 steps of batch 4).

Both tables in one run, with ``repeats`` seeds each (mean ± spread), so the two can be read
side by side: the chosen rates, held-out perplexity, and what the search cost in time.

``--search``: ``lr=auto``'s search both ways on the same comparison, every rate of the grid
(``lr_search.WALK = False``) and the walk, alternating ``--rounds`` times: each method's
probes, chosen rate and search time, and the walk's median time over the full grid's.
Usage::

    python bench/bench_compare_lr.py [--repeats 3]
    python bench/bench_compare_lr.py --search [--rounds 1]
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
    ap.add_argument("--search", action="store_true", help="the search: every rate vs the walk")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import peft_magic as pm

    pirate = [{"prompt": q, "completion": f"Arr, that be {ans}, matey!"} for q, ans in QA]
    train, dev = pirate[:8], pirate[8:]
    loaded = pm.load("smollm2")
    if a.search:
        return search(pm, loaded, train, dev, a.rounds, not a.no_write)
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


def search(pm, loaded, train, dev, rounds: int, write: bool) -> None:
    """Every rate against the walk, alternating, on the which-method comparison."""
    import statistics

    from peft_magic.training import lr_search

    seconds: dict[str, list[float]] = {"every rate": [], "walk": []}
    rows: dict[str, dict[str, object]] = {}
    for _ in range(rounds):
        for way, walk in (("every rate", False), ("walk", True)):
            lr_search.WALK = walk
            try:
                res = pm.compare(loaded.model, METHODS, train, tokenizer=loaded.tokenizer, eval=dev, steps=12,
                                 batch=4, display=None)
            finally:
                lr_search.WALK = True
            seconds[way].append(sum(r.search.seconds for r in res.rows))
            rows[way] = {r.label: r for r in res.rows}
            print(way, f"{seconds[way][-1]:.1f} s", flush=True)
    every, walk = (statistics.median(seconds[k]) for k in ("every rate", "walk"))
    out = ["## `lr=auto`'s search: every rate vs the walk (`bench_compare_lr --search`)", "",
           (f"notebooks/which-method.ipynb's comparison ({METHODS}, 12 steps of batch 4, probes of 4 steps), "
            f"both ways alternating, {rounds} round(s); the search's time is the sum over the methods."), "",
           "| method | every rate: chosen | probes | walk: chosen | probes | perplexity, every rate / walk |",
           "|---|---:|---:|---:|---:|---|"]
    for label in METHODS.split(","):
        e, w = rows["every rate"][label], rows["walk"][label]
        out.append(f"| {label} | {e.lr:.0e} | {len(e.search.probes)} | {w.lr:.0e} | {len(w.search.probes)} | "
                   f"{e.metrics['perplexity']:.4f} / {w.metrics['perplexity']:.4f} |")
    probes = {k: sum(len(r.search.probes) for r in rows[k].values()) for k in rows}
    out += ["", (f"probes: {probes['every rate']} → {probes['walk']}; the search's time (median): every rate "
                 f"{every:.0f} s, walk {walk:.0f} s: **{walk / every:.2f}×**"), "",
            f"load average {os.getloadavg()[0]:.1f} at the end."]
    text = "\n".join(out)
    print(text)
    if write:
        write_section("bench_lr_search", text)


if __name__ == "__main__":
    main()
