"""The live training display in a real JupyterLab, driven in headless Debian Chromium.

``%peft train`` in a cell, watched from the page as a user sees it: while the cell runs
the output is the progress widget — the bar and its ``k/N`` count move forward, the
readouts fill in and the loss chart is drawn — and when the run ends the same output is
the finished display as static HTML (full bar, ``completed``, the chart), with no widget
left in it. Screenshots: test-artifacts/training-live.png (mid-run; README:
docs/images/training.png) and training-done.png.
"""

from __future__ import annotations

import re

import pytest
from browser import JupyterLab, NotebookPage, chromium

pytestmark = pytest.mark.browser

STEPS = 300  # long enough to be seen mid-run (and photographed) on a fast machine
CELLS = [
    "%load_ext peft_magic\n%peft load tiny-llama\n%peft lora r=8 target=all-linear",
    "texts = ['The quick brown fox jumps over the lazy dog.'] * 16 + "
    "['I love reading books about science and history.'] * 16",
    f"%peft train data=texts steps={STEPS} batch=8 lr=2e-3",
]
# the live widget now: its count label, how far across the chart its line reaches (0–1), its text
LIVE = """() => { const cell = document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')[2];
    const out = cell && cell.querySelector('.jp-OutputArea');
    const label = out && out.querySelector('.jp-OutputArea-output div.widget-label');
    const line = out && out.querySelector('.widget-hprogress') && out.querySelector('svg polyline');
    const xs = line ? line.getAttribute('points').trim().split(/\\s+/).map(p => parseFloat(p)) : [];
    const width = line ? parseFloat(line.ownerSVGElement.getAttribute('width')) : 1;
    return {count: label ? label.textContent : null, chart: xs.length ? Math.max(...xs) / width : 0,
            text: out ? out.innerText : ''}; }"""
# every "k/STEPS" the progress widget's count shows, sampled every 50 ms in the page
WATCH = """() => { window.__counts = [];
    window.__watch = setInterval(() => {
        const cell = document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')[2];
        const label = cell && cell.querySelector('.jp-OutputArea-output div.widget-label');
        const text = label && label.textContent;
        if (text && window.__counts[window.__counts.length - 1] !== text) window.__counts.push(text);
    }, 50); }"""


def test_live_training_display_in_jupyterlab():
    with JupyterLab() as lab, chromium(viewport=(1600, 1000)) as browser:
        lab.write_notebook("train.ipynb", CELLS)
        nb = NotebookPage.open(browser, lab, "train.ipynb")
        page = nb.page
        try:
            nb.run_cell(0, timeout=300)
            nb.run_cell(1, timeout=60)
            assert nb.errors() == [], nb.errors()
            page.evaluate(WATCH)
            cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(2)
            out = cell.locator(".jp-OutputArea")
            cell.locator(".jp-InputPrompt").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_function(  # the cell started (or already ran): [*] or its number
                "() => /[*\\d]/.test(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')[2]"
                ".textContent)", timeout=60_000)
            shot = False
            while not nb.cells_done():
                live = page.evaluate(LIVE)
                count = re.fullmatch(rf"(\d+)/{STEPS}", live["count"] or "")
                # mid-run, the chart drawn well across: the picture of the live display
                if not shot and count and int(count.group(1)) < STEPS and live["chart"] >= 0.4:
                    assert "tokens/s" in live["text"] and "ETA" in live["text"], live
                    shot = bool(nb.screenshot("training-live", out, readme="training"))
                page.wait_for_timeout(20)
            nb.wait_for_cells(timeout=600)
            counts = page.evaluate("() => { clearInterval(window.__watch); return window.__counts; }")
            steps = [int(c.split("/")[0]) for c in counts if re.fullmatch(rf"\d+/{STEPS}", c)]
            assert len(steps) >= 3 and steps == sorted(steps) and 0 < steps[1] < STEPS, counts  # it moved
            assert shot, ("no mid-run moment with the chart drawn was seen", counts)
            assert nb.errors() == [], nb.errors()
            final = cell.locator(".jp-OutputArea-output").first
            final.filter(has_text="completed").wait_for(timeout=30_000)
            assert out.locator(".widget-hprogress").count() == 0  # the widget is gone …
            text = final.inner_text()  # … and the static display is there
            assert f"{STEPS}/{STEPS}" in text and "loss" in text and "memory" in text, text
            bar, fill = final.locator(".pm-run-bar"), final.locator(".pm-run-bar-fill")
            assert abs(fill.bounding_box()["width"] - bar.bounding_box()["width"]) < 1
            assert final.locator("svg polyline").count() >= 1
            nb.screenshot("training-done", out)
        except Exception:
            nb.screenshot("training-failure")
            lab.save_log("training-failure-server")
            raise
