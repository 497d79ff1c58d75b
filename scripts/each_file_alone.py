"""Run every test file on its own, shuffled: each in a fresh pytest process of its own.

Why: ``make test`` runs files side by side in two long-lived workers, so a test can pass
only because another one ran before it in the same process (an import, a loaded
extension, a warmed cache). Here nothing runs before a file but its own tests, in an
order pytest-randomly picks (``--seed N`` repeats it). ``make test-each`` calls this after
the same set-up as ``make test``.

    python scripts/each_file_alone.py [--jobs 2] [--seed N] [tests/test_x.py ...]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_file(path: Path, seed: int, threads: int) -> tuple[Path, int, float, str]:
    """One file in its own pytest process (serial, shuffled); its exit code and summary line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", str(path.relative_to(ROOT)), "-q", "-n", "0",
                          "-p", "randomly", f"--randomly-seed={seed}", "-p", "no:cacheprovider"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else out.stderr.strip().splitlines()[-1:]
    if out.returncode not in (0, 5):  # 5: nothing collected (every test opt-in)
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "E   "))][:12]
        summary = "\n    ".join([str(summary), *failed])
    return path, out.returncode, time.perf_counter() - start, str(summary)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=random.randrange(10**6))
    a = ap.parse_args()
    files = [f.resolve() for f in a.files] or sorted((ROOT / "tests").glob("test_*.py"))
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    print(f"{len(files)} files, each alone, shuffled with --randomly-seed={a.seed}, {a.jobs} at a time", flush=True)
    bad = 0
    with ThreadPoolExecutor(a.jobs) as pool:
        for path, rc, took, summary in pool.map(lambda f: run_file(f, a.seed, threads), files):
            ok = rc in (0, 5)
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {took:6.0f} s  {path.relative_to(ROOT)}: {summary}", flush=True)
    print(f"{len(files) - bad} of {len(files)} files pass alone (seed {a.seed})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
