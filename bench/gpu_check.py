"""Every check that needs a CUDA GPU, in one run: ``make gpu-check`` runs this, then the
tests marked ``device`` with the GPU visible.

On a CUDA machine (about 3 minutes on one H100; the whole of ``make gpu-check`` stays under 8)
it checks, and writes the figures to bench/RESULTS.md (section ``gpu_check``):

1. **QLoRA on CUDA** — a 1B-class Llama (random weights) loaded in 4-bit NF4, LoRA on every
   linear layer, real training steps; the live display's memory readout (what the
   progress events carry: the allocator's ``used`` / ``peak``, and NVML's figure for this
   process) against NVML read independently at the same moment (``nvidia-ml-py``);
2. **``%peft plan`` vs the measured peak** — ``bench/gpu_plan_check.py``'s comparison, two
   sizes, for LoRA, QLoRA and full fine-tuning on the same model;
3. **``compile=True`` on CUDA** — eager and compiled runs of the same seeded steps in
   float32: the same losses (1e-4 relative), what compiling cost, steady tokens/s of each;
4. **bf16 and SDPA** — what ``%peft load`` picks on this GPU (bf16, SDPA attention) against
   float32 with eager attention: losses that agree to bf16's precision, tokens/s of each;
5. **``--gpus all``** — with two or more GPUs, ``bench/gpu_check_distributed.py`` (each
   strategy trained for real against its per-GPU plan); with one, the refusal of
   ``--gpus 2`` and the dry run of each strategy.

Without CUDA it says so in one line and runs the same checks as far as they go on the CPU
(the dry path: tiny-llama, two steps each, 4-bit through bitsandbytes' CPU backend, the
process RAM readout against psutil, ``compile=True`` with dynamo's ``eager`` backend so no
C++ build is waited for, ``--gpus`` refusals and dry runs); it writes no figures.
``tests/test_gpu_check.py`` runs that path, so the script cannot rot unnoticed.

Each check raises on a wrong result (a loss that did not fall, a readout that disagrees
with NVML, losses that differ): the script exits 1 naming every check that failed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXTS = [f"Example {i}: the quick brown fox jumps over the lazy dog {'and runs ' * (i % 7)}." for i in range(256)]
SAME_LENGTH = ["one two three four five six seven eight nine ten eleven twelve"] * 64


class CheckFailed(AssertionError):
    """A check saw a wrong result."""


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


@dataclass
class Ctx:
    cuda: bool
    steps: int
    model_path: str = ""  # the checkpoint the CUDA checks load (a random-weight 1B Llama)
    tokenizer: object = None
    sections: list[str] = field(default_factory=list)


def _fmt(n: float | None) -> str:
    from peft_magic.fmt import fmt_bytes

    return fmt_bytes(n) if n is not None else "–"


def _nvml_process_bytes() -> int | None:
    """This process's memory on GPU 0, read from NVML directly (not through peft_magic)."""
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if p.pid == os.getpid() and p.usedGpuMemory is not None:
            return int(p.usedGpuMemory)
    return None


def _losses(run) -> list[float]:
    return [loss for _, loss in run.losses]


def _tokens_per_s(run) -> float:
    """Steady tokens/s (after the first step, without compiling steps), else the run's overall rate."""
    return run.steady_tokens_per_s or (run.tokens / run.seconds if run.seconds else 0.0)


# ----------------------------------------------------------------------------- 1. QLoRA + readout


def check_qlora(ctx: Ctx) -> tuple[str, str]:
    import psutil

    import peft_magic as pm

    source = ctx.model_path if ctx.cuda else "tiny-llama"
    loaded = pm.load(source, bits=4)
    q = loaded.model.model.layers[0].self_attn.q_proj
    expect(type(q).__name__ == "Linear4bit" and q.weight.quant_state.quant_type == "nf4", f"not NF4: {type(q)}")
    model = pm.attach(loaded.model, "qlora", r=16, target="all-linear").model
    seen: list[tuple[dict, int | None]] = []

    def on(e) -> None:  # what the live display is handed, and NVML / psutil at the same moment
        if e.kind == "progress" and e.data.get("memory"):
            independent = _nvml_process_bytes() if ctx.cuda else psutil.Process().memory_info().rss
            seen.append((dict(e.data["memory"]), independent))

    stop = pm.subscribe(on)
    try:
        run = pm.train(model, TEXTS, tokenizer=ctx.tokenizer, steps=ctx.steps * 10 if ctx.cuda else ctx.steps,
                       batch=8, max_len=128, lr=2e-3, logging_steps=1, display=None)
    finally:
        stop()
    losses = _losses(run)
    expect(run.status == "completed" and all(math.isfinite(x) for x in losses), f"run {run.status}: {losses}")
    if ctx.cuda:
        expect(losses[-1] < losses[0], f"QLoRA loss did not fall: {losses[0]:.4f} → {losses[-1]:.4f}")
    expect(bool(seen), "no progress event carried a memory reading")
    mem, independent = seen[-1]
    if not ctx.cuda:
        expect(mem["kind"] == "RAM", f"the CPU readout is {mem['kind']}")
        expect(abs(mem["used"] - independent) < 256 * 2**20, f"RAM readout {mem['used']} vs psutil {independent}")
        summary = f"QLoRA (NF4, CPU) {len(losses)} steps, RAM readout {_fmt(mem['used'])} vs psutil {_fmt(independent)}"
    else:
        expect(mem["kind"] == "CUDA", f"the GPU readout is {mem['kind']}")
        expect(independent is not None, "NVML does not list this process (nvidia-ml-py missing?)")
        expect(mem.get("process") is not None, "the readout has no NVML figure: pip install nvidia-ml-py")
        # NVML sees the whole process: the CUDA context and the allocator's reserve on top of live tensors
        expect(mem["used"] <= mem["reserved"] <= independent,
               f"used {mem['used']} ≤ reserved {mem['reserved']} ≤ NVML {independent} does not hold")
        expect(abs(mem["process"] - independent) <= 64 * 2**20, f"readout's NVML {mem['process']} vs NVML {independent}")
        summary = f"QLoRA (NF4, CUDA) {len(losses)} steps, readout {_fmt(mem['used'])}, NVML {_fmt(independent)}"
    step_s = run.seconds / max(1, run.steps_done)
    other = "NVML" if ctx.cuda else "psutil (resident set)"
    beyond = independent - mem["reserved"] if ctx.cuda else None
    return summary, (
        f"## QLoRA (4-bit NF4): the live display's memory readout vs {other}\n\n"
        f"{'1B-class Llama (random weights)' if ctx.cuda else 'tiny-llama'}, LoRA r=16 on every linear layer, "
        f"batch 8 × ≤128 tokens, {run.steps_done} steps, {step_s:.2f} s/step; loss {losses[0]:.3f} → {losses[-1]:.3f}."
        "\n\n| at the last progress event | bytes |\n|---|---|\n"
        f"| display: used ({'live tensors, `memory_allocated`' if ctx.cuda else 'process RAM'}) | {_fmt(mem['used'])} |\n"
        f"| display: peak | {_fmt(mem.get('peak'))} |\n"
        f"| allocator reserve (`memory_reserved`) | {_fmt(mem.get('reserved'))} |\n"
        f"| display: this process per NVML | {_fmt(mem.get('process'))} |\n"
        f"| {other} read independently | {_fmt(independent)} |\n"
        f"| NVML − reserve (CUDA context, cuBLAS workspace) | {_fmt(beyond)} |\n")


# ----------------------------------------------------------------------------- 2. plan vs peak


def check_plan(ctx: Ctx) -> tuple[str, str]:
    import gpu_plan_check

    if ctx.cuda:
        rows = gpu_plan_check.check(ctx.model_path, [(1, 256), (4, 512)], ["lora", "qlora", "full"])
    else:
        rows = gpu_plan_check.check(gpu_plan_check.build_model_folder("tiny-llama"), [(2, 32)], ["lora", "qlora"])
    expect(all(r.get("measured_peak") for r in rows), f"a plan row was not measured: {rows}")
    worst = max(abs((r["est_peak"] - r["measured_peak"]) / r["measured_peak"]) for r in rows)
    return f"plan vs measured: {len(rows)} rows, largest step-peak error {worst:.1%}", (
            "## `%peft plan` vs the measured peak (1B-class Llama, random weights)\n\n"
            "Two real steps per row (AdamW, lr=0), peak of the second; step peak: activations + gradients at "
            "their joint peak; total: the plan without its runtime overhead vs `max_memory_allocated`.\n\n"
            + gpu_plan_check.table(rows) + f"\n\nLargest step-peak error: {worst:.1%}.\n")


# ----------------------------------------------------------------------------- 3. compile=True


def check_compile(ctx: Ctx) -> tuple[str, str]:
    import torch

    import peft_magic as pm

    runs = {}
    for compiled in (False, True):
        loaded = pm.load("tiny-llama", dtype="fp32")
        torch.manual_seed(0)
        model = pm.attach(loaded.model, "lora", r=8).model
        extra = {} if ctx.cuda else {"compile_backend": "eager"}  # dry path: dynamo, no C++ build
        runs[compiled] = pm.train(model, SAME_LENGTH, tokenizer=loaded.tokenizer, steps=15 if ctx.cuda else 3,
                                  batch=8, lr=1e-2, seed=0, display=None, compile=compiled,
                                  **(extra if compiled else {}))
    eager, comp = _losses(runs[False]), _losses(runs[True])
    expect(runs[True].status == "completed", f"compiled run: {runs[True].status} {runs[True].message}")
    expect(len(eager) == len(comp) and all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(eager, comp)),
           f"compiled losses differ: {eager} vs {comp}")
    r = runs[True]
    expect(r.compile_steps >= 1 and r.compile_seconds > 0, f"compiling was not seen: {r!r}")
    how = "inductor" if ctx.cuda else "dynamo, eager backend"
    speed = f"{_tokens_per_s(r):,.0f} vs eager {_tokens_per_s(runs[False]):,.0f} tokens/s"
    return f"compile=True ({how}) {len(comp)} steps, same losses", (
            f"## `compile=True` ({how}; tiny-llama, LoRA r=8, float32, batch 8)\n\n"
            f"{len(comp)} seeded steps each: losses equal within 1e-4 relative (max relative difference "
            f"{max(abs(a - b) / abs(a) for a, b in zip(eager, comp)):.1e}); compiled in {r.compile_seconds:.1f} s "
            f"over {r.compile_steps} step(s); steady state {speed}.\n")


# ----------------------------------------------------------------------------- 4. bf16 / SDPA


def check_bf16_sdpa(ctx: Ctx) -> tuple[str, str]:
    import torch

    import peft_magic as pm

    source = ctx.model_path if ctx.cuda else "tiny-llama"
    runs, facts = {}, {}
    for name, dtype, attn in (("auto", None, None), ("fp32-eager", "fp32", "eager")):
        loaded = pm.load(source, dtype=dtype if ctx.cuda else (dtype or "bf16"))
        if attn:
            loaded.model.set_attn_implementation(attn)
        torch.manual_seed(0)
        model = pm.attach(loaded.model, "lora", r=16, target="all-linear").model
        facts[name] = (loaded.dtype, loaded.model.config._attn_implementation)
        runs[name] = pm.train(model, TEXTS, tokenizer=ctx.tokenizer, steps=ctx.steps * 10 if ctx.cuda else ctx.steps,
                              batch=8, max_len=128, lr=1e-3, seed=0, display=None)
    dtype, attn = facts["auto"]
    if ctx.cuda:
        expect(dtype in ("bfloat16", "float16"), f"%peft load picked {dtype} on CUDA")
    expect(attn == "sdpa", f"%peft load's attention is {attn}, not sdpa")
    a, b = _losses(runs["auto"]), _losses(runs["fp32-eager"])
    expect(all(math.isfinite(x) for x in a + b), f"non-finite losses: {a} {b}")
    expect(abs(a[0] - b[0]) <= 0.02 * abs(b[0]), f"first losses differ beyond bf16's precision: {a[0]} vs {b[0]}")
    ta, tb = _tokens_per_s(runs["auto"]), _tokens_per_s(runs["fp32-eager"])
    return f"{dtype} + {attn} vs fp32 + eager: first loss {a[0]:.4f} vs {b[0]:.4f}", (
            "## bf16 and SDPA (LoRA r=16 all-linear, batch 8 × ≤128)\n\n"
            "| load | dtype | attention | first → last loss | tokens/s |\n|---|---|---|---|---|\n"
            f"| `%peft load` (auto) | {dtype} | {attn} | {a[0]:.3f} → {a[-1]:.3f} | {ta:,.0f} |\n"
            f"| `dtype=fp32`, eager attention | {facts['fp32-eager'][0]} | {facts['fp32-eager'][1]} | "
            f"{b[0]:.3f} → {b[-1]:.3f} | {tb:,.0f} |\n\n" + (f"bf16 + SDPA: {ta / tb:.2f}× the tokens/s.\n" if tb else ""))


# ----------------------------------------------------------------------------- 5. --gpus all


def check_gpus(ctx: Ctx) -> tuple[str, str]:
    import peft_magic as pm
    from peft_magic.errors import PeftMagicError
    from peft_magic.training.distributed.dryrun import dry_run
    from peft_magic.training.distributed.strategies import cuda_count

    have = cuda_count()
    if have >= 2:
        import gpu_check_distributed

        sys.argv = [sys.argv[0], "--model", "tiny-llama", "--batch", "4", "--seq", "256", "--steps", "5"]
        gpu_check_distributed.main()  # writes its own section, distributed_gpu
        return f"{have} GPUs: every strategy trained", (
            f"## `--gpus all` strategies\n\n{have} GPUs: see the section `--gpus all` below.\n")
    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, "lora", r=4).model
    for strategy in ("ddp", "fsdp", "deepspeed"):
        text = repr(dry_run(model, gpus=2, strategy=strategy, batch=4))
        expect(text.startswith("Dry run (nothing started): 2 GPUs"), text[:200])
    try:
        pm.train(model, TEXTS[:8], tokenizer=loaded.tokenizer, gpus=2, steps=1, display=None)
    except PeftMagicError as e:
        refusal = str(e)
    else:
        raise CheckFailed("--gpus 2 was not refused on a machine with fewer than 2 GPUs")
    expect(("no CUDA GPU" in refusal) if have == 0 else (f"this machine has {have} GPU" in refusal), refusal)
    return f"--gpus: dry runs of 3 strategies, refusal: {refusal}", (
            f"## `--gpus all` strategies\n\n{have} GPU{'s' if have != 1 else ''} here: the strategies need two or more (run "
            f"`python bench/gpu_check_distributed.py` on such a machine). `--gpus 2` is refused before anything "
            f"starts: \"{refusal}\"; the dry run of ddp, fsdp and deepspeed shows each launch.\n")


CHECKS = [("QLoRA 4-bit training and the VRAM readout vs NVML", check_qlora),
          ("%peft plan vs measured peak", check_plan),
          ("compile=True", check_compile),
          ("bf16 / SDPA", check_bf16_sdpa),
          ("--gpus all strategies", check_gpus)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="the CPU dry path even where there is a GPU")
    ap.add_argument("--only", default="", help="comma-separated check numbers (1-5) to run")
    args = ap.parse_args(argv)

    import tempfile

    import torch

    import peft_magic as pm
    from peft_magic.settings import configure

    # the checks' runs autosave like any run: into a scratch folder, not the caller's checkpoints/
    configure(checkpoint_dir=tempfile.mkdtemp(prefix="gpu-check-"))
    cuda = torch.cuda.is_available() and not args.dry
    if not cuda:
        why = "--dry" if torch.cuda.is_available() else "no CUDA GPU"
        print(f"{why}: gpu-check runs its CPU dry path (tiny-llama, 2 steps per check) and writes no figures")
    ctx = Ctx(cuda=cuda, steps=3 if cuda else 2, tokenizer=pm.load("tiny-llama").tokenizer)
    if cuda:
        import gpu_plan_check

        ctx.model_path = gpu_plan_check.build_model_folder("1b")
    only = {int(x) for x in args.only.split(",") if x}
    failed, t_all = [], time.perf_counter()
    for i, (title, fn) in enumerate(CHECKS, 1):
        if only and i not in only:
            continue
        t0 = time.perf_counter()
        try:
            summary, section = fn(ctx)
        except Exception as e:  # every check runs; each failure is named at the end
            failed.append(f"{i}. {title}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            print(f"[FAIL] {i}. {title} ({time.perf_counter() - t0:.0f} s)")
            traceback.print_exc()
            continue
        print(f"[ok] {i}. {title} ({time.perf_counter() - t0:.0f} s): {summary}")
        ctx.sections.append(section)  # built on both paths (so the dry path exercises it), written on CUDA
    if cuda and ctx.sections:
        from _results import write_section

        head = (f"## GPU check (`make gpu-check`): {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}\n\n")
        write_section("gpu_check", head + "\n".join(s.replace("## ", "### ", 1) for s in ctx.sections))
        print(f"figures written to {HERE / 'RESULTS.md'} (section gpu_check)")
    print(f"gpu-check: {len(CHECKS) - len(failed) if not only else len(only) - len(failed)} passed, "
          f"{len(failed)} failed in {time.perf_counter() - t_all:.0f} s")
    for f in failed:
        print("  failed:", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
