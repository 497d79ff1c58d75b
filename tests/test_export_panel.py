"""The panel's Save tab exports too: the same formats as ``%peft export``, the size and free
disk shown before the button is pressed, and why it cannot run when it cannot."""

from __future__ import annotations

from typing import Any

import pytest

import peft_magic as pm
from peft_magic import events
from peft_magic.syntax.read import parse_line


@pytest.fixture()
def panel():
    from peft_magic.panel import PeftPanel

    loaded = pm.load("tiny-llama")
    ns: dict[str, Any] = {"model": loaded.model, "tokenizer": loaded.tokenizer}
    p = PeftPanel(ns)
    yield p
    p.close()


def test_export_merged_from_the_save_tab_with_the_size_line_first(panel, tmp_path):
    panel.attach_button.click()
    ex = panel.saver.export
    target = tmp_path / "exported"
    ex.format.value = "merged"
    ex.folder.value = str(target)
    panel.tabs.selected_index = 2
    assert panel.line.value == f"%peft export merged {target}"
    assert parse_line(panel.line.value.removeprefix("%peft ")).positionals == ["export", "merged", str(target)]
    assert ex.size.value.count("writes about") == 1 and " free on " in ex.size.value
    assert not ex.button.disabled and not target.exists()
    drawn: list[str] = []  # the live bar, drawn in the tab while the export runs

    def seen(e: Any) -> None:
        if e.kind == "export" and ex.progress.children:
            drawn.append(ex.progress.children[0].value)

    unsubscribe = events.subscribe(seen)
    try:
        ex.button.click()
    finally:
        unsubscribe()
    assert any("export merged →" in d and "%" in d for d in drawn), drawn
    assert "✓" in panel.status.value and "exported the merged model" in panel.status.value, panel.status.value
    assert (target / "model.safetensors").exists() and (target / "README.md").exists()
    assert "exported the merged model" in panel.result.value and ex.progress.children == ()
    ex.button.click()  # again: refused in the status line, the export left as it is
    assert "✗" in panel.status.value and "already exists" in panel.status.value
    ex.force.value = True
    assert panel.line.value == f"%peft export merged {target} --force"
    ex.format.value = "gguf"
    assert panel.line.value == f"%peft export gguf {target} quant=f16 --force"


def test_export_button_says_why_not_before_it_is_pressed(panel, tmp_path, monkeypatch):
    panel.attach_button.click()
    ex = panel.saver.export
    monkeypatch.setenv("PEFT_MAGIC_CACHE", str(tmp_path / "never-fetched"))
    monkeypatch.delenv("PEFT_MAGIC_LLAMA_CPP", raising=False)
    ex.format.value = "gguf"  # the default
    panel.refresh()
    assert ex.button.disabled and "python -m peft_magic.exporting.converter" in ex.size.value
    ex.format.value = "merged"
    assert not ex.button.disabled
    panel.ns["model"] = pm.attach(pm.load("tiny-llama").model, "prefix", tokens=4).model
    panel.refresh()
    assert ex.button.disabled and "cannot be merged" in ex.size.value
