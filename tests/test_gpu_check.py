"""``make gpu-check``'s script on its CPU dry path: every GPU check runs as far as it goes
without a GPU (tiny-llama, two steps each), so the script cannot rot on machines that never
see a GPU; and it writes no figures there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_path_runs_every_check_and_writes_nothing():
    results = ROOT / "bench" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry"], capture_output=True,
                         text=True, env=env, timeout=600, cwd=ROOT)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert out.splitlines()[0].endswith(": gpu-check runs its CPU dry path (tiny-llama, 2 steps per check) "
                                        "and writes no figures"), out
    for i, title in enumerate(("QLoRA 4-bit training and the VRAM readout vs NVML", "%peft plan vs measured peak",
                               "compile=True", "bf16 / SDPA", "--gpus all strategies"), 1):
        assert f"[ok] {i}. {title} (" in out, out
    assert "RAM readout" in out and "same losses" in out and "refusal: " in out
    assert "gpu-check: 5 passed, 0 failed" in out
    assert (results.read_bytes() if results.exists() else None) == before  # no figures from a CPU
