"""Colab's ipywidgets 7.7 through a real kernel: progress display, panel, ``%%peft watch``.

Colab's runtime ships ipywidgets 7.7 and we must not force 8 there, so everything that
draws widgets has to work on 7.7 too. The kernel runs in ``.venv-ipyw7`` (``make
ipywidgets7``, which ``make test`` depends on): the main environment's packages seen
through a ``.pth`` file, with ipywidgets 7.7.1 in its own site-packages in front of them.
The test checks that the kernel really imports 7.7.1 from there, then that the widget
state is built and updated, nothing raises or warns, and each output leaves static HTML
behind (a saved notebook, nbconvert and Colab's own viewer draw that).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
VENV7 = ROOT / ".venv-ipyw7"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STEPS = 6

# every display / update message the kernel publishes: (msg_type, mime types)
RECORD = (
    "_seen = []\n"
    "if '_record' not in globals():\n"
    "    def _record(msg):\n"
    "        _seen.append((msg['header']['msg_type'], sorted(msg['content'].get('data', {}))))\n"
    "        return msg\n"
    "    get_ipython().display_pub.register_hook(_record)\n"
)


@pytest.fixture(scope="module")
def kernel7(tmp_path_factory):
    from kernel import Kernel

    python = VENV7 / "bin" / "python"
    assert python.exists(), f"{VENV7} is missing: run `make ipywidgets7` (make test does)"
    specs = tmp_path_factory.mktemp("kernelspecs")
    spec = specs / "kernels" / "peft-magic-ipyw7"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipywidgets 7.7)", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(specs)] + ([old] if old else []))
    try:
        k = Kernel(cwd=tmp_path_factory.mktemp("kernel7"), kernel_name="peft-magic-ipyw7")
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old
    yield k
    k.shutdown()


def _no_warnings(res) -> None:
    assert not re.search(r"Warning|Error|Traceback", res.stderr), res.stderr


def _widget_states(kernel, name: str) -> list[dict]:
    return [s for s in kernel.client.widget_state.values() if s.get("_model_name") == name]


def test_the_kernel_imports_ipywidgets_7(kernel7):
    info = kernel7.eval("[__import__('ipywidgets').__version__, __import__('ipywidgets').__file__, "
                        "__import__('sys').prefix]")
    assert info[0] == "7.7.1", info
    assert info[1].startswith(str(VENV7)), info
    assert Path(info[2]).resolve() == VENV7.resolve(), info


def test_training_display_on_ipywidgets_7(kernel7, tmp_path):
    _no_warnings(kernel7.ok("%load_ext peft_magic"))
    kernel7.ok("%peft load tiny-llama")
    kernel7.ok("%peft lora r=8 target=all-linear")
    kernel7.ok(RECORD + "texts = ['The quick brown fox jumps over the lazy dog.'] * 16")
    res = kernel7.ok(f"%peft train data=texts steps={STEPS} batch=4 lr=5e-3")
    _no_warnings(res)
    # live: the widget (with HTML beside it), updated in place; finished: static HTML alone
    seen = kernel7.eval("_seen")
    assert seen[0] == ["display_data", sorted([WIDGET_VIEW, "text/html", "text/plain"])], seen
    assert seen[-1] == ["update_display_data", ["text/html", "text/plain"]], seen
    finals = [o for o in res.outputs if o.get("output_type") == "display_data"]
    assert len(finals) == 1 and WIDGET_VIEW not in finals[0]["data"], finals
    static = finals[0]["data"]["text/html"]
    assert f"{STEPS}/{STEPS}" in static and "completed" in static and "<svg" in static and "loss" in static
    # the widget state was built (the bar opened at 0) and updated to the end
    bars = [b for b in _widget_states(kernel7, "IntProgressModel") if b.get("max") == STEPS]
    assert len(bars) == 1 and bars[0]["value"] == STEPS and bars[0]["bar_style"] == "success", bars
    assert bars[0]["_model_module_version"] == "1.5.0"  # ipywidgets 7's protocol
    # a saved notebook keeps the HTML (and the widgets' last state)
    nb = json.loads(kernel7.save(tmp_path / "ipyw7.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "%peft train" in "".join(c["source"]))
    assert any("completed" in "".join(o.get("data", {}).get("text/html", "")) for o in cell["outputs"])
    assert nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_panel_on_ipywidgets_7(kernel7):
    kernel7.ok("%load_ext peft_magic")  # each test loads what it uses (any order)
    kernel7.ok("%peft load tiny-llama")
    res = kernel7.ok("p = %peft panel\np")
    _no_warnings(res)
    shown = [o["data"] for o in res.outputs if WIDGET_VIEW in o.get("data", {})]
    assert shown and "text/html" in shown[0] and "as a magic" in shown[0]["text/html"], res.outputs
    assert kernel7.eval("[p.tabs.get_title(i) for i in range(3)]") == ["Adapter", "Train", "Save"]
    # the advanced settings: a toggle and a box (no Accordion), closed until clicked
    assert kernel7.eval("[p.form().advanced.expanded, p.form().advanced.body.layout.display]") == [False, "none"]
    kernel7.ok("p.form().advanced.toggle.value = True")
    assert kernel7.eval("[p.form().advanced.expanded, p.form().advanced.body.layout.display]") == [True, ""]
    assert kernel7.eval("p.line.description_tooltip").startswith("the same as a %peft line")
    # attach and train from the panel's buttons, as a user would
    res = kernel7.ok("p.form().widget('r').value = 4\np.attach_button.click()")
    _no_warnings(res)
    assert "✓ attached lora adapter &#x27;default&#x27;" in kernel7.eval("p.status.value")
    assert kernel7.eval("p.line.value") == "%peft lora r=4"
    kernel7.ok("texts = ['a short text about cats number %d' % i for i in range(8)]\n"
               "p.trainer.refresh_data(); p.trainer.steps.value = 2; p.trainer.batch.value = 2\n"
               "p.tabs.selected_index = 1\n"
               "p.trainer.button.click()")
    assert "training completed: 2 steps" in kernel7.eval("p.status.value")
    assert kernel7.eval("p.line.value") == "%peft train data=texts steps=2 lr=0.0002 batch=2"
    bars = [b for b in _widget_states(kernel7, "IntProgressModel") if b.get("max") == 2]
    assert bars and bars[-1]["value"] == 2
    kernel7.ok("p.close()")


def test_watch_on_ipywidgets_7(kernel7):
    kernel7.ok("%load_ext peft_magic")
    kernel7.ok(RECORD)
    res = kernel7.ok("%%peft watch\nimport torch\n_x = torch.ones(4_000_000)\ndel _x\n'done'")
    _no_warnings(res)
    assert "'done'" in res.text
    assert re.search(r"memory \(process RAM\).*peak", res.text), res.text
    seen = kernel7.eval("_seen")
    assert seen[0] == ["display_data", sorted([WIDGET_VIEW, "text/html", "text/plain"])], seen
    assert seen[1][0] == "update_display_data" and WIDGET_VIEW not in seen[1][1], seen
    report = [o for o in res.outputs if o.get("output_type") == "display_data"]
    assert len(report) == 1 and WIDGET_VIEW not in report[0]["data"] and "peak" in report[0]["data"]["text/html"]
    # a cell that raises stays the user's error, and leaves no live widget behind either
    res = kernel7.run("%%peft watch\nraise ValueError('boom')")
    assert res.error is not None and res.error["ename"] == "ValueError"
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in res.outputs), res.outputs
    assert any("the cell raised" in o.get("data", {}).get("text/plain", "") for o in res.outputs), res.outputs
