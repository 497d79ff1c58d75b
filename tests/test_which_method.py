"""notebooks/which-method.ipynb on the embedded SmolLM2, and ``lr=auto`` held to a hand grid
on the same task.

One kernel runs the notebook (a module fixture, so each test also passes alone): the plan
and the comparison side by side, the comparison's rows real runs, the model left without
adapters. The same kernel then trains a hand grid (3e-4 … 3e-2, a fresh adapter per rate,
the notebook's 12 steps of batch 4 on the same 8 pirate answers, 2 held out) for LoRA and
a prompt method, and ``lr=auto`` — the comparison's default — must reach a held-out
perplexity within 1.5× of the best the grid reaches; the chosen rate is a column and every
probe is listed. (One comparison serves both: it is the notebook's, the one a user runs.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel]

GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)

GRID_CODE = f"""
import torch as _torch, peft_magic as _pm

def _grid_best(method):
    best = float('inf')
    for lr in {GRID!r}:
        _torch.manual_seed(42)
        m = _pm.attach(model, method, name='grid').model
        try:
            _pm.train(m, train_set, tokenizer=tokenizer, steps=12, batch=4, lr=lr, seed=42, autosave=False,
                      display=None)
            best = min(best, _pm.evaluate(m, dev, tokenizer=tokenizer).metrics['perplexity'])
        finally:
            _pm.detach(m)
    return best
"""

ROWS = ("[dict(label=r.label, method=r.method, status=r.status, ppl=r.metrics.get('perplexity'), "
        "trainable=r.trainable, peak=r.peak_memory, lr=r.lr, chosen=r.search.chosen if r.search else None, "
        "probe_steps=[p.steps for p in r.search.probes] if r.search else []) for r in _cmp.rows]")


@pytest.fixture(scope="module")
def which_method(tmp_path_factory):
    """The kernel that ran the notebook, and the outputs of its code cells."""
    import nbformat
    from kernel import Kernel

    nb = nbformat.read(str(Path(__file__).resolve().parents[1] / "notebooks" / "which-method.ipynb"), as_version=4)
    k = Kernel(cwd=tmp_path_factory.mktemp("which-method"))
    try:
        outs = [k.ok(c.source) for c in nb.cells if c.cell_type == "code"]
        k.ok("_cmp = [v for v in Out.values() if type(v).__name__ == 'Comparison'][-1]")
        yield k, outs
    finally:
        k.shutdown()


@pytest.mark.slow(seconds=330)
def test_which_method_notebook_plans_and_compares_on_smollm2(which_method):
    k, outs = which_method
    plan, table, show = outs[1], outs[3], outs[4]  # cells: load, plan, data, compare, show
    assert "T4" in plan.text and "prefix tuning" in plan.text and "recommended:" in plan.text
    rows = k.eval(ROWS)
    assert {r["label"] for r in rows} == {"lora", "ia3", "prefix", "prompt", "houlsby"}
    assert all(r["status"] == "done" and r["ppl"] and r["ppl"] > 1 for r in rows), rows
    ppl = [r["ppl"] for r in rows]
    assert ppl == sorted(ppl)
    print("\n" + table.text)  # the closing note quotes this table
    assert "no adapters" in show.text


@pytest.mark.slow(seconds=550)
def test_lr_auto_is_within_1_5x_of_the_best_a_hand_grid_reaches(which_method):
    k, outs = which_method
    k.ok(GRID_CODE)
    grid = {m: k.eval(f"_grid_best({m!r})") for m in ("lora", "prompt")}
    rows = {r["method"]: r for r in k.eval(ROWS) if r["label"] in ("lora", "prompt")}
    text = outs[3].text
    assert set(rows) == {"lora", "prompt"}, rows
    for method, row in rows.items():
        assert row["status"] == "done", row
        assert row["ppl"] <= 1.5 * grid[method], (row, grid)
        assert row["chosen"] is not None and row["lr"] == row["chosen"]  # the chosen rate is the row's
        assert f"{row['lr']:.1e}" in text  # … and a column of the table
        assert 2 <= len(row["probe_steps"]) <= 5 and set(row["probe_steps"]) == {4}  # the walk's probes, 4 steps each
        assert f"{row['label']}: " in text and "★" in text  # every probe listed
    assert "no adapters" in k.ok("%peft show").text  # each grid adapter was taken off again
    print("\n" + text + f"\nhand grid best perplexity: {grid}")
