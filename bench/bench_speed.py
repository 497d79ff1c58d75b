"""Speed you can see (issue 14), each figure side by side with the plain way, in one run.

1. Attach: ``pm.attach(model, "lora", r=16, target="all-linear")`` vs a raw
   ``get_peft_model(model, LoraConfig(...))`` on SmolLM2-135M (and the old way: a dry run
   on a meta-device skeleton first), alternating, n rounds, fresh model each time; plus
   the noise-free ratio: our whole attach over the ``get_peft_model`` call inside it.
2. The profile's own overhead: in one run, the steps inside the ``--profile`` window vs
   the steps outside it (tiny Llama, SmolLM2).
3. ``compile=True`` vs eager: steady-state real tokens/s (steps that neither compile nor
   sit in the profile window, after the first) and the compile time, tiny Llama and
   SmolLM2 on CPU; the profile's phase split of each run.
4. Gradient checkpointing on / off on SmolLM2: peak RAM and step time (each variant in a
   fresh process: RSS never shrinks, so a second variant in the same process would
   inherit the first one's peak), the activations the forward saves for the backward
   (exact, ``saved_tensors_hooks``), the plan's figures and the measured recompute share.
5. The loss on completion data: SmolLM2 + LoRA on prompt/completion rows (most positions
   are prompt), ``fused_loss=auto`` (which fuses there: no logits for the prompt) vs
   ``fused_loss=False`` (transformers' Trainer, the full logits), alternating, same losses.

Usage: ``python bench/bench_speed.py [attach|profile|compile|checkpointing|completion ...]`` (all by
default); each part replaces its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import median, write_section  # noqa: E402

warnings.filterwarnings("ignore")
WORDS = "the quick brown fox jumps over a lazy dog while reading books about science and history".split()


def texts(n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def _threads() -> None:
    """Torch threads for every measurement here (``BENCH_THREADS``, default 1): on a small
    shared machine two spinning OpenMP threads turn other processes' load into 10× noise."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def setting() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f} at the start"


# ----------------------------------------------------------------------------- 1. attach


def attach(n: int = 9) -> str:
    import peft
    from peft import LoraConfig, get_peft_model

    import peft_magic as pm
    from peft_magic.peft_methods.config import build_config, validate
    from peft_magic.peft_methods.coerce import normalize_settings
    from peft_magic.peft_methods.discovery import resolve_method

    inner: list[float] = []
    real = peft.get_peft_model

    def timed_get_peft_model(*a, **k):  # what our attach spends inside peft itself
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            inner.append(time.perf_counter() - t)

    def raw(m) -> float:
        t = time.perf_counter()
        get_peft_model(m, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
        return time.perf_counter() - t

    def ours(m) -> float:
        peft.get_peft_model = timed_get_peft_model
        try:
            t = time.perf_counter()
            pm.attach(m, "lora", r=16, target="all-linear")
            return time.perf_counter() - t
        finally:
            peft.get_peft_model = real

    def before(m) -> float:  # the old way: a dry run on a meta-device skeleton, then the real attach
        t = time.perf_counter()
        spec = resolve_method("lora")
        config = build_config(spec, normalize_settings(spec, {"r": 16, "target": "all-linear"}), "CAUSAL_LM", m)
        validate(spec, config, m, "default", False)
        pm.attach(m, "lora", r=16, target="all-linear")
        return time.perf_counter() - t

    variants = {"raw": raw, "ours": ours, "before": before}
    for fn in variants.values():  # warm-up: imports, method discovery, first-call costs
        fn(pm.load("smollm2").model)
    inner.clear()
    res: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(n):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for key in order:
            m = pm.load("smollm2").model
            gc.collect()
            res[key].append(variants[key](m))
            del m
    m = {k: median(v) for k, v in res.items()}
    paired = median([o / r for o, r in zip(res["ours"], res["raw"])])
    paired_before = median([b / r for b, r in zip(res["before"], res["raw"])])
    direct = median([o / i for o, i in zip(res["ours"], inner)])
    return (
        f"## Attach: `%peft lora r=16 target=all-linear` vs raw `get_peft_model` (SmolLM2-135M, n={n})\n\n"
        "| variant | median (s) | × raw (paired) |\n|---|---|---|\n"
        f"| raw `get_peft_model(model, LoraConfig(...))` | {m['raw']:.3f} | 1.00 |\n"
        f"| `pm.attach` now (structural rollback, no dry run) | {m['ours']:.3f} | **{paired:.2f}** |\n"
        f"| `pm.attach` before (meta-skeleton dry run first) | {m['before']:.3f} | {paired_before:.2f} |\n\n"
        f"Goal ≤ 1.1×. Ratio of medians {m['ours'] / m['raw']:.2f}×. Noise-free accounting: our whole attach over "
        f"the `get_peft_model` call inside it is **{direct:.3f}×** (median over the rounds): the rest is the "
        "snapshot for the rollback, the summary and the event. A failed attach still leaves the model exactly as it "
        "was (tests/test_speed.py, tests/test_magics_kernel.py, tests/test_every_method.py)."
    )


# ----------------------------------------------------------------------------- shared: one measured run


def _model(name: str):
    import torch

    import peft_magic as pm

    loaded = pm.load(name)
    torch.manual_seed(0)
    kw = {"r": 16, "target": "all-linear"} if name == "smollm2" else {"r": 8}
    return pm.attach(loaded.model, "lora", **kw).model, loaded.tokenizer


def _window(req) -> set[int]:
    """The profiled steps, and the one after (the profiler's stop and trace collection land there)."""
    return set(range(req.warmup, req.warmup + req.steps + 1))


def _phase_table(profiles: dict[str, dict]) -> str:
    names = list(profiles)
    first = next(iter(profiles.values()))
    head = "| phase | " + " | ".join(f"{n} ms/step (%)" for n in names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = ""
    for key, label, _, _ in first["phases"]:
        cells = []
        for p in profiles.values():
            row = next((r for r in p["phases"] if r[0] == key), None)
            cells.append(f"{row[2]:.1f} ({row[3]:.0%})" if row else "–")
        rows += f"| {label} | " + " | ".join(cells) + " |\n"
    rows += "| **measured step** | " + " | ".join(f"**{p['step_ms']:.1f}**" for p in profiles.values()) + " |\n"
    ops = "; ".join(f"{n}: " + ", ".join(f"`{o}` {sh:.0%}" for o, sh in p["ops"]) for n, p in profiles.items())
    hints = "; ".join(f"{n}: {h}" for n, p in profiles.items() for h in p["hints"])
    return head + rows + f"\nTop operators by self time — {ops}." + (f"\n\nHints — {hints}." if hints else "")


CASES = {  # name → (steps, batch, max_len, data)
    "tiny-llama": (40, 8, 128, lambda: texts(512, 5, 60)),
    "smollm2": (14, 4, 64, lambda: texts(256, 10, 40)),
}


# ----------------------------------------------------------------------------- 2. profile overhead


def profile_overhead() -> str:
    import peft_magic as pm
    from peft_magic.training.speed.profiler import ProfileRequest

    lines = []
    for name, (steps, batch, max_len, _) in CASES.items():
        model, tok = _model(name)
        req = ProfileRequest(steps=5, warmup=4)
        same_length = texts(256, 2 * max_len, 3 * max_len)  # every row truncated to max_len: equal steps
        run = pm.train(model, same_length, tokenizer=tok, steps=steps, batch=batch, max_len=max_len, display=None,
                       profile=req)
        secs = run.step_times.seconds
        inside = [secs[i] for i in range(req.warmup, req.warmup + req.steps)]
        outside = [secs[i] for i in range(2, len(secs)) if i not in _window(req)]
        r = median(inside) / median(outside)
        lines.append(f"| {name} | {median(outside) * 1e3:.1f} (n={len(outside)}) | {median(inside) * 1e3:.1f} "
                     f"(n={len(inside)}) | **{r:.2f}×** | {run.profile.overhead_ms:.2f} |")
    return (
        "## The profile's own cost: profiled vs unprofiled steps of the same run\n\n"
        "| model | unprofiled step, median ms | profiled step, median ms | ratio | our bookkeeping, ms/step "
        "(left out of the table) |\n|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
        "Same run, rows of equal length (every step the same work): steps 2–3 and after the window are "
        "unprofiled, steps 4–8 run under `torch.profiler` "
        "with our phase timers (the step after the window, where the trace is collected, is left out). The phase "
        "table reports the step without our bookkeeping, so its step time is comparable to an unprofiled step."
    )


# ----------------------------------------------------------------------------- 3. compile


def _profile_dict(p) -> dict:
    return {"step_ms": p.step_ms, "phases": [(r.name, r.label, r.ms, r.share) for r in p.phases],
            "ops": [(o.name, o.share) for o in p.ops[:3]], "hints": p.hints[:1]}


def compile_child(name: str, variant: str) -> dict:
    """One variant in a fresh process (fresh inductor cache, fresh dynamo state): ``eager``,
    ``plain`` (transformers' ``Trainer(torch_compile=True)`` with our data and collator) or
    ``ours`` (``pm.train(compile=True)``). Returns every step's seconds and real tokens."""
    import peft_magic as pm
    from peft_magic.tasks import data as pm_data
    from peft_magic.training.speed.profiler import ProfileRequest

    steps, batch, max_len, data = CASES[name]
    model, tok = _model(name)
    if variant == "plain":
        from transformers import Trainer, TrainerCallback, TrainingArguments
        from transformers.trainer_callback import PrinterCallback

        ex = pm_data.tokenize(data(), tok, max_len=max_len)
        coll = pm_data.Collator(tok.pad_token_id)
        secs, toks, marks = [], [], {"t": 0.0, "k": 0}

        class Clock(TrainerCallback):
            def on_train_begin(self, *a, **k):
                marks["t"], marks["k"] = time.perf_counter(), coll.tokens

            def on_step_end(self, *a, **k):
                now = time.perf_counter()
                secs.append(now - marks["t"])
                toks.append(coll.tokens - marks["k"])
                marks["t"], marks["k"] = now, coll.tokens

        args = TrainingArguments(output_dir="/tmp/pm-bench-compile", report_to="none", max_steps=steps,
                                 per_device_train_batch_size=batch, learning_rate=2e-4, save_strategy="no",
                                 remove_unused_columns=False, label_names=["labels"], logging_steps=1, seed=42,
                                 train_sampling_strategy="group_by_length", use_cpu=True, disable_tqdm=True,
                                 torch_compile=True)
        tr = Trainer(model=model, args=args, train_dataset=ex, data_collator=coll, callbacks=[Clock()])
        tr.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        tr.train()
        return {"seconds": secs, "tokens": toks, "wall": time.perf_counter() - t0, "profile": None,
                "loss": tr.state.log_history[-2].get("loss") if len(tr.state.log_history) > 1 else None}
    req = ProfileRequest(steps=4, warmup=steps - 5)  # the last steady steps, after any recompile
    t0 = time.perf_counter()
    run = pm.train(model, data(), tokenizer=tok, steps=steps, batch=batch, max_len=max_len, lr=2e-4, seed=42,
                   display=None, compile=variant == "ours", profile=req)
    wall = time.perf_counter() - t0
    assert run.status == "completed", run.message
    t = run.step_times
    return {"seconds": t.seconds, "tokens": t.tokens, "compiled": t.compiled, "wall": wall,
            "compile_seconds": run.compile_seconds, "compile_steps": run.compile_steps, "loss": run.final_loss,
            "window": sorted(_window(req)), "profile": _profile_dict(run.profile)}


def _child(kind: str, *args: str) -> dict:
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(HERE.parent), TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix="pm-ind-"))
    out = subprocess.run([sys.executable, str(Path(__file__)), "--child", kind, *args], capture_output=True,
                         text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][2:])


def _compiling(r: dict) -> list[bool]:
    """Which steps compiled: recorded by our runs; for the plain Trainer (whose compiles we
    cannot see) the steps that took over 20× the run's median step."""
    if r.get("compiled"):
        return r["compiled"]
    pace = median(r["seconds"])
    return [s > 20 * pace for s in r["seconds"]]


def compile_vs_eager(models: list[str], rounds: dict[str, int]) -> str:
    """Every variant sees the same batches in the same order (same seed, same sampler), so
    step i is the same work in each: the speed-up is the median of per-step paired ratios
    over the steps that are steady in every variant (after the first, not compiling, not in
    the profile window), pooled over the rounds."""
    rows, splits = [], []
    for name in models:
        variants = ["eager", "plain", "ours"] if name == "tiny-llama" else ["eager", "ours"]
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for i in range(rounds[name]):
            for v in (variants if i % 2 == 0 else list(reversed(variants))):
                runs[v].append(_child("compile", name, v))
        n_steps = len(runs["eager"][0]["seconds"])
        ratios: dict[str, list[float]] = {v: [] for v in variants}
        tps: dict[str, list[float]] = {v: [] for v in variants}
        for k in range(rounds[name]):
            rs = {v: runs[v][k] for v in variants}
            bad = set(rs["ours"].get("window") or []) | {0}
            for r in rs.values():
                bad |= {i for i, c in enumerate(_compiling(r)) if c}
            idx = [i for i in range(n_steps) if i not in bad]
            for v, r in rs.items():
                tps[v].append(sum(r["tokens"][i] for i in idx) / sum(r["seconds"][i] for i in idx))
                ratios[v] += [rs["eager"]["seconds"][i] / r["seconds"][i] for i in idx]
        n_idx = len(ratios["eager"])
        for v in variants:
            comp = [sum(s - median(r["seconds"]) for s, c in zip(r["seconds"], _compiling(r)) if c) for r in runs[v]]
            ncomp = sum(_compiling(runs[v][0]))
            label = {"eager": "eager (`pm.train`)", "plain": "`Trainer(torch_compile=True)` (plain transformers)",
                     "ours": "`pm.train(compile=True)`"}[v]
            comp_text = "–" if v == "eager" else f"{median(comp):.1f} s ({ncomp} compiling step{'s' * (ncomp != 1)})"
            rows.append(f"| {name} | {label} | {median(tps[v]):,.0f} | **{median(ratios[v]):.2f}×** | {comp_text} | "
                        f"{median([r['wall'] for r in runs[v]]):.0f} s |")
        profiles = {("eager" if v == "eager" else "compile=True"): runs[v][0]["profile"] for v in ("eager", "ours")}
        steps, batch, max_len, _ = CASES[name]
        splits.append(f"### Phase split, {name} (batch {batch}, max_len {max_len}, LoRA; the profile's last 4 "
                      "steps, first round)\n\n" + _phase_table(profiles))
        rows.append(f"| | _{rounds[name]} round(s), {n_idx} paired steady steps_ | | | | |")
    return (
        "## `compile=True` vs eager: steady-state real tokens/s on CPU\n\n"
        "| model | variant | steady tokens/s (median over rounds) | speed-up vs eager (median of per-step paired "
        "ratios) | compile time | run wall time |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Each variant runs in a fresh process with a fresh inductor cache (none reuses another's compiled "
        "kernels), rounds alternate the order. Every variant trains on the same batches in the same order, so a "
        "step is the same work in each: steady steps are those after the first that compile in no variant and "
        "sit outside the profile window. Tokens are real (non-padding) tokens; batch lengths vary (dynamic "
        "padding, grouped by length). `pm.train(compile=True)` compiles once, with dynamic shapes from the "
        "first batch; the plain Trainer compiles the first shape, then again with dynamic shapes. Compile time "
        "is what the compiling steps took beyond the run's median step.\n\n" + "\n\n".join(splits)
    )


# ----------------------------------------------------------------------------- 4. checkpointing

_CKPT_CHILD = r'''
import json, os, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
import peft_magic as pm
sys.path.insert(0, {here!r})
from bench_speed import _model, texts
on = {on}
model, tok = _model("smollm2")
data = texts(256, 40, 120, seed=1)
# exact: the bytes the forward keeps for the backward (each storage once), at the run's shape
enc = tok(data[:4], return_tensors="pt", padding="max_length", truncation=True, max_length=64)
model.train(); model.config.use_cache = False
if on:
    model.activation_checkpointing_enable()
# weights the backward needs (a frozen matmul saves its weight) are not activations: skip them
seen = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
saved = [0]
def pack(t):
    s = t.untyped_storage()
    if s.data_ptr() not in seen:
        seen.add(s.data_ptr()); saved[0] += s.nbytes()
    return t
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    loss = model(**enc, labels=enc["input_ids"]).loss
del loss
if on:
    model.activation_checkpointing_disable(); model.disable_input_require_grads()
model.zero_grad(set_to_none=True)
import gc; gc.collect()
from peft_magic.memory import reading
rss0 = reading("cpu").used
run = pm.train(model, data, tokenizer=tok, steps=5, batch=4, max_len=64, display=None, checkpointing=on)
t = run.step_times
steps = [t.seconds[i] for i in range(1, len(t.seconds))]
c = run.checkpointing
print("@@" + json.dumps(dict(saved=saved[0], rise=run.peak_memory - rss0, peak=run.peak_memory,
                           step=statistics.median(steps), recompute=c.recompute_share if c else None,
                           planned=[c.activations_with, c.activations_without] if c else None)))
'''


def checkpointing(n: int = 3) -> str:
    from peft_magic.fmt import fmt_bytes

    res: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(n):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            code = _CKPT_CHILD.replace("{here!r}", repr(str(HERE))).replace("{on}", str(on))
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")][-1]
            res[on].append(json.loads(line[2:]))

    def med(on: bool, key: str) -> float:
        return median([r[key] for r in res[on]])

    planned = res[True][0]["planned"]
    step_ratio = med(True, "step") / med(False, "step")
    return (
        f"## Gradient checkpointing on / off (SmolLM2-135M, LoRA r=16 all-linear, batch 4 × seq 64, n={n} "
        "processes each)\n\n"
        "| | off | on | on / off |\n|---|---|---|---|\n"
        f"| activations kept for the backward (exact, weights excluded) | {fmt_bytes(med(False, 'saved'))} | "
        f"{fmt_bytes(med(True, 'saved'))} | {med(True, 'saved') / med(False, 'saved'):.2f} |\n"
        f"| peak RAM during training (process RSS) | {fmt_bytes(med(False, 'peak'))} | {fmt_bytes(med(True, 'peak'))} "
        f"| {med(True, 'peak') / med(False, 'peak'):.2f} |\n"
        f"| peak rise over the RAM before training | {fmt_bytes(med(False, 'rise'))} | {fmt_bytes(med(True, 'rise'))} "
        f"| {med(True, 'rise') / max(1, med(False, 'rise')):.2f} |\n"
        f"| median step time | {med(False, 'step'):.2f} s | {med(True, 'step'):.2f} s | **{step_ratio:.2f}×** |\n\n"
        f"The plan's activations for this run (what the display shows): {fmt_bytes(planned[1])} → "
        f"{fmt_bytes(planned[0])}; the measured recompute share of the step time (what the display shows): "
        f"{med(True, 'recompute'):.0%}. Each variant runs in a fresh process (alternating order), because a "
        "process's RSS does not shrink after a peak."
    )


# ----------------------------------------------------------------------------- 5. completion data

PIRATE = [{"prompt": f"What is the capital of {c}?", "completion": f"Arr, that be {a}, matey!"}
          for c, a in [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"),
                       ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Greece", "Athens")]]


def completion_loss(n: int = 3, steps: int = 8) -> str:
    """``fused_loss=auto`` vs ``False`` on prompt/completion rows, batch 4 and 2: the whole
    ``train`` call's seconds (median of ``n``, alternating), which loss ``auto`` chose, and
    the last logged loss of each (they must be equal)."""
    import torch

    import peft_magic as pm

    loaded = pm.load("smollm2")
    rows = []
    for batch in (4, 2):
        secs: dict[str, list[float]] = {"auto": [], "off": []}
        last: dict[str, float] = {}
        path = ""
        for _ in range(n):
            for which in ("off", "auto"):
                torch.manual_seed(0)
                m = pm.attach(loaded.model, "lora", name="bench").model
                t0 = time.perf_counter()
                run = pm.train(m, PIRATE, tokenizer=loaded.tokenizer, steps=steps, batch=batch, lr=3e-3, seed=1,
                               autosave=False, display=None, fused_loss=which if which == "auto" else False)
                secs[which].append(time.perf_counter() - t0)
                last[which] = run.losses[-1][1]
                if which == "auto":
                    path = run.loss_path
                pm.detach(m)
                gc.collect()
        longest = max(len(loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}],
            tokenize=True, return_dict=True)["input_ids"]) for r in PIRATE)
        logits_mb = 4 * 49152 * batch * longest / 1e6
        rel = abs(last["auto"] - last["off"]) / abs(last["off"])
        rows.append(f"| {batch} | {logits_mb:.0f} MB | {path} | {median(secs['off']):.2f} s | "
                    f"{median(secs['auto']):.2f} s | **{median(secs['auto']) / median(secs['off']):.3f}×** | {rel:.1e} |")
    return "\n".join([
        "### The loss on completion data: `fused_loss=auto` vs `False` (SmolLM2 + LoRA)",
        "",
        (f"{steps} steps on 8 prompt/completion rows (SmolLM2's chat template: most positions are the prompt's), "
         f"the whole `train` call, median of {n} alternating runs; the logits are one fp32 copy for the longest row."),
        "",
        "| batch | logits (fp32) | auto ran | fused_loss=False | auto | auto / False | last loss, rel. diff |",
        "|---:|---:|---|---:|---:|---:|---:|",
        *rows,
    ])


def main(parts: list[str]) -> None:
    import torch  # noqa: F401  (the setting line reads its version)

    print(setting(), flush=True)
    foot = f"\n\n{setting()}."
    sections = {  # part → (RESULTS.md section, what measures it)
        "attach": ("speed-attach", attach),
        "profile": ("speed-profile", profile_overhead),
        "compile": ("speed-compile",
                    lambda: compile_vs_eager(["tiny-llama", "smollm2"], {"tiny-llama": 3, "smollm2": 1})),
        "checkpointing": ("speed-checkpointing", checkpointing),
        "completion": ("speed-completion-loss", completion_loss),
    }
    for part, (section, measure) in sections.items():
        if part in parts:
            body = measure()
            write_section(section, body + foot)
            print(body, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _threads()
        print("@@" + json.dumps(compile_child(*sys.argv[3:5])), flush=True)
    else:
        _threads()
        main(sys.argv[1:] or ["attach", "profile", "compile", "checkpointing", "completion"])
