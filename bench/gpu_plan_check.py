"""Check ``%peft plan``'s estimates against ``torch.cuda`` peak memory of real training steps.

Run on a CUDA machine::

    python bench/gpu_plan_check.py                 # a 1B-class Llama (random weights), bf16
    python bench/gpu_plan_check.py --model smollm2 # or any folder with a checkpoint
    python bench/gpu_plan_check.py --quick         # fewer sizes

For each method (LoRA, QLoRA, prompt tuning, full fine-tuning) and several batch × seq
sizes it plans from the config alone (meta device, nothing loaded), then loads the model
for real on the GPU, attaches the method and runs two real training steps (forward,
backward, AdamW with lr=0) through ``peft_magic.planning.measure``, which reads
``torch.cuda.max_memory_allocated`` around the second step. The table compares

* the step peak (activations + gradients at their joint peak) — the plan's traced
  estimate vs the allocator's peak above what was allocated before the step;
* the total — the plan's total without its runtime overhead (CUDA context, fragmentation
  margin: not part of ``memory_allocated``) vs ``max_memory_allocated`` during the step.

Without CUDA it says it skipped the CUDA comparison and runs the same comparison on CPU
for a tiny model (live tensor bytes), so the script itself is always exercised. Results
of a CUDA run go to bench/RESULTS.md (section ``plan_gpu``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = {
    "lora": {"r": 16, "target_modules": "all-linear"},
    "qlora": {"r": 16, "target_modules": "all-linear"},
    "prompt": {"num_virtual_tokens": 20},
    "full": {},
}


def _fmt(n: float) -> str:
    from peft_magic.fmt import fmt_bytes

    return fmt_bytes(n)


def build_model_folder(kind: str) -> str:
    """A checkpoint folder to load for real: a built-in, a path, or a random-weight Llama."""
    import torch
    import transformers

    if kind not in ("1b", "small"):
        from peft_magic.model.builtins import resolve_builtin, materialize

        return str(materialize(kind)) if resolve_builtin(kind) else kind
    dims = {"1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
            "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                          num_key_value_heads=4, vocab_size=8192)}[kind]
    out = Path(tempfile.gettempdir()) / f"peft_magic_plan_check_{kind}"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(max_position_embeddings=4096, tie_word_embeddings=False, **dims)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(out)
        del model
    return str(out)


def check(path: str, sizes: list[tuple[int, int]], methods: list[str]) -> list[dict]:
    import torch

    import peft_magic as pm
    from peft_magic.planning.measure import measure

    rows = []
    for method in methods:
        settings = METHODS[method]
        for batch, seq in sizes:
            plan = pm.plan(path, method, batch=batch, seq=seq, limits=False, **settings)
            est = plan[method]
            if est.parts is None:
                rows.append({"method": method, "batch": batch, "seq": seq, "error": est.error})
                continue
            loaded = pm.load(path, bits=4 if method == "qlora" else None)
            model = loaded.model
            if method != "full":
                model = pm.attach(model, method, **settings).model
            cuda = torch.cuda.is_available()
            try:
                m = measure(model, batch=batch, seq=seq)
                measured_peak = m.measured_peak
                if cuda:
                    total_measured = torch.cuda.max_memory_allocated()
                else:
                    total_measured = m.measured.total
                error = None
            except torch.cuda.OutOfMemoryError if cuda else MemoryError as e:  # noqa: B030
                measured_peak = total_measured = None
                error = f"OOM: {str(e).splitlines()[0][:80]}"
            est_peak = est.parts.activations + est.parts.gradients - est.overlap
            est_total = est.total - est.parts.overhead - est.overlap
            rows.append({"method": method, "label": est.label, "batch": batch, "seq": seq,
                         "est_peak": est_peak, "measured_peak": measured_peak,
                         "est_total": est_total, "measured_total": total_measured,
                         "verdict": est.verdict, "error": error})
            del model, loaded
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | batch × seq | step peak: plan | measured | error | total: plan | measured | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error") and r.get("measured_peak") is None:
            lines.append(f"| {r['method']} | {r['batch']} × {r['seq']} | – | – | {r['error']} | – | – | – |")
            continue
        pe = (r["est_peak"] - r["measured_peak"]) / r["measured_peak"] if r["measured_peak"] else 0.0
        te = (r["est_total"] - r["measured_total"]) / r["measured_total"] if r["measured_total"] else 0.0
        lines.append(f"| {r['label']} | {r['batch']} × {r['seq']} | {_fmt(r['est_peak'])} | "
                     f"{_fmt(r['measured_peak'])} | {pe:+.1%} | {_fmt(r['est_total'])} | {_fmt(r['measured_total'])} | "
                     f"{te:+.1%} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="1b", help="1b (random-weight Llama, default), small, a built-in or a path")
    ap.add_argument("--quick", action="store_true", help="two sizes instead of four")
    ap.add_argument("--methods", default="lora,qlora,prompt,full")
    args = ap.parse_args()

    import torch

    methods = [m for m in args.methods.split(",") if m]
    if not torch.cuda.is_available():
        print("CUDA is not available: skipped the CUDA comparison. Running the same check on CPU "
              "(live tensor bytes of a real step) for tiny-llama instead.")
        rows = check(build_model_folder("tiny-llama"), [(2, 32), (4, 64)], ["lora", "qlora", "prompt"])
        print(table(rows))
        return 0

    t0 = time.perf_counter()
    sizes = [(1, 256), (4, 512)] if args.quick else [(1, 256), (4, 512), (8, 1024), (2, 2048)]
    path = build_model_folder(args.model)
    rows = check(path, sizes, methods)
    body = table(rows)
    name = torch.cuda.get_device_name(0)
    header = (f"## `%peft plan` vs `torch.cuda` peak memory\n\nModel: `{args.model}`, {name}, torch "
              f"{torch.__version__}; two real steps per row (AdamW, lr=0), peak of the second. Step peak: "
              "activations + gradients at their joint peak; total: plan without its runtime overhead vs "
              "`max_memory_allocated`.\n\n")
    print(header + body)
    print(f"({time.perf_counter() - t0:.0f} s)")
    from _results import write_section

    write_section("plan_gpu", header + body)
    worst = max((abs((r["est_peak"] - r["measured_peak"]) / r["measured_peak"]) for r in rows
                 if r.get("measured_peak")), default=0.0)
    print(f"largest step-peak error: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
