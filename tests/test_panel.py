"""The widget panel, driven the way a user drives it: set widget values, click buttons.

In-process tests use real widgets (ipywidgets works without a front end), real peft and
a real tiny Llama; the kernel tests run ``%peft panel`` in a real Jupyter kernel and
paste the panel's line into a cell, through the real magic.

The central promise: the adapter the panel attaches is exactly the adapter its shown
``%peft …`` line gives — same config, same trainable count.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

import peft_magic as pm
from peft_magic.syntax.read import parse_line
from peft_magic.peft_methods.discovery import registry

ATTACH_FLAGS = frozenset({"--model", "--name", "--task"})


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def fresh():
    """A new tiny Llama (same weights every time) with its tokenizer."""

    def make() -> Any:
        return pm.load("tiny-llama")

    make()  # materialise once
    return make


@pytest.fixture()
def panel(fresh):
    from peft_magic.panel import PeftPanel

    loaded = fresh()
    ns: dict[str, Any] = {"model": loaded.model, "tokenizer": loaded.tokenizer}
    p = PeftPanel(ns)
    yield p
    p.close()


def fingerprint(model: Any) -> str:
    h = hashlib.sha256()
    for n, p in model.named_parameters():
        h.update(n.encode())
        h.update(str((tuple(p.shape), p.requires_grad, p.dtype)).encode())
        if p.dtype.is_floating_point:
            h.update(repr(round(float(p.detach().double().sum()), 6)).encode())
    h.update(type(model).__name__.encode())
    h.update(str([type(x).__name__ for x in model.modules()]).encode())
    return h.hexdigest()


def run_line(line: str, model: Any) -> Any:
    """What the magic does with ``line``: its own parser, then the engine's attach."""
    assert line.startswith("%peft ")
    method, _, rest = line[len("%peft "):].partition(" ")
    args = parse_line(rest, ATTACH_FLAGS)
    assert not args.positionals, args.positionals
    return pm.attach(model, method, name=args.flag("--name", "default"), task=args.flag("--task"), **args.settings)


def config_dict(model: Any, name: str) -> dict[str, Any]:
    d = model.peft_config[name].to_dict()
    for k, v in list(d.items()):
        if isinstance(v, set):
            d[k] = sorted(v)
    return d


def status_text(p: Any) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", p.status.value)).strip()


# ----------------------------------------------------------------------------- the form


def test_a_generated_form_exists_for_every_method(panel):
    """Every method in the registry gets a form built from its config fields, with help
    text, common fields first and the rest under "advanced"; untouched, it is the bare
    magic line, and the preview shows a trainable count or one line saying why not."""
    assert len(panel.method.methods) == len(registry())
    families = set(panel.method.family.options)
    assert {"LoRA family", "prompt-based", "other"} <= families
    previews_with_counts = 0
    for pt, info in registry().items():
        panel.method.set(pt)
        assert panel.method.value == pt
        assert panel.method.family.value == info.family
        label = dict((v, k) for k, v in panel.method.dropdown.options)[pt]
        assert info.description[:20] in label
        form = panel.form()
        expected = [f for f in info.fields if not (f == "target_modules" and panel.targets is not None)]
        assert list(form.fields) == expected, pt
        for name, fw in form.fields.items():
            assert fw.widget.tooltip == (info.fields[name].help or name)
            assert fw.widget.description == name
        common = {f.info.name for f in form.common}
        if any(f.common for f in info.fields.values() if f.name in form.fields):
            assert common == {n for n in form.fields if info.fields[n].common}, pt
        assert [r for r in form.main.children] == [f.row for f in form.common]
        assert list(form.advanced.body.children) == [f.row for f in form.rest]
        assert not form.advanced.expanded and form.advanced.body.layout.display == "none"  # collapsed
        assert ("target_modules" in info.fields) == (panel.targets.box in panel.settings_box.children)
        word, settings, name, task = panel.request()
        assert settings == {} and name == "default" and task is None, (pt, settings)
        assert panel.line.value == f"%peft {word}"
        # the untouched form is exactly what the bare magic would do
        assert panel.preview_html.value
        if "would train" in panel.preview_html.value:
            previews_with_counts += 1
        else:
            assert "\n" not in panel.preview_html.value
    assert previews_with_counts >= 30


def test_field_widgets_match_field_types(panel):
    import ipywidgets as w

    panel.method.set("LORA")
    form = panel.form()
    assert isinstance(form.widget("r"), w.IntText) and form.widget("r").value == 8
    assert isinstance(form.widget("lora_dropout"), w.FloatText)
    assert isinstance(form.widget("use_dora"), w.Checkbox)
    assert isinstance(form.widget("bias"), w.Dropdown)
    assert [lab for lab, _ in form.widget("bias").options] == ["none", "all", "lora_only"]
    assert isinstance(form.widget("layers_to_transform"), w.Text)
    assert "r" in {f.info.name for f in form.common} and "bias" in {f.info.name for f in form.rest}
    assert "Lora attention dimension" in form["r"].help.value
    # a 4-bit-only mark and the method description in the picker
    assert "Low-rank" in panel.method.about.value


def test_preview_updates_and_never_touches_the_model(panel):
    model = panel.ns["model"]
    before = fingerprint(model)
    form = panel.form()
    assert "would train <b>3,584</b>" in panel.preview_html.value  # r=8 on q_proj, v_proj ×2
    form.widget("r").value = 16
    assert "would train <b>7,168</b>" in panel.preview_html.value
    panel.targets.boxes["k_proj"].value = True
    assert "would train <b>10,240</b>" in panel.preview_html.value
    assert "q_proj ×2, k_proj ×2, v_proj ×2" in panel.targets.matches.value
    panel.targets.pattern.value = "all-linear"
    assert "matches <b>14</b> modules" in panel.targets.matches.value
    assert fingerprint(model) == before and panel.ns["model"] is model
    assert type(model).__name__ == "LlamaForCausalLM"


def test_targets_picker_lists_the_models_layers(panel):
    t = panel.targets
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"} <= set(t.boxes)
    assert t.defaults == ["q_proj", "v_proj"]
    assert [n for n, cb in t.boxes.items() if cb.value] == ["q_proj", "v_proj"]
    assert t.value() is None  # peft's default: not written on the line
    t.pattern.value = "q_proj,nope_proj"
    assert "nope_proj" in t.matches.value and "matches no layer" in t.matches.value
    # switching to a method with other defaults re-ticks them (the user had only typed a pattern)
    t.pattern.value = ""
    t.touched = False
    panel.method.set("IA3")
    assert sorted(n for n, cb in t.boxes.items() if cb.value) == ["down_proj", "k_proj", "v_proj"]


# ----------------------------------------------------------------------------- attach = the line


def _lora_wide(p: Any) -> None:
    f = p.form()
    f.widget("r").value = 16
    f.widget("lora_alpha").value = 32
    f.widget("lora_dropout").value = 0.05
    p.targets.boxes["k_proj"].value = True
    p.targets.boxes["o_proj"].value = True


def _lora_advanced(p: Any) -> None:
    f = p.form()
    f.widget("r").value = 4
    f.widget("use_dora").value = True
    f["bias"].set("lora_only")
    f.widget("layers_to_transform").value = "0"
    f.widget("rank_pattern").value = "{'q_proj': 2}"
    f.widget("modules_to_save").value = "lm_head"
    p.targets.boxes["up_proj"].value = True


def _lora_regex(p: Any) -> None:
    p.form().widget("lora_dropout").value = 0.1
    p.targets.pattern.value = r".*layers\.1\..*(q|v)_proj"


def _lora_all_linear_named(p: Any) -> None:
    p.targets.pattern.value = "all-linear"
    p.name.value = "wide"
    p.task.value = "causal-lm"


def _prefix(p: Any) -> None:
    p.method.set("PREFIX_TUNING")
    p.form().widget("num_virtual_tokens").value = 7


def _p_tuning(p: Any) -> None:
    p.method.set("P_TUNING")
    f = p.form()
    f.widget("num_virtual_tokens").value = 5
    f["encoder_reparameterization_type"].set("LSTM")


def _ia3(p: Any) -> None:
    p.method.set("IA3")
    p.targets.pattern.value = "k_proj,down_proj"
    p.form().widget("feedforward_modules").value = "down_proj"


def _loha(p: Any) -> None:
    p.method.set("LOHA")
    f = p.form()
    f.widget("r").value = 4
    f.widget("alpha").value = 4


CASES = {
    "lora-wide": (_lora_wide, "%peft lora r=16 target=q_proj,k_proj,v_proj,o_proj alpha=32 dropout=0.05"),
    "lora-advanced": (_lora_advanced, "%peft lora r=4 target=q_proj,v_proj,up_proj bias=lora_only "
                                      "modules_to_save=lm_head layers_to_transform=0 rank_pattern={q_proj: 2} "
                                      "use_dora=True"),
    "lora-regex": (_lora_regex, r"%peft lora target='.*layers\.1\..*(q|v)_proj' dropout=0.1"),
    "lora-all-linear-named": (_lora_all_linear_named, "%peft lora target=all-linear --name wide --task causal-lm"),
    "prefix": (_prefix, "%peft prefix tokens=7"),
    "p-tuning": (_p_tuning, None),
    "ia3": (_ia3, None),
    "loha": (_loha, "%peft loha r=4 alpha=4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_attach_gives_exactly_what_the_shown_line_gives(case, panel, fresh):
    setup, expected_line = CASES[case]
    setup(panel)
    line = panel.line.value
    if expected_line is not None:
        assert line == expected_line
    word, settings, name, _task = panel.request()
    preview_html = panel.preview_html.value
    panel.attach_button.click()
    assert status_text(panel).startswith("✓"), status_text(panel)
    attached = panel.ns["model"]
    assert type(attached).__name__.startswith("PeftModel")  # the notebook variable was rebound
    assert pm.show(attached).adapters[0].name == name
    ours = config_dict(attached, name)
    ours_trainable = attached.get_nb_trainable_parameters()

    # the shown line, through the magic's own parser, on a fresh copy of the same model
    other = run_line(line, fresh().model).model
    assert config_dict(other, name) == ours
    assert other.get_nb_trainable_parameters() == ours_trainable
    assert f"{ours_trainable[0]:,}" in preview_html  # the live preview predicted it
    assert f"same as {line}" in status_text(panel)
    # the panel now shows "Replace", and pressing it again changes nothing (like re-running a cell)
    assert panel.attach_button.description == "Replace"
    fp = fingerprint(attached)
    panel.attach_button.click()
    assert "nothing changed" in status_text(panel)
    assert panel.ns["model"] is attached and fingerprint(attached) == fp


def test_line_values_round_trip_through_the_parser(panel):
    """Values that need quoting (regexes with backslashes, odd names) still read back the same."""
    from peft_magic.peft_methods.coerce import normalize_settings
    from peft_magic.peft_methods.discovery import resolve_method
    from peft_magic.syntax.write import attach_line

    spec = resolve_method("lora")
    for settings in ({"target_modules": r".*\.(q|v)_proj"}, {"target_modules": ["q_proj"]},
                     {"layers_to_transform": [0, 1]}, {"layers_to_transform": [1]}, {"lora_dropout": 1e-05},
                     {"rank_pattern": {"q_proj": 2, "model.layers.0.v_proj": 4}}, {"init_lora_weights": "gaussian"},
                     {"init_lora_weights": False}, {"modules_to_save": ["lm_head", "embed tokens"]}):
        line = attach_line("lora", settings)
        args = parse_line(line.split(" ", 2)[2], ATTACH_FLAGS)
        assert normalize_settings(spec, args.settings) == normalize_settings(spec, settings), line


# ----------------------------------------------------------------------------- errors


def test_errors_are_one_line_and_change_nothing(panel):
    model = panel.ns["model"]
    before = fingerprint(model)
    form = panel.form()
    form.widget("r").value = 0
    panel.attach_button.click()
    text = status_text(panel)
    assert text.startswith("✗") and "\n" not in text and "r" in text
    assert panel.ns["model"] is model and fingerprint(model) == before
    # an unreadable value names the field, and nothing is attached
    form.widget("r").value = 8
    form.widget("layers_to_transform").value = "first"
    assert "layers_to_transform" in panel.preview_html.value
    panel.attach_button.click()
    text = status_text(panel)
    assert text.startswith("✗") and "layers_to_transform" in text and "\n" not in text
    assert panel.ns["model"] is model and fingerprint(model) == before
    # a target that matches nothing: the engine's one-line error, model untouched
    form.widget("layers_to_transform").value = ""
    panel.targets.pattern.value = "nope_proj"
    panel.attach_button.click()
    assert status_text(panel).startswith("✗") and "nope_proj" in status_text(panel)
    assert panel.ns["model"] is model and fingerprint(model) == before
    # a variable that is gone
    del panel.ns["model"]
    panel.attach_button.click()
    assert status_text(panel) == "✗ no variable 'model' in the notebook — load a model with %peft load smollm2 " \
                                 "(or pass --model NAME)"


def test_unsupported_combinations_are_disabled_with_the_reason():
    from peft_magic.panel import PeftPanel

    loaded = pm.load("tiny-llama", bits=4)
    ns = {"model": loaded.model, "tokenizer": loaded.tokenizer}
    p = PeftPanel(ns)
    try:
        assert p.quantized == "4-bit"
        p.method.set("VERA")
        assert not p.method.info.supports_quantized
        assert "[no 4-bit]" in dict((v, k) for k, v in p.method.dropdown.options)["VERA"]
        assert p.attach_button.disabled
        assert "no bitsandbytes support" in p.attach_button.tooltip and "4-bit" in p.reason.value
        p.method.set("LORA")
        assert not p.attach_button.disabled and p.reason.value == ""
        p.attach_button.click()
        assert status_text(p).startswith("✓ attached lora")
        # merging into a 4-bit base would round the weights: merged save is off, with the reason
        assert p.saver.merged.disabled and "4-bit" in p.saver.merged.tooltip
    finally:
        p.close()


def test_a_plain_torch_model_works_too():
    """No transformers config: no preview, no peft default targets — the picker still lists
    the layers, Attach works with ticked layers, and prompt methods say they need a task."""
    import torch

    from peft_magic.panel import PeftPanel

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(16, 32)
            self.fc2 = torch.nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    ns = {"net": Tiny()}
    p = PeftPanel(ns, var="net")
    try:
        assert set(p.targets.boxes) == {"fc1", "fc2"}
        assert "no default target" in p.targets.matches.value or "all-linear" in p.targets.title.value
        assert "\n" not in p.preview_html.value and p.preview_html.value
        p.targets.boxes["fc1"].value = True
        p.form().widget("r").value = 2
        assert p.line.value == "%peft lora r=2 target=fc1 --model net"
        p.attach_button.click()
        assert status_text(p).startswith("✓ attached lora"), status_text(p)
        assert type(ns["net"]).__name__ == "PeftModel"
        assert ns["net"].get_nb_trainable_parameters()[0] == 2 * (16 + 32)
        other = run_line(p.line.value, Tiny()).model
        assert other.get_nb_trainable_parameters() == ns["net"].get_nb_trainable_parameters()
        p.method.set("PROMPT_TUNING")
        assert p.attach_button.disabled and "needs a task type" in p.reason.value
        p.task.value = "causal-lm"
        assert not p.attach_button.disabled
    finally:
        p.close()


def test_prompt_methods_cannot_be_saved_merged(panel):
    _prefix(panel)
    panel.attach_button.click()
    assert status_text(panel).startswith("✓")
    assert panel.saver.merged.disabled
    assert "cannot be merged" in panel.saver.merged.tooltip


# ----------------------------------------------------------------------------- detach, train, save


def test_a_new_panel_for_the_same_variable_retires_the_old_one(panel):
    from peft_magic import events
    from peft_magic.panel import PeftPanel

    second = PeftPanel(panel.ns)
    try:
        assert panel._unsubscribe is None  # the replaced panel no longer follows events
        assert second._on_event in events._subscribers and panel._on_event not in events._subscribers
    finally:
        second.close()


def test_detach_gives_back_the_base_model(panel):
    assert panel.detach_button.disabled
    panel.attach_button.click()
    assert not panel.detach_button.disabled
    panel.detach_button.click()
    assert status_text(panel).startswith("✓ removed all adapters")
    assert type(panel.ns["model"]).__name__ == "LlamaForCausalLM"
    assert pm.show(panel.ns["model"]).adapters == []
    assert panel.attach_button.description == "Attach" and panel.detach_button.disabled


def test_train_button_trains_with_live_progress(panel):
    assert panel.trainer.button.disabled and "attach an adapter first" in panel.trainer.reason.value
    panel.attach_button.click()
    panel.ns["texts"] = [f"the cat sat on the mat number {i % 5}" for i in range(24)]
    panel.trainer.refresh_data()
    panel._update_buttons()
    assert panel.trainer.data.value == "texts"
    panel.trainer.steps.value = 6
    panel.trainer.lr.value = 0.01
    panel.trainer.batch.value = 4
    panel.tabs.selected_index = 1
    assert panel.line.value == "%peft train data=texts steps=6 lr=0.01 batch=4"
    assert not panel.trainer.button.disabled
    panel.trainer.button.click()
    text = status_text(panel)
    assert text.startswith("✓ training completed: 6 steps"), text
    from peft_magic.state import runs

    run = runs()[-1]
    assert run.status == "completed" and run.steps_done == 6
    assert run.losses[-1][1] < run.losses[0][1]  # it learned
    # the same live progress widget as %peft train, hosted in the Train tab
    import ipywidgets as w

    (box,) = panel.trainer.progress.children

    def descendants(widget):
        for child in getattr(widget, "children", ()):
            yield child
            yield from descendants(child)

    (bar,) = [d for d in descendants(box) if isinstance(d, w.IntProgress)]
    assert bar.value == bar.max == 6 and "completed" in box.children[0].value


def test_save_button_writes_the_adapter(panel, tmp_path):
    panel.attach_button.click()
    folder = tmp_path / "my-adapter"
    panel.saver.folder.value = str(folder)
    panel.tabs.selected_index = 2
    assert panel.line.value == f"%peft save {folder}"
    panel.saver.button.click()
    assert status_text(panel).startswith("✓"), status_text(panel)
    assert (folder / "adapter_config.json").exists()
    assert any(p.suffix == ".safetensors" for p in Path(folder).iterdir())
    # saving again refuses to overwrite, in one line, unless asked
    panel.saver.button.click()
    assert status_text(panel).startswith("✗") and "exists" in status_text(panel)
    panel.saver.force.value = True
    assert panel.line.value == f"%peft save {folder} --force"
    panel.saver.button.click()
    assert status_text(panel).startswith("✓")


# ----------------------------------------------------------------------------- one state, real kernel


@pytest.mark.kernel
def test_panel_and_magics_share_one_state_in_a_real_kernel(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("p = %peft panel")
    assert kernel.eval("type(p).__name__") == "PeftPanel"
    # the panel shows as a widget
    res = kernel.ok("p")
    assert res.data("application/vnd.jupyter.widget-view+json")
    # panel → magics: set values, click Attach; %peft show sees it at once
    kernel.ok("f = p.form(); f.widget('r').value = 4; f.widget('lora_alpha').value = 16\n"
              "p.targets.boxes['o_proj'].value = True\n"
              "p.attach_button.click()")
    line = kernel.eval("p.line.value")
    assert line == "%peft lora r=4 target=q_proj,v_proj,o_proj alpha=16"
    shown = kernel.ok("%peft show").text
    assert "lora" in shown and "trainable params: 2,816" in shown
    kernel.ok("cfg1 = model.peft_config['default'].to_dict(); n1 = model.get_nb_trainable_parameters()")
    # the shown line, pasted into a cell, on a freshly loaded model: the same adapter
    kernel.ok("%peft load tiny-llama")
    res = kernel.ok(line)
    assert "attached lora adapter 'default'" in res.text
    assert kernel.eval("model.peft_config['default'].to_dict() == cfg1")
    assert kernel.eval("model.get_nb_trainable_parameters() == n1")
    # magics → panel: the open panel followed the new model and its adapter
    assert kernel.eval("p.line.value") == line
    assert kernel.eval("p.attach_button.description") == "Replace"
    kernel.ok("%peft lora r=2")
    assert kernel.eval("p.form().widget('r').value") == 2
    assert kernel.eval("p.line.value") == "%peft lora r=2"
    assert "outside the panel" in kernel.eval("p.status.value")
    assert "trainable <b>896</b>" in kernel.eval("p.header.value")
    # pressing Attach now changes nothing: the panel holds exactly the magic's request
    kernel.ok("_m = model; p.attach_button.click()")
    assert "nothing changed" in kernel.eval("p.status.value")
    assert kernel.eval("model is _m")
    # errors stay in the panel, as one line
    kernel.ok("p.form().widget('r').value = -1; p.attach_button.click()")
    assert kernel.eval("p.status.value.count('✗')") == 1
    assert kernel.eval("model is _m and model.peft_config['default'].r == 2")
    # the Train tab's line is a working %peft train line; training by magic shows in the panel
    kernel.ok("texts = ['a short text about cats number %d' % i for i in range(8)]")
    kernel.ok("p.trainer.refresh_data(); p.trainer.steps.value = 2; p.trainer.batch.value = 2")
    train_line = kernel.eval("p.trainer.line()")
    assert train_line == "%peft train data=texts steps=2 lr=0.0002 batch=2"
    kernel.ok(train_line)
    assert "training completed (outside the panel): step 2/2" in kernel.eval("p.status.value")
    # the Save tab's line is a working %peft save line
    kernel.ok("p.saver.folder.value = 'saved-by-line'")
    save_line = kernel.eval("p.saver.line()")
    assert save_line == "%peft save saved-by-line"
    kernel.ok(save_line)
    assert kernel.eval("__import__('os').path.exists('saved-by-line/adapter_config.json')")
    kernel.ok("p.close()")


@pytest.mark.kernel
def test_panel_magic_errors_and_help(kernel):
    kernel.ok("%peft load tiny-llama")
    res = kernel.run("%peft panel --model nothing_here")
    assert res.error is not None and res.error["ename"] == "UsageError"
    assert "no variable 'nothing_here'" in res.error_text
    assert "%peft panel" in kernel.ok("%peft help panel").text
    kernel.ok("%peft load tiny-gpt2 --as gpt")
    kernel.ok("q = %peft panel --model gpt")
    assert kernel.eval("q.line.value") == "%peft lora --model gpt"
    assert "c_attn" in kernel.eval("list(q.targets.boxes)")
    kernel.ok("q.attach_button.click()")
    assert kernel.eval("type(gpt).__name__").startswith("PeftModel")
    kernel.ok("q.close()")
