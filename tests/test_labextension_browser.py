"""The status bar in a real JupyterLab, driven in headless Debian Chromium.

The status-bar notebook (tests/statusbar_notebook.py) loads the extension, attaches LoRA
to the tiny Llama and trains; the status bar item must then show the final step / total
and a loss, with this kernel's memory; its popup the details; and switching to another
notebook must switch the item to that notebook's kernel. Screenshots are kept in
test-artifacts/ (labextension-training.png while it trains, labextension-statusbar.png at
the end, labextension-popup.png, labextension-switch.png; the README's docs/images/statusbar.png
and statusbar-popup.png are crops of the end and the popup, with ``make screenshots``).
"""

from __future__ import annotations

import re

import pytest
from browser import JupyterLab, NotebookPage, chromium
from statusbar_notebook import CELLS, STEPS

pytestmark = pytest.mark.browser

ITEM = ".jp-PeftMagic-item"


@pytest.fixture(scope="module")
def lab():
    with JupyterLab() as lab:
        yield lab


def _item_text(nb: NotebookPage) -> str:
    loc = nb.page.locator(ITEM)
    return loc.inner_text() if loc.count() and loc.is_visible() else ""


def _around(nb: NotebookPage, *locators, left: int = 0, margin: int = 8) -> dict:
    """A screenshot clip: the union of these elements' boxes, ``margin`` around, ``left`` more on the left."""
    boxes = [loc.bounding_box() for loc in locators]
    size = nb.page.viewport_size
    x0 = max(0, min(b["x"] for b in boxes) - margin - left)
    y0 = max(0, min(b["y"] for b in boxes) - margin)
    x1 = min(size["width"], max(b["x"] + b["width"] for b in boxes) + margin)
    y1 = min(size["height"], max(b["y"] + b["height"] for b in boxes) + margin)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def test_status_bar_shows_training_and_memory_per_kernel(lab: JupyterLab):
    lab.write_notebook("train.ipynb", CELLS)
    lab.write_notebook("other.ipynb", ["%load_ext peft_magic"])
    with chromium() as browser:
        nb = NotebookPage.open(browser, lab, "train.ipynb")
        try:
            assert nb.page.locator(ITEM).count() == 1, "the peft-magic extension is not loaded in JupyterLab"
            assert _item_text(nb) == "", "nothing to show before the kernel loads peft_magic"

            item = nb.page.locator(ITEM)
            # every text the item shows, recorded in the page (a fast run may not wait for us)
            nb.page.evaluate("""sel => { const el = document.querySelector(sel); window.__peftTexts = [];
                new MutationObserver(() => window.__peftTexts.push([el.dataset.phase, el.textContent]))
                    .observe(el, {childList: true, characterData: true, subtree: true, attributes: true}); }""",
                             ITEM)
            nb.app("app.commands.execute('notebook:run-all-cells')", wait=False)
            live = re.compile(rf"step \d+/{STEPS} · loss \d+\.\d+ · ETA \d+:\d\d")
            shot = False
            while not shot and not nb.cells_done():
                if item.get_attribute("data-phase") == "training" and live.search(item.inner_text()):
                    shot = bool(nb.screenshot("labextension-training"))  # while the cell runs
                nb.page.wait_for_timeout(100)
            nb.wait_for_cells(timeout=600)
            seen = nb.page.evaluate("() => window.__peftTexts")
            training = [t for phase, t in seen if phase == "training" and live.search(t)]
            assert training, seen  # step / total, loss and ETA while it trained
            steps = [int(re.search(r"step (\d+)/", t).group(1)) for t in training]
            assert steps == sorted(steps) and steps[-1] <= STEPS, training
            assert nb.errors() == []
            final = re.compile(rf"step {STEPS}/{STEPS} · loss \d+\.\d+ · done")
            item.filter(has_text=final).wait_for(timeout=30_000)
            text = item.inner_text()
            assert text.startswith("PEFT · default (lora)"), text
            assert re.search(r"RAM \d+(\.\d)? [MG]B / \d+(\.\d)? GB \(peak \d+(\.\d)? [MG]B\)", text), text
            nb.screenshot("labextension-statusbar")
            nb.screenshot("labextension-statusbar-item", readme="statusbar",
                          clip=_around(nb, item, left=320, margin=12))

            # the popup: method, trainable params, peak memory, recent loss
            item.click()
            details = nb.page.locator(".jp-PeftMagic-details")
            details.wait_for(timeout=10_000)
            body = details.inner_text()
            for expected in ("Method", "lora", "Trainable params", "Peak memory", "Recent loss",
                             f"{STEPS} / {STEPS}", "process RAM"):
                assert expected in body, (expected, body)
            assert details.locator("svg polyline").count() == 1  # the loss sparkline
            nb.screenshot("labextension-popup")
            nb.screenshot("labextension-popup-item", readme="statusbar-popup",
                          clip=_around(nb, details, item, margin=12))
            item.click()  # a second click closes it
            details.wait_for(state="detached", timeout=10_000)

            # another notebook, another kernel: the item follows the notebook in focus
            other = nb.open_other("other.ipynb")
            assert _item_text(other) == ""
            other.run_all(timeout=120)
            item.filter(has_text="no adapter").wait_for(timeout=30_000)
            other_text = item.inner_text()
            assert "step" not in other_text and "RAM" in other_text, other_text
            nb.screenshot("labextension-switch")
            nb.activate()
            item.filter(has_text=final).wait_for(timeout=10_000)
            assert item.inner_text().startswith("PEFT · default (lora)")
        except Exception:
            nb.screenshot("labextension-failure")
            lab.save_log("labextension-failure-server")
            raise
    log = lab.log()
    assert "No such comm target" not in log and "Exception opening comm" not in log, log[-3000:]
