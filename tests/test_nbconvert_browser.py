"""An executed notebook converted with ``jupyter nbconvert --to html``, read in headless Chromium.

VS Code's export, nbconvert, nbviewer and GitHub draw a saved notebook without a widget
manager. nbconvert prefers a widget view over ``text/html`` whenever the notebook has
that widget's state (and then draws nothing offline: the manager is a script from a
CDN), so a finished training display must leave the HTML alone in its output. Here a
notebook is executed headless (nbclient, widget state saved as JupyterLab would), plans
and trains, is converted, and opened in Chromium with every network request refused:
the page must show the final training display — the full bar, the readouts, the loss
chart — and the plan table. Screenshot: test-artifacts/nbconvert-training.png.
"""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from browser import ARTIFACTS, chromium
from nbclient import NotebookClient

pytestmark = pytest.mark.browser

STEPS = 12
CELLS = [
    "%load_ext peft_magic\n%peft load tiny-llama",
    "%peft plan --model model lora prefix batch=4 seq=64",
    "%peft lora r=8 target=all-linear",
    "texts = ['The quick brown fox jumps over the lazy dog.'] * 16 + "
    "['I love reading books about science and history.'] * 16",
    f"%peft train data=texts steps={STEPS} batch=4 lr=5e-3",
]


def test_converted_notebook_shows_the_final_training_display_offline(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            store_widget_state=True)
    client.execute()
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]  # state saved, as usual
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(path))
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(path)], check=True,
                   capture_output=True, timeout=120)
    page_html = path.with_suffix(".html")
    text = page_html.read_text()
    assert '<script type="application/vnd.jupyter.widget-view+json">' not in text  # no output waits for a manager

    with chromium(viewport=(1200, 1600)) as browser:
        refused: list[str] = []

        def offline(route):
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        browser.route("**/*", offline)
        page = browser.new_page()
        page.goto(page_html.as_uri())
        page.wait_for_load_state("load")
        display = page.locator(".peft-magic", has_text="Training lora adapter 'default'").last
        display.wait_for(timeout=30_000)
        shown = display.inner_text()
        assert "completed" in shown and f"{STEPS}/{STEPS}" in shown, shown
        for label in ("epoch", "loss", "lr", "tokens/s", "elapsed", "memory"):
            assert label in shown, (label, shown)
        bar, fill = display.locator(".pm-run-bar"), display.locator(".pm-run-bar-fill")
        assert bar.bounding_box()["width"] >= 400
        assert abs(fill.bounding_box()["width"] - bar.bounding_box()["width"]) < 1  # the full bar
        chart = display.locator("svg")
        assert chart.count() == 1 and chart.bounding_box()["height"] > 50
        assert chart.locator("polyline").count() >= 1  # the loss curve
        plan = page.locator(".peft-magic", has_text="recommended").first
        assert plan.is_visible()
        plan_text = plan.inner_text()
        assert "LoRA" in plan_text and "prefix" in plan_text.lower() and "activations" in plan_text, plan_text
        assert plan.locator("table").count() >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "nbconvert-training.png"), full_page=True)
        assert all(not u.startswith("file:") for u in refused)
