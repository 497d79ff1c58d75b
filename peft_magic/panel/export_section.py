"""The Save tab's export part: merged model, GGUF or Ollama, with the size before the button.

It calls the same engine function as ``%peft export`` (``exporting.export.export``) and
shows the equivalent line. Before the button is pressed it shows what the export will
take on disk and what is free there (``exporting.export.estimate``), or why it cannot
run (an adapter that cannot be merged, no tokenizer, no converter). While it runs, the
live bar of ``%peft export`` (``display.export_view.LiveExport``) is drawn in the tab.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..errors import PeftMagicError
from ..syntax.write import command_line
from .host import PanelHost

_DIM = "color:var(--jp-ui-font-color2,#666)"
_ERR = "color:var(--jp-error-color0,#b91c1c)"
FORMATS = (("merged model (transformers)", "merged"), ("GGUF (llama.cpp)", "gguf"),
           ("Ollama (GGUF + Modelfile)", "ollama"))


class ExportSection:
    """Format, GGUF type, folder, overwrite, the disk line and an Export button."""

    def __init__(self, panel: PanelHost) -> None:
        from ..exporting.gguf import DEFAULT_QUANT, QUANTS

        self.panel = panel
        self.touched = False
        style = {"description_width": "60px"}
        self.format = widgets.Dropdown(options=FORMATS, value="gguf", description="export", style=style,
                                       layout=widgets.Layout(width="320px"))
        self.quant = widgets.Dropdown(options=[(f"{q} — {what.split(':')[0]}", q) for q, what in QUANTS.items()],
                                      value=DEFAULT_QUANT, description="type", style=style,
                                      layout=widgets.Layout(width="320px"))
        self.folder = widgets.Text(value="exports/my-model", description="folder", continuous_update=False,
                                   style=style, layout=widgets.Layout(width="420px"))
        self.folder.add_class("pm-export-folder")
        self.force = widgets.Checkbox(value=False, description="replace an existing export", indent=False)
        self.size = widgets.HTML()
        self.size.add_class("pm-export-size")
        self.button = widgets.Button(description="Export", button_style="info", icon="share-square")
        self.button.add_class("pm-export")
        self.progress = widgets.VBox()
        title = widgets.HTML(f"<b>Export for use outside the notebook</b> <span style='{_DIM}'>(the adapter "
                             "merged into the weights)</span>")
        self.box = widgets.VBox([title, self.format, self.quant, self.folder, self.force, self.size, self.button,
                                 self.progress])
        for w in (self.format, self.quant, self.folder, self.force):
            w.observe(lambda _c: self._changed(), "value")
        self.button.on_click(lambda _b: panel.guard(self.do_export))

    def _changed(self) -> None:
        self.touched = True
        self.update()
        self.panel.show_line()

    def settings(self) -> dict[str, Any]:
        return {"quant": self.quant.value} if self.format.value != "merged" else {}

    def line(self) -> str:
        flags: dict[str, Any] = {"--model": self.panel.var} if self.panel.var != "model" else {}
        flags["--force"] = bool(self.force.value)
        return command_line("export", [self.format.value, self.folder.value.strip() or "PATH"], self.settings(), flags)

    def why_not(self) -> str | None:
        """Why the export cannot run now (shown instead of the size line), or ``None``."""
        from ..exporting.converter import find

        if not self.folder.value.strip():
            return "which folder?"
        if self.panel.tokenizer() is None:
            return "no tokenizer found: the export needs it (load the model with %peft load)"
        if self.format.value != "merged":
            try:
                if find() is None:
                    from ..exporting.converter import FETCH_COMMAND

                    return f"GGUF needs llama.cpp's converter: run {FETCH_COMMAND} once"
            except PeftMagicError as e:
                return str(e)
        return None

    def update(self) -> None:
        from ..exporting.export import estimate

        self.quant.layout.display = "none" if self.format.value == "merged" else None
        reason = self.why_not()
        line = None
        if reason is None:
            try:
                need = estimate(self.panel.model(), self.format.value, self.folder.value.strip(),
                                quant=self.settings().get("quant"), tokenizer=self.panel.tokenizer())
                line = need.line()
                if not need.fits:
                    reason = f"does not fit: {line}"
            except PeftMagicError as e:
                reason = str(e)
        self.button.disabled = reason is not None
        self.button.tooltip = reason or "export"
        self.size.value = (f"<span style='{_ERR if reason else _DIM}'>{html.escape(reason or line or '')}</span>")

    def do_export(self) -> None:
        from ..display.export_view import LiveExport
        from ..exporting.export import export

        reason = self.why_not()
        if reason:
            raise PeftMagicError(reason)
        line = self.line()
        live = LiveExport("hosted")  # drawn here, in the tab: a button has no cell output
        self.progress.children = [live.widget]
        try:
            with live:
                result = export(self.panel.model(), self.format.value, self.folder.value.strip(),
                                tokenizer=self.panel.tokenizer(), force=bool(self.force.value), **self.settings())
        finally:
            self.progress.children = []  # the status line says how it ended
        self.panel.result.value = result._repr_html_() or ""
        self.panel.set_status(f"{result.message} — same as {line}")


__all__ = ["ExportSection"]
