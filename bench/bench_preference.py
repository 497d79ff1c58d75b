"""Preference tuning: the memory of a DPO step against a supervised step, and peft_magic's
DPO against plain TRL (loss and time), on SmolLM2-135M with LoRA r=8.

Three variants, each in a fresh process (a process's RSS does not shrink after a peak),
alternating, all from the same initial adapter (saved once, loaded by each) and on data of
one length (every sequence prompt + answer has the same number of tokens):

* ``sft`` — ``%peft train`` on prompt → completion (the chosen answers), batch B, as it
  runs by default (``fused_loss=auto``: at this size the loss is computed without the logits);
* ``sft_std`` — the same with ``fused_loss=False`` (the model's own loss, full logits);
* ``dpo`` — ``%peft train objective=dpo`` on the pairs, batch B (2·B sequences, plus the
  reference forward with the adapter off);
* ``trl`` — plain TRL: ``DPOTrainer`` on a ``PeftModel`` (no peft_magic), the same config.

Peak memory is the exact high-water mark of the process's RSS (Linux ``VmHWM``, reset
just before training starts) above the RSS at that moment: what training adds on top of
the loaded model. The goal: a DPO step ≤ 2.3× a supervised step at the same batch and
length; peft_magic's DPO losses equal TRL's, at TRL's speed or better (on the CPU TRL's fused
LM head gets only the answer's positions from us, as TRL itself does on CUDA:
``training/preference.py``, ``_targets_only``).

Usage: ``python bench/bench_preference.py [n]`` (n rounds, default 2); writes its section
of bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import median, write_section  # noqa: E402

BATCH, STEPS, WORDS = 4, 5, 60  # pairs per batch, steps per run, words per prompt and per answer

CHILD = r'''
import json, os, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
import datasets, trl, trl.trainer.dpo_trainer  # imported before the mark in every variant alike
import peft_magic as pm
from peft_magic.tasks.preference import tokenize_preference
kind, folder, batch, steps, words = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
vocab = "river stone cloud lamp paper garden window music bread silver forest candle winter".split()
def text(i, k): return " ".join(vocab[(i * 7 + j * 3 + k) % len(vocab)] for j in range(words))
pairs = [{"prompt": text(i, 0), "chosen": text(i, 1), "rejected": text(i, 2)} for i in range(batch * steps)]
loaded = pm.load("smollm2")
tok = loaded.tokenizer
def rss():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in f) if k in ("VmRSS", "VmHWM")}
def mark():
    import gc; gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    return rss()["VmRSS"]
out = {}
if kind == "trl":
    from datasets import Dataset
    from peft import PeftModel
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    model = PeftModel.from_pretrained(loaded.model, folder, is_trainable=True)
    times = []
    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k): times.append(time.perf_counter() - self.t)
    args = DPOConfig(output_dir=folder + "-out", report_to="none", use_cpu=True, bf16=False,
                     activation_checkpointing=False, max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=5e-4, logging_steps=1, save_strategy="no", max_length=512, disable_tqdm=True)
    records = tokenize_preference(pairs, tok).records
    base = mark()
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(records),
                         callbacks=[Clock()])
    trainer.train()
    out["losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out["step"] = statistics.median(times[1:])
else:
    model = pm.load_adapter(loaded.model, folder, trainable=True).model
    data = pairs if kind == "dpo" else [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    extra = {"fused_loss": False} if kind == "sft_std" else {}
    base = mark()
    run = pm.train(model, data, tokenizer=tok, steps=steps, batch=batch, lr=5e-4, display=None, **extra)
    assert run.status == "completed", run.message
    out["losses"] = [l for _, l in run.losses]
    out["step"] = statistics.median(run.step_times.seconds[1:])
    out["tokens"] = run.tokens
    out["loss_path"] = run.loss_path
    if kind == "dpo":
        ex = tokenize_preference(pairs, tok)
        out["lengths"] = sorted({len(r["prompt_ids"]) + len(r[k]) for r in ex.rows for k in ("chosen_ids", "rejected_ids")})
out["rise"] = rss()["VmHWM"] - base
out["base"] = base
print("@@" + json.dumps(out))
'''

SETUP = r'''
import sys, torch
import peft_magic as pm
torch.manual_seed(0)
loaded = pm.load("smollm2")
model = pm.attach(loaded.model, "lora", r=8).model
pm.save(model, sys.argv[1], force=True)
'''


def _child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    return json.loads(lines[-1][2:]) if lines else {}


def main(n: int) -> str:
    from peft_magic.fmt import fmt_bytes

    load = os.getloadavg()[0]
    folder = tempfile.mkdtemp(prefix="pm-bench-pref-") + "/adapter"
    _child(SETUP, folder)
    kinds = ("sft", "sft_std", "dpo", "trl")
    res: dict[str, list[dict]] = {k: [] for k in kinds}
    for i in range(n):
        for kind in (kinds if i % 2 == 0 else kinds[::-1]):
            r = _child(CHILD, kind, folder, str(BATCH), str(STEPS), str(WORDS))
            res[kind].append(r)
            print(kind, {k: v for k, v in r.items() if k != "losses"}, flush=True)

    def med(kind: str, key: str) -> float:
        return median([r[key] for r in res[kind]])

    ours, theirs = res["dpo"][0]["losses"], res["trl"][0]["losses"]
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    ratio = med("dpo", "rise") / med("sft", "rise")
    ratio_std = med("dpo", "rise") / med("sft_std", "rise")
    lengths = res["dpo"][0]["lengths"]
    return (
        f"## Preference tuning: a DPO step vs a supervised step, and vs plain TRL (SmolLM2-135M, LoRA r=8, "
        f"batch {BATCH}, every sequence {min(lengths)}–{max(lengths)} tokens, {STEPS} steps, n={n} processes "
        "each)\n\n"
        "| | SFT (`%peft train`, default) | SFT `fused_loss=False` | DPO (`%peft train objective=dpo`) | "
        "plain TRL `DPOTrainer` |\n"
        "|---|---|---|---|---|\n"
        f"| loss path | {res['sft'][0]['loss_path']} | {res['sft_std'][0]['loss_path']} | "
        f"{res['dpo'][0]['loss_path']} | TRL's |\n"
        f"| sequences per step | {BATCH} | {BATCH} | {2 * BATCH} (+ {2 * BATCH} reference, no grad) | {2 * BATCH} (+ "
        f"{2 * BATCH} reference, no grad) |\n"
        f"| peak RAM rise during training (exact RSS high-water mark) | {fmt_bytes(med('sft', 'rise'))} | "
        f"{fmt_bytes(med('sft_std', 'rise'))} | {fmt_bytes(med('dpo', 'rise'))} | {fmt_bytes(med('trl', 'rise'))} |\n"
        f"| median step time | {med('sft', 'step'):.2f} s | {med('sft_std', 'step'):.2f} s | "
        f"{med('dpo', 'step'):.2f} s | {med('trl', 'step'):.2f} s |\n\n"
        f"DPO / SFT peak rise at the same batch and length: **{ratio:.2f}×** against the default SFT run, "
        f"**{ratio_std:.2f}×** against SFT with the model's own loss (goal ≤ 2.3×, set against the model's own loss: two sequences per "
        "pair and the reference pass under no_grad; TRL's fused LM head never builds the full logits; the "
        "default SFT run now computes its loss without the logits too, which DPO through TRL does not). "
        f"peft_magic's DPO vs plain TRL: step time **{med('dpo', 'step') / med('trl', 'step'):.2f}×**, the "
        f"logged losses of the same run differ by at most {diff:.1e} (ours {', '.join(f'{x:.4f}' for x in ours)}; "
        f"TRL {', '.join(f'{x:.4f}' for x in theirs)}). The reference policy is the base with the adapter off "
        "in both (TRL's frozen copy of a fresh adapter computes the base). Each variant runs in a fresh process "
        f"(alternating order); torch 1 thread, load average {load:.1f} at the start."
    )


if __name__ == "__main__":
    body = main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    write_section("preference", body)
    print(body)
