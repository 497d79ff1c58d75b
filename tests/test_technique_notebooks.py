"""The cheat sheet's notebooks (notebooks/techniques/*.ipynb), executed so they cannot rot.

One notebook per technique — LoRA, QLoRA, prefix tuning, prompt tuning, bottleneck
adapters — each runs top to bottom in a real kernel (nbclient), offline, on the embedded
models: no cell may raise or print an error, every training cell must finish
(``completed``), and each notebook's own checks (``assert`` cells: the reloaded adapter
computes what the trained model does; accuracy went up) must hold. They run in a
temporary folder (the adapters they save go there), with one torch thread (see
``KERNEL_ENV``). The executed notebooks are kept in test-artifacts/notebooks/, and each
one's run time is printed and bounded.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks" / "techniques").glob("*.ipynb"))
TECHNIQUES = {"lora", "qlora", "prefix-tuning", "prompt-tuning", "bottleneck-adapters", "dpo"}
#: one torch thread in the notebooks' kernels: the test suite shares the CPU (other kernels, other jobs
#: in CI), and a per-process pool of one thread per core then oversubscribes it — measured here on 2
#: shared cores, 16 SmolLM2 steps went from ~40 s to ~160 s with the default pool
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.rule
def test_one_notebook_per_technique():
    assert {p.stem for p in NOTEBOOKS} == TECHNIQUES


@pytest.mark.slow(seconds=60)  # a notebook on the embedded SmolLM2: a fresh clone starts them early
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_technique_notebook_runs(path: Path, tmp_path: Path, artifacts: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "When to use it" in nb.cells[0].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    t0 = time.perf_counter()
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            store_widget_state=True, shutdown_kernel="immediate")  # tests/kernel.py: Kernel.shutdown
    client.execute(env={**os.environ, **KERNEL_ENV})  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - t0
    out = artifacts / "notebooks"
    out.mkdir(exist_ok=True)
    nbformat.write(nb, out / path.name)
    print(f"{path.name}: {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        for o in cell.outputs:
            assert o.output_type != "error", (cell.source, o)
            if o.output_type == "stream" and o.name == "stderr":
                assert "Error" not in o.text and "Traceback" not in o.text, (cell.source, o.text)
    trained = [c for c in code if "%peft train" in c.source]
    assert trained
    for cell in trained:
        html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
        assert "completed" in html and "<svg" in html, cell.source
    assert any("%peft save" in c.source for c in code) and any("%peft load-adapter" in c.source for c in code)
    if (tmp_path / "adapters").exists():
        shutil.rmtree(tmp_path / "adapters")
