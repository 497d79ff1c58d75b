"""Check the fused loss on a CUDA GPU: every kernel against the model's own loss, and memory.

Run on a CUDA machine (``make gpu-check`` should run it)::

    python bench/gpu_fused_loss_check.py            # SmolLM2 + LoRA r=8, bf16, batch 8 × 512

For each kernel that is installed (``chunked`` always; ``liger`` with ``liger-kernel``,
``cce`` with ``cut-cross-entropy``) and for the model's own loss: one real training step
through ``peft_magic``'s ``train`` (the Trainer, bf16 autocast, the first-step probe) at a
learning rate of 1e-12, recording the first loss, every LoRA gradient
(``register_post_accumulate_grad_hook``), ``torch.cuda.max_memory_allocated`` above what
the loaded model holds, and the steady step time over 4 more steps. Printed and written to
bench/RESULTS.md (section ``fused_loss_gpu``): loss and gradient differences (bf16: within
2e-2 relative is expected; fp32 with ``--fp32``: 1e-5), peak ratios, tokens/s ratios, and
which path each run took (``run.loss_path``: a library refused on this GPU falls back).
Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore")


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped (the CPU side is tests/test_fused_loss.py and bench/bench_memory.py)")
        return 0
    import peft_magic as pm
    from _results import write_section
    from peft_magic import fused_loss
    from peft_magic.training.run import train

    dtype = "float32" if a.fp32 else "bfloat16"
    words = "the model learns a little from every example and the logits never exist in full".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(a.seq + 32)) for i in range(a.batch * 5)]
    paths = ["off", "chunked"] + [k for k in ("liger", "cce") if fused_loss.available(k)]
    rows, ref = [], None
    for path in paths:
        torch.manual_seed(0)
        loaded = pm.load("smollm2", dtype=dtype, device="cuda")
        model = pm.attach(loaded.model, "lora", r=8, init_lora_weights=False).model
        grads: dict[str, torch.Tensor] = {}
        hooks = [p.register_post_accumulate_grad_hook(
            lambda p, n=n: grads.setdefault(n, p.grad.detach().float().clone()))
            for n, p in model.named_parameters() if p.requires_grad]
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run = train(model, texts, tokenizer=loaded.tokenizer, steps=5, batch=a.batch, max_len=a.seq, lr=1e-12,
                    max_grad_norm=0, fused_loss=path if path != "off" else False)
        peak = torch.cuda.max_memory_allocated() - base
        for h in hooks:
            h.remove()
        step = run.step_times.steady_step_s or 0.0
        rec = {"path": path, "loss_path": run.loss_path, "loss": run.losses[0][1], "peak": peak, "step": step,
               "grads": grads, "status": run.status}
        if ref is None:
            ref = rec
        dl = abs(rec["loss"] - ref["loss"]) / abs(ref["loss"])
        dg = max(float((g - ref["grads"][n]).norm() / ref["grads"][n].norm()) for n, g in grads.items())
        rows.append(f"| {path} | {run.loss_path} | {rec['loss']:.6f} | {dl:.1e} | {dg:.1e} | {peak / 2**30:.2f} GiB | "
                    f"{peak / ref['peak']:.2f}× | {a.batch * a.seq / step if step else 0:,.0f} | "
                    f"{ref['step'] / step if step else 0:.2f}× |")
        print(rows[-1], flush=True)
        del model, loaded
        torch.cuda.empty_cache()
    body = "\n".join([
        f"## Fused loss on {torch.cuda.get_device_name()} (SmolLM2 + LoRA r=8, {dtype}, batch {a.batch} × {a.seq})", "",
        "| fused_loss | path taken | first loss | loss diff | worst grad diff | peak above model | vs own | tokens/s "
        "| vs own |", "|---|---|---:|---:|---:|---:|---:|---:|---:|", *rows])
    write_section("fused_loss_gpu", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
