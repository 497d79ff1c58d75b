"""%peft compare in a real JupyterLab (headless Debian Chromium): the live table follows the
candidates, and the finished comparison is one static table with the best of each column
marked, the overlaid curves and the reading. Screenshot: test-artifacts/compare.png
(README: docs/images/compare.png)."""

from __future__ import annotations

import pytest
from browser import JupyterLab, NotebookPage, chromium

pytestmark = pytest.mark.browser

CELLS = [
    "%load_ext peft_magic\n%peft load tiny-llama",
    "texts = [f'the {a} cat sat on the {b}' for a in 'red blue green tall small'.split() "
    "for b in 'mat rug bed sofa'.split()]",
    "%peft compare lora,ia3,prefix,houlsby data=texts eval=0.2 steps=12 batch=4",
]


def test_compare_table_in_jupyterlab():
    with JupyterLab() as lab, chromium(viewport=(1500, 1100)) as browser:
        lab.write_notebook("compare.ipynb", CELLS)
        nb = NotebookPage.open(browser, lab, "compare.ipynb")
        try:
            nb.run_all()
            assert nb.errors() == [], nb.errors()
            out = nb.page.locator(".jp-NotebookPanel .jp-CodeCell").nth(2).locator(".jp-OutputArea")
            text = out.inner_text()
            for method in ("lora", "ia3", "prefix", "houlsby"):
                assert method in text
            assert "sorted by perplexity" in text and "★" in text
            assert "best perplexity" in text  # the reading under the table (which method wins is the data's)
            assert "learning rates (lr=auto)" in text  # the search, each rate tried
            assert "candidates trained" in text  # the live view ended as one static line
            assert out.locator(".widget-html").count() == 0  # no live widget left behind
            assert out.locator("svg polyline").count() >= 4  # one curve per candidate
            nb.screenshot("compare", out, readme="compare")
        except Exception:
            lab.save_log("compare-browser")
            raise
