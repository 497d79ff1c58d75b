"""Export time and size per format for SmolLM2-135M + LoRA, side by side with the plain way.

peft_magic: ``peft_magic.export(model, FORMAT, path)`` — merged, GGUF f16 / bf16 / q8_0,
Ollama (q8_0 GGUF + Modelfile) — which also checks the disk first, writes atomically
(fsync + rename), writes the card and, for Ollama, checks the translated template.

The plain way, timed the same: peft's ``merge_and_unload`` + ``save_pretrained`` (model
and tokenizer) into a folder, then llama.cpp's ``convert_hf_to_gguf.py`` run by hand on
it (the same pinned converter). ``merge_and_unload`` changes the model, so the plain
way gets a freshly loaded adapter model before each repetition (not timed).

Repetitions alternate the two ways; medians of n. Run: ``python bench/bench_export.py [n]``
(needs the converter: ``make gguf-converter``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import median, write_section

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PEFT_MAGIC_CACHE", str(ROOT / ".cache" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FORMATS = [("merged", None), ("gguf", "f16"), ("gguf", "bf16"), ("gguf", "q8_0"), ("ollama", "q8_0")]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(n: int = 3) -> None:
    import torch
    from peft import PeftModel

    import peft_magic as pm
    from peft_magic.exporting.converter import require

    conv = require()
    loaded = pm.load("smollm2")
    tok = loaded.tokenizer
    model = pm.attach(loaded.model, "lora", r=16, target="all-linear").model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    adapter_dir = work / "adapter"
    model.save_pretrained(str(adapter_dir))
    from peft_magic.model.builtins import materialize

    base_dir = Path(materialize("smollm2"))

    def plain(fmt: str, quant: str | None, out: Path) -> float:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(base_dir))
        fresh = PeftModel.from_pretrained(base, str(adapter_dir))
        t = time.perf_counter()
        folder = out if fmt == "merged" else out.with_name(out.name + "-hf")
        merged = fresh.merge_and_unload()
        merged.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))
        if fmt != "merged":
            out.mkdir()
            subprocess.run([sys.executable, str(conv.script), str(folder), "--outfile", str(out / f"model-{quant}.gguf"),
                            "--outtype", quant], check=True, capture_output=True, cwd=str(conv.root))
            shutil.rmtree(folder)
            if fmt == "ollama":
                (out / "Modelfile").write_text(f"FROM ./model-{quant}.gguf\n")
        return time.perf_counter() - t

    def ours(fmt: str, quant: str | None, out: Path) -> float:
        t = time.perf_counter()
        pm.export(model, fmt, out, tokenizer=tok, quant=quant, display=None)
        return time.perf_counter() - t

    load_before = os.getloadavg()[0]
    rows = []
    for fmt, quant in FORMATS:
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        sizes: dict[str, int] = {}
        for i in range(n):
            for way, fn in (("ours", ours), ("plain", plain)) if i % 2 == 0 else (("plain", plain), ("ours", ours)):
                out = work / f"{way}-{fmt}-{quant}-{i}"
                times[way].append(fn(fmt, quant, out))
                sizes[way] = _size(out)
                shutil.rmtree(out)
        label = fmt if fmt == "merged" else f"{fmt} {quant}"
        mo, mp = median(times["ours"]), median(times["plain"])
        rows.append(f"| {label} | {mo:.1f} | {mp:.1f} | {mo / mp:.2f} | {sizes['ours'] / 2**20:.1f} | "
                    f"{sizes['plain'] / 2**20:.1f} |")
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    body = (
        f"## Export: `peft_magic.export` vs peft merge + save + llama.cpp's converter by hand "
        f"(SmolLM2-135M fp32, LoRA r=16 all-linear, n={n})\n\n"
        "| format | peft_magic (s) | plain (s) | ratio | peft_magic size (MB) | plain size (MB) |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "peft_magic's time includes what the plain way does not do: the disk check, fsync and the atomic "
        "rename, the model card, and for Ollama the Modelfile template rendered and compared with the chat "
        "template. The converter (llama-cpp-python "
        f"{conv.origin.split()[-1]}'s) is the same on both sides; a GGUF export writes the merged fp32 folder "
        "first (the converter's input) and deletes it. Sizes: everything left in the export folder. "
        f"Load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs during the run: "
        "wall times grow with other work on the machine; the two ways alternate, so read the ratios."
    )
    write_section("export", body)
    print(body)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
