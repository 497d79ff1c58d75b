"""The widget panel in a real JupyterLab, driven in headless Debian Chromium.

A user's path: load the tiny Llama, ``%peft panel``, choose LoRA in the method picker,
type r = 16, press Attach. The panel must then show the attach summary with the right
trainable count (r=16 on q_proj and v_proj of 2 layers: 7,168), the equivalent
``%peft lora r=16`` line, and ``%peft show`` in the next cell must see the same adapter.
Screenshots: test-artifacts/panel-form.png (before Attach), panel-attached.png (after; README:
docs/images/panel.png with ``make screenshots``).
"""

from __future__ import annotations

import re

import pytest
from browser import JupyterLab, NotebookPage, chromium

pytestmark = pytest.mark.browser

PANEL = ".peft-magic-panel"
CELLS = [
    "%load_ext peft_magic\n%peft load tiny-llama",
    "%peft panel",
    "%peft show",
]


def test_attach_lora_from_the_panel(artifacts):
    with JupyterLab() as lab, chromium(viewport=(1400, 2200)) as browser:
        lab.write_notebook("panel.ipynb", CELLS)
        nb = NotebookPage.open(browser, lab, "panel.ipynb")
        page = nb.page
        try:
            nb.run_cell(0, timeout=300)
            nb.run_cell(1, timeout=300)
            assert nb.errors() == [], nb.errors()
            panel = page.locator(PANEL)
            panel.wait_for(timeout=60_000)
            preview = panel.locator(".pm-preview")
            preview.filter(has_text="would train 3,584").wait_for(timeout=30_000)  # LoRA defaults, r=8

            # choose LoRA: another method first, then LoRA, as a user would pick it
            select = panel.locator(".pm-method select")
            labels = select.evaluate("s => [...s.options].map(o => o.textContent)")
            plain = [t.replace("\xa0", " ") for t in labels]  # ipywidgets keeps spaces as &nbsp;
            loha = labels[next(i for i, t in enumerate(plain) if t.startswith("loha — "))]
            lora = labels[next(i for i, t in enumerate(plain) if t.startswith("lora — "))]
            select.select_option(label=loha)
            preview.filter(has_text=re.compile(r"would train [\d,]+ of")).wait_for(timeout=30_000)
            page.wait_for_function(
                "() => document.querySelector('.peft-magic-panel .pm-line input').value === '%peft loha'",
                timeout=30_000)
            select.select_option(label=lora)
            page.wait_for_function(
                "() => document.querySelector('.peft-magic-panel .pm-line input').value === '%peft lora'",
                timeout=30_000)

            # set r = 16 (the field commits on Enter, like any IntText)
            r_input = panel.locator(".pm-field-r input")
            r_input.fill("16")
            r_input.press("Enter")
            preview.filter(has_text="would train 7,168").wait_for(timeout=30_000)
            page.wait_for_function(
                "() => document.querySelector('.peft-magic-panel .pm-line input').value === '%peft lora r=16'",
                timeout=30_000)
            nb.screenshot("panel-form", panel)

            panel.locator("button.pm-attach").click()
            result = panel.locator(".pm-result")
            result.filter(has_text="trainable params: 7,168").wait_for(timeout=60_000)
            assert "attached lora adapter 'default'" in result.inner_text()
            # the panel sets the result, then the status: two widget updates, so wait for the second
            panel.locator(".pm-status").filter(has_text="same as %peft lora r=16").wait_for(timeout=30_000)
            status = panel.locator(".pm-status").inner_text()
            assert status.startswith("✓ attached lora adapter 'default'") and "same as %peft lora r=16" in status
            panel.locator("button.pm-attach", has_text="Replace").wait_for(timeout=30_000)
            nb.screenshot("panel-attached", panel, readme="panel")
            nb.screenshot("panel-page")

            # one state: the next cell's %peft show sees the panel's adapter
            nb.run_cell(2, timeout=120)
            shown = nb.outputs()[2]
            text = " ".join(o.get("data", {}).get("text/plain", "") for o in shown)
            assert "trainable params: 7,168" in text and "default: lora (r=16)" in text, text
            assert nb.errors() == []
        except Exception:
            nb.screenshot("panel-failure")
            raise
