"""``%peft panel``: configure, attach, train and save from a form — and learn the magics.

The panel is a face like the magics: it turns widget values into the same engine calls
(``attach``, ``detach``, ``preview``, ``train``, ``save``) and never reaches into peft.
Three promises shape it:

* **It teaches the syntax.** The equivalent ``%peft …`` line is always on show
  (``syntax/write.py`` guarantees the magic's parser reads it back to the same settings), and
  the panel attaches with exactly the settings that line carries, so pasting it into a
  cell gives the same adapter.
* **One state with the magics.** The panel keeps no model of its own: it reads the
  notebook variable each time, rebinds it after attaching (as ``%peft lora`` does), and
  follows the engine's events and the cells the user runs, so a ``%peft lora`` typed in a
  cell shows up in an open panel and a panel attach shows up in ``%peft show``.
* **Errors are one line, nothing half-applied.** Every button goes through one guard
  that shows a ``PeftMagicError`` (or any other failure's first line) in the status
  line; the engine's attach validates on a skeleton and rolls back, and the variable is
  rebound only after success.

Over 450 lines: one widget class whose Adapter tab, line, status and event / cell hooks
share the panel's state (the model variable, the forms per method, the preview cache);
the Train and Save tabs, the method picker, the target picker and the settings form are
modules of their own and talk to it through its public methods.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .. import notebook
from ..adapter_ops.attach import attach, detach
from ..adapter_ops.preview import preview
from ..adapter_ops.summary import show
from ..display.widgets import set_tooltip, tab, view_bundle
from ..errors import PeftMagicError, first_line
from ..fmt import group_names
from ..model.properties import infer_task, quantization_of
from ..peft_methods.behaviour import adaptive_defaults
from ..peft_methods.discovery import MethodInfo, resolve_method
from ..state import unwrap
from ..syntax.write import attach_line, method_word
from .following import TASKS, FollowsNotebook
from .form import SettingsForm
from .method_picker import MethodPicker, unsupported_reason
from .targets_picker import TargetsPicker
from .train_save import SaveSection, TrainSection

_OK = "color:var(--jp-success-color0,#15803d)"
_ERR = "color:var(--jp-error-color0,#b91c1c)"
_DIM = "color:var(--jp-ui-font-color2,#666)"


class PeftPanel(FollowsNotebook, widgets.VBox):
    """The widget panel for the model in notebook variable ``var`` of ``namespace``.

    ``PeftPanel(globals())`` works from plain Python too; ``%peft panel`` passes the
    shell's namespace and the shell itself (to follow the cells the user runs).
    """

    def __init__(self, namespace: dict[str, Any] | None = None, var: str = "model", shell: Any = None) -> None:
        super().__init__()
        self.add_class("peft-magic-panel")
        self.ns: dict[str, Any] = namespace if namespace is not None else {}
        self.var = var
        self.shell = shell
        self._busy = False
        self._hold = 0  # >0 while many widgets change at once: recompute once at the end
        self._adapter_line = ""
        self._word: str | None = None  # an alias the current adapter was attached with (dora, qlora…)
        self._forms: dict[str, SettingsForm] = {}
        self._preview_cache: dict[str, str] = {}
        self._base_ref: Any = None
        self._line_value = ""
        self.quantized: str | None = None
        self.targets: TargetsPicker | None = None

        model = self.model()
        self._build_widgets()
        self._wire()
        self._follow(var, shell)
        self._rebuild(model)

    def _build_widgets(self) -> None:
        """The three tabs, the magic line, the status and result lines."""
        self.header = widgets.HTML()
        self.method = MethodPicker()
        self.name = widgets.Text(value="default", description="adapter", continuous_update=False,
                                 style={"description_width": "60px"}, layout=widgets.Layout(width="230px"))
        self.task = widgets.Dropdown(options=TASKS, value="", description="task",
                                     style={"description_width": "40px"}, layout=widgets.Layout(width="260px"))
        self.settings_box = widgets.VBox()
        self.preview_html = widgets.HTML()
        self.preview_html.add_class("pm-preview")
        self.reason = widgets.HTML()
        self.attach_button = widgets.Button(description="Attach", button_style="primary", icon="plus")
        self.attach_button.add_class("pm-attach")
        self.detach_button = widgets.Button(description="Detach", icon="minus")
        self.detach_button.add_class("pm-detach")
        adapter_tab = widgets.VBox([
            self.method.box, widgets.HBox([self.name, self.task]), self.settings_box, self.preview_html,
            self.reason, widgets.HBox([self.attach_button, self.detach_button]),
        ])
        self.trainer = TrainSection(self)
        self.saver = SaveSection(self)
        self.tabs = tab([adapter_tab, self.trainer.box, self.saver.box], ("Adapter", "Train", "Save"))
        self.line = widgets.Text(value="", description="as a magic", style={"description_width": "80px"},
                                 layout=widgets.Layout(width="100%"))
        set_tooltip(self.line, "the same as a %peft line: copy it into a cell")
        self.line.add_class("pm-line")
        self.status = widgets.HTML()
        self.status.add_class("pm-status")
        self.result = widgets.HTML()
        self.result.add_class("pm-result")
        self.children = [self.header, self.tabs, self.line, self.status, self.result]

    def _wire(self) -> None:
        """Widget changes → recompute the preview and the magic line; buttons → actions."""
        self.method.on_change(self._on_method)
        self.name.observe(lambda _c: self._changed(), "value")
        self.task.observe(lambda _c: self._changed(), "value")
        self.line.observe(self._keep_line, "value")
        self.tabs.observe(lambda _c: self.show_line(), "selected_index")
        self.attach_button.on_click(lambda _b: self.guard(self.do_attach))
        self.detach_button.on_click(lambda _b: self.guard(self.do_detach))

    def _rebuild(self, model: Any) -> None:
        """Point the panel's model parts (targets, preview, record) at ``model`` and redraw."""
        self._hold += 1
        try:
            self._bind_model(model)
            self._show_record(model)
        finally:
            self._hold -= 1
        self._changed()
        self.refresh()

    # ----------------------------------------------------------------------- model access

    def model(self) -> Any:
        """The model in the notebook variable right now (the panel holds no copy of its own)."""
        return notebook.get_model(self.ns, self.var)

    def tokenizer(self) -> Any:
        """The tokenizer that goes with the model variable, as the magics find it."""
        return notebook.find_tokenizer(self.ns, self.var)

    def _bind_model(self, model: Any) -> None:
        """(Re)build what depends on the model: 4-bit marks, adaptive defaults, the layer list."""
        base = unwrap(model)
        self._base_ref = weakref.ref(base)
        self.quantized = quantization_of(base)
        self._forms.clear()
        self._preview_cache.clear()
        self.method.quantized = self.quantized
        peft_type = self.method.value
        self.method.set(peft_type)  # relabels the [no 4-bit] marks
        self.targets = None
        self.targets = TargetsPicker(model, peft_type)
        self.targets.on_change(self._changed)
        self._show_form()

    def _model_changed(self) -> bool:
        obj = self.ns.get(self.var)
        if obj is None or not notebook.is_model(obj):
            return False
        current = self._base_ref() if self._base_ref is not None else None
        return unwrap(obj) is not current

    # ----------------------------------------------------------------------- the form

    def form(self, info: MethodInfo | None = None) -> SettingsForm:
        """The generated form of ``info`` (default: the chosen method), built once per model."""
        info = info or self.method.info
        form = self._forms.get(info.peft_type)
        if form is None:
            defaults = {name: f.default for name, f in info.fields.items()}
            try:
                base = self._base_ref() if self._base_ref is not None else None
                config = getattr(base, "config", None)
                layers = getattr(config, "num_hidden_layers", None)
                defaults.update(adaptive_defaults(resolve_method(method_word(info)), config, {}, layers))
            except PeftMagicError:
                pass
            skip = ("target_modules",) if "target_modules" in info.fields else ()
            form = SettingsForm(method_word(info), info.fields, defaults, skip=skip)
            form.observe(lambda _c: self._changed())
            self._forms[info.peft_type] = form
        return form

    def _show_form(self) -> None:
        info = self.method.info
        form = self.form(info)
        parts: list[widgets.Widget] = [form.main]
        if "target_modules" in info.fields and self.targets is not None:
            parts.append(self.targets.box)
        parts.append(form.advanced)
        self.settings_box.children = parts

    def _on_method(self, peft_type: str) -> None:
        self._word = None
        if self.targets is not None:
            self.targets.set_method(peft_type)
        self._show_form()
        self._changed()

    def request(self) -> tuple[str, dict[str, Any], str, str | None]:
        """``(method word, settings, adapter name, task)`` the panel would attach with.

        Settings are the fields that differ from the defaults this model gets anyway, in
        the config's field order; one-line ``PeftMagicError`` for an unreadable value.
        """
        info = self.method.info
        form = self.form(info)
        values = form.values()
        if "target_modules" in info.fields and self.targets is not None:
            tv = self.targets.value()
            if tv is not None:
                values["target_modules"] = tv
        settings = {k: values[k] for k in info.fields if k in values}
        word = method_word(info)
        if self._word:
            spec = resolve_method(self._word)
            if spec.info.peft_type == info.peft_type and all(
                    k in form.fields and _same(form[k].raw(), v) for k, v in spec.preset.items()):
                word = self._word
                for k in spec.preset:
                    settings.pop(k, None)
        name = self.name.value.strip() or "default"
        task = self.task.value or None
        return word, settings, name, task

    def magic_line(self) -> str:
        """The ``%peft …`` line for the current settings (what Attach will do)."""
        word, settings, name, task = self.request()
        return attach_line(word, settings, name=name, task=task, var=self.var)

    # ----------------------------------------------------------------------- live parts

    def _changed(self) -> None:
        """Any setting changed: new line, new preview, new button state."""
        if self._hold:
            return
        try:
            line = self.magic_line()
            self._adapter_line = line
        except PeftMagicError as e:
            self._adapter_line = ""
            self.preview_html.value = f"<span style='{_ERR}'>{html.escape(str(e))}</span>"
            self.show_line()
            self._update_buttons()
            return
        self.show_line()
        self._update_preview()
        self._update_buttons()

    def _update_preview(self) -> None:
        try:
            word, settings, name, task = self.request()
            model = self.model()
        except PeftMagicError as e:
            self.preview_html.value = f"<span style='{_ERR}'>{html.escape(str(e))}</span>"
            return
        key = repr((word, sorted(settings.items(), key=lambda kv: kv[0]), name, task, id(unwrap(model))))
        if key in self._preview_cache:
            self.preview_html.value = self._preview_cache[key]
            return
        try:
            p = preview(model, word, name=name, task=task, **settings)
        except PeftMagicError as e:
            text = f"<span style='{_ERR}'>{html.escape(str(e))}</span>"
        except Exception as e:  # an architecture the skeleton cannot rebuild: no preview, attach still works
            text = f"<span style='{_DIM}'>no preview for this model ({html.escape(first_line(e))})</span>"
        else:
            where = f" · {len(p.targets)} modules: {html.escape(group_names(p.targets))}" if p.targets else \
                " · no modules replaced (virtual tokens / prompt encoder)"
            text = (f"would train <b>{p.trainable:,}</b> of {p.total:,} parameters "
                    f"(<b>{p.percent:.4f}%</b>){where}")
        self._preview_cache[key] = text
        self.preview_html.value = text

    def summary(self) -> Any:
        """``%peft show``'s data for the model now (``None`` when the variable is gone)."""
        try:
            return show(self.model())
        except PeftMagicError:
            return None

    def adapter_names(self) -> list[str]:
        """The names of the model's adapters (empty when the variable holds no model)."""
        s = self.summary()
        return [a.name for a in s.adapters] if s is not None else []

    def _update_buttons(self) -> None:
        adapters = self.adapter_names()
        name = self.name.value.strip() or "default"
        self.attach_button.description = "Replace" if name in adapters else "Attach"
        reason = self.why_not()
        self.attach_button.disabled = reason is not None
        self.attach_button.tooltip = reason or ("replace adapter '%s' with these settings" % name if name in adapters
                                                else "attach with these settings")
        self.reason.value = f"<span style='{_ERR}'>{html.escape(reason)}</span>" if reason else ""
        self.detach_button.disabled = not adapters
        self.detach_button.tooltip = "remove every adapter" if adapters else "no adapter to detach"
        self.trainer.update()
        self.saver.update()

    def why_not(self) -> str | None:
        """Why the chosen method cannot be attached to this model as set, or ``None``."""
        info = self.method.info
        reason = unsupported_reason(info, self.quantized)
        if reason is None and info.is_prompt_learning and not self.task.value:
            base = self._base_ref() if self._base_ref is not None else None
            if base is not None and infer_task(base) is None:
                reason = (f"{method_word(info)} needs a task type and {type(base).__name__} does not imply one: "
                          "choose it under 'task'")
        return reason

    def show_line(self) -> None:
        """Show the line of the selected tab (adapter, train or save)."""
        index = self.tabs.selected_index or 0
        line = [getattr(self, "_adapter_line", ""), self.trainer.line(), self.saver.line()][index]
        self._line_value = line
        self.line.value = line

    def _keep_line(self, change: Any) -> None:
        """The line is read-only: an edit is put back (it can still be selected and copied)."""
        if change["new"] != self._line_value:
            self.line.value = self._line_value

    def set_status(self, text: str, ok: bool = True) -> None:
        style = _OK if ok else _ERR
        mark = "✓" if ok else "✗"
        self.status.value = f"<span style='{style}'>{mark} {html.escape(' '.join(text.split()))}</span>"

    def refresh(self) -> None:
        """Re-read the model's state: header, button labels, the train/save sections."""
        try:
            model = self.model()
        except PeftMagicError as e:
            self.header.value = f"<b>peft_magic</b> · <span style='{_ERR}'>{html.escape(str(e))}</span>"
            return
        s = show(model)
        quant = f", {s.quantization}" if s.quantization else ""
        adapters = ", ".join(f"{a.name} ({a.method}{', active' if a.active else ''})" for a in s.adapters) or "none"
        self.header.value = (
            f"<div class='peft-magic'><b>peft_magic panel</b> · <code>{html.escape(self.var)}</code>: "
            f"{html.escape(s.model_class)} <span style='{_DIM}'>({html.escape(s.model_type)}{quant}, "
            f"{html.escape(s.dtype)}, {html.escape(s.device)})</span> · adapters: {html.escape(adapters)} · "
            f"trainable <b>{s.trainable:,}</b> / {s.total:,} ({s.percent:.4f}%)</div>")
        self._update_buttons()
        self.show_line()

    # ----------------------------------------------------------------------- actions

    def guard(self, action: Callable[[], None]) -> None:
        """Run a button's action; any failure becomes one status line, never a traceback."""
        self._busy = True
        try:
            action()
        except PeftMagicError as e:
            self.set_status(str(e), ok=False)
        except KeyboardInterrupt:
            self.set_status("interrupted", ok=False)
        except Exception as e:
            self.set_status(f"{type(e).__name__}: {first_line(e)}", ok=False)
        finally:
            self._busy = False
            self.refresh()

    def bind(self, value: Any) -> None:
        """Put ``value`` into the notebook variable, as the magics do."""
        notebook.bind_model(self.ns, self.var, value)

    def do_attach(self) -> None:
        """Attach (or replace) the adapter with the form's settings — the shown line's settings."""
        model = self.model()
        if self._model_changed():
            self._bind_model(model)
            self._changed()
            raise PeftMagicError(f"'{self.var}' holds another model now: the panel has re-read its layers",
                                 "check the settings and press Attach again")
        reason = self.why_not()
        if reason:
            raise PeftMagicError(reason)
        word, settings, name, task = self.request()
        line = attach_line(word, settings, name=name, task=task, var=self.var)
        result = attach(model, word, name=name, task=task, **settings)
        self.bind(result.model)
        self.result.value = result._repr_html_()
        s = result.summary
        tail = f" · trainable {s.trainable:,} / {s.total:,} ({s.percent:.4f}%)" if s is not None else ""
        self.set_status(f"{result.headline}{tail} — same as {line}")

    def do_detach(self) -> None:
        """Remove every adapter; the variable holds the plain base model again."""
        base = detach(self.model())
        self.bind(base)
        self.result.value = ""
        self.set_status(f"removed all adapters: '{self.var}' is the base model again")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget, plus static HTML for viewers without widgets (GitHub, nbviewer)."""
        line = html.escape(self._adapter_line or "")
        static = (f"{self.header.value}<div style='{_DIM}'>(the interactive panel needs a "
                  f"notebook with widgets) — as a magic: <code>{line}</code></div>")
        return view_bundle(self, static, repr(self))

    # ipywidgets 7 displays a widget through this hook (widget view only, no HTML beside
    # it); without it IPython asks _repr_mimebundle_, as on ipywidgets 8.
    _ipython_display_ = None

    def __repr__(self) -> str:
        return (f"peft_magic panel for '{self.var}' (a widget: it shows in a notebook front end; "
                f"in a terminal use the %peft magics, e.g. {self._adapter_line or '%peft lora r=8'})")


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
