"""What a tab needs from the panel that holds it — a small protocol, so the Train and Save
tabs (``train_save``) depend on this and not on the panel class (which imports them)."""

from __future__ import annotations

from typing import Any, Protocol


class PanelHost(Protocol):
    """The panel as its tabs see it: the notebook, the model, the status line."""

    ns: dict[str, Any]
    var: str
    quantized: str | None  # "4-bit" / "8-bit" for a quantized base, else None
    result: Any  # the HTML widget under the tabs that shows the last result

    def model(self) -> Any: ...

    def tokenizer(self) -> Any: ...

    def adapter_names(self) -> list[str]: ...

    def summary(self) -> Any: ...

    def set_status(self, text: str, ok: bool = True) -> None: ...

    def show_line(self) -> None: ...
