"""Notebook-wide defaults, the Jupyter way: ``%config PeftMagic.X = …`` in a real kernel."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def test_config_lists_and_sets_the_defaults(kernel):
    listed = kernel.ok("%config PeftMagic").stdout
    for name in ("display", "learning_rates", "autosave_minutes", "checkpoint_dir", "keep_checkpoints", "debug"):
        assert f"PeftMagic.{name}" in listed
    assert "PeftMagic.display = 'auto'" in kernel.ok("%peft help config").text
    res = kernel.run("%config PeftMagic.display = 'txt'")
    assert "display must be one of auto, widget, text, none, got 'txt'" in res.stderr
    assert kernel.eval("__import__('peft_magic.settings').settings.SETTINGS.display") == "auto"  # unchanged


def test_display_and_learning_rates_apply_to_the_next_run(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=2")
    kernel.ok("%config PeftMagic.display = 'text'\n%config PeftMagic.learning_rates = {'lora': 1.5e-3}")
    kernel.ok("texts = ['a b c d'] * 8")
    res = kernel.ok("%peft train data=texts steps=2 batch=4")
    assert "Training lora adapter 'default': completed 2/2" in res.stdout  # the text line, not widgets
    assert res.data("application/vnd.jupyter.widget-view+json") == []
    assert kernel.eval("__import__('peft_magic.state').state.runs()[-1].last_lr") <= 1.5e-3
    assert kernel.eval("model.peft_config['default'].peft_type.value") == "LORA"
    lr = kernel.eval("__import__('peft_magic.state').state.runs()[-1].settings.get('lr')")
    assert lr is None  # the default came from the notebook's setting, not from the line
    kernel.ok("%config PeftMagic.display = 'auto'\n%config PeftMagic.learning_rates = {}")


def test_debug_shows_the_full_traceback(kernel):
    kernel.ok("%peft load tiny-llama\n%peft lora r=2")  # its own model: the kernel is the module's, in any order
    kernel.ok("%config PeftMagic.debug = True")
    kernel.ok("class Boom(list):\n    def __iter__(self): raise RuntimeError('boom')")
    res = kernel.run("%peft train data=Boom() steps=1 --model model")
    kernel.ok("%config PeftMagic.debug = False")
    assert res.error is not None and res.error["ename"] != "UsageError"  # the real exception, with its traceback
    res = kernel.run("%peft train data=Boom() steps=1 --model model")
    assert res.error["ename"] == "UsageError" and "%config PeftMagic.debug = True" in res.error["evalue"]
