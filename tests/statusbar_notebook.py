"""The notebook the status-bar tests run: in JupyterLab (browser) and headless (nbclient).

One definition, so that "the same notebook" really is the same: load the extension,
attach LoRA to the tiny built-in Llama, train a few steps.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

STEPS = 12

CELLS = [
    "%load_ext peft_magic",
    "%peft load tiny-llama",
    "%peft lora r=8",
    "texts = ['The quick brown fox jumps over the lazy dog.'] * 16 + "
    "['I love reading books about science and history.'] * 16",
    f"%peft train data=texts steps={STEPS} batch=4 lr=5e-3",
]


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    return nb


def write(path: str | Path) -> Path:
    path = Path(path)
    nbformat.write(notebook(), str(path))
    return path
