"""The panel's Train and Save tabs (the Save tab's export part is ``export_section``).

Both call the same functions as ``%peft train`` and ``%peft save`` (``api.train``, with
its live display hosted in the tab, and ``adapter_ops.save``) and show the equivalent
line. They talk to the panel through its public methods (``model``, ``tokenizer``,
``adapter_names``, ``guard``, ``show_line``, ``set_status``).

The data picker lists the notebook variables that training accepts — lists of texts or
of dicts, pandas DataFrames, ``datasets`` Datasets — found by type name, so nothing
heavy is imported to look. Preference data (prompt + chosen + rejected, or prompt +
completion + label) is recognised by its columns, and the tab then offers the objectives
it trains with and ``beta``.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..display.widgets import set_tooltip
from ..errors import PeftMagicError
from ..syntax.write import command_line
from .export_section import ExportSection
from .host import PanelHost

_ERR = "color:var(--jp-error-color0,#b91c1c)"
_DIM = "color:var(--jp-ui-font-color2,#666)"
_HIDDEN = {"In", "Out", "exit", "quit", "get_ipython"}


def is_dataset(value: Any) -> bool:
    """Whether ``value`` looks like training data: list of str/dict, DataFrame, datasets.Dataset."""
    if isinstance(value, (list, tuple)):
        return bool(value) and isinstance(value[0], (str, dict))
    mod = type(value).__module__ or ""
    name = type(value).__name__
    if mod.startswith("pandas") and name == "DataFrame":
        return True
    return mod.startswith("datasets") and name in ("Dataset", "DatasetDict", "IterableDataset")


def dataset_variables(ns: dict[str, Any]) -> list[str]:
    return [k for k, v in ns.items() if not k.startswith("_") and k not in _HIDDEN and is_dataset(v)]


def columns_of(value: Any) -> list[str]:
    """The column names of a data variable (the first row's keys, a DataFrame's columns …)."""
    if isinstance(value, (list, tuple)):
        return list(value[0]) if value and isinstance(value[0], dict) else []
    names = getattr(value, "column_names", None)  # datasets.Dataset (a DatasetDict: per split)
    if isinstance(names, dict):
        names = next(iter(names.values()), [])
    if names is None and hasattr(value, "columns"):
        names = [str(c) for c in value.columns]
    return list(names or [])


def preference_shape(value: Any) -> str | None:
    """``"paired"`` / ``"unpaired"`` for preference data (by its columns), else None."""
    from ..tasks.preference import detect_preference

    cols = columns_of(value)
    return detect_preference([dict.fromkeys(cols)]) if cols else None


def _describe(value: Any) -> str:
    try:
        n = len(value)
    except TypeError:
        n = None
    kind = type(value).__name__
    if isinstance(value, (list, tuple)) and value:
        kind = f"list of {type(value[0]).__name__}"
    shape = preference_shape(value)
    kind += f", {shape} preferences" if shape else ""
    return f"{kind}, {n:,} rows" if n is not None else kind


class TrainSection:
    """Data variable, steps, lr, batch and a Train button; hosts the live progress display."""

    def __init__(self, panel: PanelHost) -> None:
        self.panel = panel
        self.data = widgets.Dropdown(options=[], description="data", style={"description_width": "60px"},
                                     layout=widgets.Layout(width="320px"))
        self.data.add_class("pm-data")
        self.reload = widgets.Button(icon="refresh", tooltip="look for data variables again",
                                     layout=widgets.Layout(width="36px"))
        self.steps = widgets.BoundedIntText(value=50, min=1, max=10**9, description="steps",
                                            style={"description_width": "60px"}, layout=widgets.Layout(width="180px"))
        self.lr = widgets.BoundedFloatText(value=2e-4, min=0.0, max=10.0, step=1e-5, description="lr",
                                           style={"description_width": "60px"}, layout=widgets.Layout(width="180px"))
        self.batch = widgets.BoundedIntText(value=4, min=1, max=4096, description="batch",
                                            style={"description_width": "60px"}, layout=widgets.Layout(width="180px"))
        self.eval = widgets.BoundedFloatText(value=0.0, min=0.0, max=0.5, step=0.05, description="eval",
                                             tooltip="hold out this fraction for the task's metrics (0: none)",
                                             style={"description_width": "60px"}, layout=widgets.Layout(width="180px"))
        self.objective = widgets.Dropdown(options=[], description="objective", style={"description_width": "60px"},
                                          layout=widgets.Layout(width="180px"))
        self.objective.add_class("pm-objective")
        self.beta = widgets.BoundedFloatText(value=0.1, min=0.0, max=100.0, step=0.05, description="beta",
                                             tooltip="how far the adapter may move from the base (TRL's beta)",
                                             style={"description_width": "60px"}, layout=widgets.Layout(width="180px"))
        self.beta.add_class("pm-beta")
        self.preference = widgets.HBox([self.objective, self.beta], layout=widgets.Layout(display="none"))
        self.task_info = widgets.HTML()
        self.task_info.add_class("pm-task")
        self.button = widgets.Button(description="Train", button_style="success", icon="play")
        self.button.add_class("pm-train")
        self.reason = widgets.HTML()
        self.progress = widgets.VBox()
        self.progress.add_class("pm-progress")
        self.box = widgets.VBox([self.task_info, widgets.HBox([self.data, self.reload]),
                                 widgets.HBox([self.steps, self.lr, self.batch, self.eval]), self.preference,
                                 widgets.HBox([self.button, self.reason]), self.progress])
        self.refresh_data()
        for w in (self.data, self.steps, self.lr, self.batch, self.eval, self.objective, self.beta):
            w.observe(lambda _c: self._changed(), "value")
        self.objective.observe(lambda c: self._objective_changed(c["new"]), "value")
        self.reload.on_click(lambda _b: self.refresh_data())
        self.button.on_click(lambda _b: panel.guard(self.do_train))

    def _changed(self) -> None:
        self.update()
        self.panel.show_line()

    def refresh_data(self) -> None:
        names = dataset_variables(self.panel.ns)
        opts = [(f"{n} ({_describe(self.panel.ns[n])})", n) for n in names]
        if [o[1] for o in opts] != [o[1] for o in self.data.options] or \
                [o[0] for o in opts] != [o[0] for o in self.data.options]:
            keep = self.data.value
            self.data.options = opts
            self.data.value = keep if keep in names else (names[0] if names else None)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.data.value:
            out["data"] = self.data.value
        out.update(steps=int(self.steps.value), lr=float(self.lr.value), batch=int(self.batch.value))
        if self.eval.value > 0:
            out["eval"] = round(float(self.eval.value), 4)
        if self._shape() and self.objective.value:
            out.update(objective=self.objective.value, beta=round(float(self.beta.value), 6))
        return out

    def _shape(self) -> str | None:
        value = self.panel.ns.get(self.data.value) if self.data.value else None
        return preference_shape(value) if value is not None else None

    def _objective_changed(self, name: str | None) -> None:
        """Each objective's own default beta (SimPO's is on another scale than DPO's)."""
        from ..tasks.preference import OBJECTIVES

        if name in OBJECTIVES:
            self.beta.value = OBJECTIVES[name].beta

    def _show_objectives(self, shape: str | None) -> None:
        """The objectives that train on this data's shape (the shape's default first), and beta."""
        from ..tasks.preference import DEFAULT_OBJECTIVE, OBJECTIVES

        self.preference.layout.display = "" if shape else "none"
        if not shape:
            return
        names = [DEFAULT_OBJECTIVE[shape]] + [n for n, o in OBJECTIVES.items()
                                              if shape in o.shapes and n != DEFAULT_OBJECTIVE[shape]]
        if list(self.objective.options) != names:
            keep = self.objective.value
            self.objective.options = names
            self.objective.value = keep if keep in names else names[0]

    def line(self) -> str:
        flags = {"--model": self.panel.var} if self.panel.var != "model" else {}
        return command_line("train", [], self.settings(), flags)

    def why_not(self) -> str | None:
        """Why training cannot start now, or ``None``."""
        if not self.panel.adapter_names():
            return "attach an adapter first (Adapter tab)"
        if not self.data.value:
            return ("no data in the notebook: make a list of texts (or dicts), a DataFrame or a "
                    "datasets.Dataset, then press ↻")
        return None

    def _show_task(self) -> None:
        """Which task the model trains for, and the data shape that takes."""
        from ..model.properties import infer_task
        from ..tasks.families import FAMILIES
        from ..tasks.preference import SHAPES

        try:
            fam = FAMILIES.get(infer_task(self.panel.model()) or "CAUSAL_LM")
        except PeftMagicError:
            fam = None
        shape = self._shape() if fam is not None and fam.task == "CAUSAL_LM" else None
        self._show_objectives(shape)
        if shape:
            self.task_info.value = (f"<span style='{_DIM}'>preference tuning ({html.escape(shape)} data: "
                                    f"{html.escape(SHAPES)}) · readouts: rewards chosen / rejected, margin, "
                                    "accuracy · the reference is the base model</span>")
            return
        self.task_info.value = "" if fam is None else (
            f"<span style='{_DIM}'>task: <b>{html.escape(fam.title)}</b> · data: {html.escape(fam.shapes)} · "
            f"metrics with eval: {html.escape(', '.join(fam.metrics))}</span>")

    def update(self) -> None:
        self._show_task()
        reason = self.why_not()
        self.button.disabled = reason is not None
        self.button.tooltip = reason or "train the active adapter"
        self.reason.value = f"<span style='{_DIM}'>{html.escape(reason)}</span>" if reason else ""

    def do_train(self) -> None:
        """Train with the same live progress display as ``%peft train``, hosted in this tab."""
        from ..api import train

        reason = self.why_not()
        if reason:
            raise PeftMagicError(reason)
        model = self.panel.model()
        name = self.data.value
        if name not in self.panel.ns:
            raise PeftMagicError(f"no variable '{name}' in the notebook any more", "press ↻ to look again")
        tokenizer = self.panel.tokenizer()
        if tokenizer is None:
            var = self.panel.var
            raise PeftMagicError(f"no tokenizer found (looked for 'tokenizer' and '{var}_tokenizer')",
                                 "load the model with %peft load")
        line = self.line()
        view = panel_view()
        self.progress.children = [view.widget] if view is not None else []
        settings = {k: v for k, v in self.settings().items() if k != "data"}
        run = train(model, self.panel.ns[name], tokenizer=tokenizer, display=view, **settings)
        text = f"training {run.status}: {run.steps_done} steps"
        if run.final_loss is not None:
            text += f", final loss {run.final_loss:.4f}"
        self.panel.set_status(f"{text} — same as {line}", ok=run.status == "completed")


def panel_view() -> Any:
    """``%peft train``'s own live view, drawn inside the panel.

    The magic displays its view as a new cell output; a button callback has no cell to
    display into, so the panel shows the view's widget in the Train tab (``hosted``: no
    cell output, no static HTML copy).
    """
    from ..display.progress import TrainingView

    try:
        return TrainingView("hosted")
    except ImportError:
        return None


class SaveSection:
    """Adapter, folder, merged / overwrite switches and a Save button (``peft_magic.save``)."""

    def __init__(self, panel: PanelHost) -> None:
        self.panel = panel
        self.adapter = widgets.Dropdown(options=[("active adapter", "")], value="", description="adapter",
                                        style={"description_width": "60px"}, layout=widgets.Layout(width="320px"))
        self.folder = widgets.Text(value="adapters/my-adapter", description="folder", continuous_update=False,
                                   style={"description_width": "60px"}, layout=widgets.Layout(width="420px"))
        self.folder.add_class("pm-folder")
        self.merged = widgets.Checkbox(value=False, description="merged model (adapter folded into the weights)",
                                       indent=False)
        self.force = widgets.Checkbox(value=False, description="overwrite an existing folder", indent=False)
        self.button = widgets.Button(description="Save", button_style="info", icon="save")
        self.button.add_class("pm-save")
        self.reason = widgets.HTML()
        self.export = ExportSection(panel)  # merged / GGUF / Ollama, below the adapter save
        self.box = widgets.VBox([self.adapter, self.folder, self.merged, self.force,
                                 widgets.HBox([self.button, self.reason]), self.export.box])
        for w in (self.adapter, self.folder, self.merged, self.force):
            w.observe(lambda _c: self._changed(), "value")
        self.button.on_click(lambda _b: panel.guard(self.do_save))

    def _changed(self) -> None:
        self.export.touched = False
        self.update()
        self.panel.show_line()

    def line(self) -> str:
        if self.export.touched:  # the line of the part of the tab used last
            return self.export.line()
        flags: dict[str, Any] = {}
        if self.panel.var != "model":
            flags["--model"] = self.panel.var
        if self.adapter.value:
            flags["--name"] = self.adapter.value
        flags["--merged"] = bool(self.merged.value)
        flags["--force"] = bool(self.force.value)
        return command_line("save", [self.folder.value.strip() or "DIR"], {}, flags)

    def _adapter_type(self) -> str | None:
        """The PeftType of the adapter that Save would write (the chosen one, else the active one)."""
        s = self.panel.summary()
        if s is None or not s.adapters:
            return None
        chosen = [a for a in s.adapters if a.name == self.adapter.value] or [a for a in s.adapters if a.active]
        return chosen[0].peft_type if chosen else None

    def _merge_reason(self) -> str | None:
        """Why the adapter cannot be saved merged (prompt methods, a 4-bit base …), or ``None``."""
        from ..peft_methods.discovery import method_info

        pt = self._adapter_type()
        if pt is None:
            return None
        info = method_info(pt)
        if info is not None and not info.can_merge:
            return f"{info.name} cannot be merged into the base weights: save the adapter itself"
        if self.panel.quantized:
            return (f"merging into a {self.panel.quantized} base would save rounded weights: "
                    "%peft merge --dequantize first, or save the adapter")
        return None

    def why_not(self) -> str | None:
        if not self.panel.adapter_names():
            return "attach an adapter first (Adapter tab)"
        if not self.folder.value.strip():
            return "which folder?"
        return None

    def update(self) -> None:
        names = self.panel.adapter_names()
        opts = [("active adapter", "")] + [(n, n) for n in names]
        if list(self.adapter.options) != opts:
            keep = self.adapter.value
            self.adapter.options = opts
            self.adapter.value = keep if keep in names else ""
        merge_reason = self._merge_reason()
        if merge_reason is not None:
            if self.merged.value:
                self.merged.value = False
            self.merged.disabled = True
            set_tooltip(self.merged, merge_reason)
        else:
            self.merged.disabled = False
            set_tooltip(self.merged, "save the base model with the adapter merged in (loads without peft)")
        reason = self.why_not()
        self.button.disabled = reason is not None
        self.button.tooltip = reason or "save"
        shown = reason or (f"merged: {merge_reason}" if merge_reason else None)
        self.reason.value = f"<span style='{_DIM}'>{html.escape(shown)}</span>" if shown else ""
        self.export.update()

    def do_save(self) -> None:
        from ..adapter_ops.save import save

        reason = self.why_not()
        if reason:
            raise PeftMagicError(reason)
        line = self.line()
        result = save(self.panel.model(), self.folder.value.strip(), name=self.adapter.value or None,
                      merged=bool(self.merged.value), force=bool(self.force.value),
                      tokenizer=self.panel.tokenizer())
        self.panel.result.value = result._repr_html_() or ""
        self.panel.set_status(f"{result.message} — same as {line}")


__all__ = ["TrainSection", "SaveSection", "dataset_variables", "is_dataset"]
