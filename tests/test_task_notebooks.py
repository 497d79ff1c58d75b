"""The task notebooks (notebooks/tasks/) run in a real kernel, cell by cell, and what they
teach holds: the trained adapter beats the base model on the task's own metric; the
task magics give one-line errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: notebook → (the metric it is about, the least the adapter must reach)
NOTEBOOKS = {"ner": ("f1", 0.8), "qa": ("exact_match", 0.2), "seq2seq": ("rougeL", 0.5)}


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_task_notebook_runs_and_the_adapter_beats_the_base(name, tmp_path):
    from kernel import Kernel

    nb = nbformat.read(str(ROOT / "notebooks" / "tasks" / f"{name}.ipynb"), as_version=4)
    k = Kernel(cwd=tmp_path)
    try:
        results = [k.ok(cell.source) for cell in nb.cells if cell.cell_type == "code"]
        shown = "\n".join(r.text + r.html for r in results)
        assert "Traceback" not in shown
        assert any("data: " in r.stdout or "data: " in r.html for r in results)  # the shape is printed
        metric, least = NOTEBOOKS[name]
        k.ok("_r = __import__('peft_magic').evaluate(model, dev, tokenizer=tokenizer, compare=True)")
        adapter, base = k.eval(f"_r.metrics['{metric}']"), k.eval(f"_r.base['{metric}']")
        assert adapter >= least and adapter > base, (metric, adapter, base)
    finally:
        k.shutdown()


@pytest.mark.kernel
def test_task_magics_say_what_is_wrong_in_one_line(kernel):
    assert "gpt2 models have no sequence-to-sequence head" in \
        kernel.run("%peft load tiny-gpt2 --task seq2seq").one_line_error()
    kernel.ok("%peft load minilm --task token-cls --labels O,B-PER,I-PER --as ner")
    kernel.ok("%peft lora r=4 --model ner")
    res = kernel.run("%peft evaluate --model ner")
    assert "which data?" in res.error_text
    res = kernel.run("%peft predict --model ner")
    assert "predict what?" in res.error_text
    kernel.ok("bad = [{'tokens': ['Ann', 'runs'], 'tags': ['B-PER']}]")
    assert "row 0" in kernel.run("%peft train data=bad steps=1 --model ner").one_line_error()
    kernel.ok("words = [{'text': 'no tags here'}]")
    assert "tokens" in kernel.run("%peft train data=words steps=1 --model ner").one_line_error()
    res = kernel.ok('%peft predict "Ann runs" --model ner')
    assert "[PER]" in res.text or "no entities" in res.text
    help_text = kernel.ok("%peft help evaluate").text + kernel.ok("%peft help predict").text
    assert "--compare" in help_text and "question=" in help_text
