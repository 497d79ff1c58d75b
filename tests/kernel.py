"""A real Jupyter kernel for tests, driven by nbclient one cell at a time.

Why cell by cell: kernel tests check state between steps (did the failed command leave
the model unchanged?), which a whole-notebook run cannot. The cells are kept in a real
``nbformat`` notebook, so a test can also save it and inspect what a saved notebook
would show (static HTML, widget state).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class CellResult:
    cell: Any
    reply: dict | None = None  # the kernel's execute_reply content

    @property
    def outputs(self) -> list[dict]:
        return list(self.cell.outputs)

    @property
    def error(self) -> dict | None:
        """The error, from the execute_reply (IPython reports a UsageError as a red stderr
        line, not as an error output, but the reply's status is still ``error``)."""
        for o in self.outputs:
            if o.get("output_type") == "error":
                return o
        if self.reply and self.reply.get("status") == "error":
            return {"ename": self.reply.get("ename"), "evalue": self.reply.get("evalue"),
                    "traceback": self.reply.get("traceback", [])}
        return None

    @property
    def error_text(self) -> str:
        """Everything the user sees of the error: error outputs and stderr."""
        e = self.error
        if e is None:
            return ""
        shown = [o for o in self.outputs if o.get("output_type") == "error"]
        text = "\n".join("\n".join(o.get("traceback", [])) for o in shown)
        return ANSI.sub("", (text + "\n" + self.stderr).strip())

    @property
    def stdout(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs
                       if o.get("output_type") == "stream" and o.get("name") == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs
                       if o.get("output_type") == "stream" and o.get("name") == "stderr")

    def data(self, mime: str) -> list[str]:
        out = []
        for o in self.outputs:
            if o.get("output_type") in ("execute_result", "display_data") and mime in o.get("data", {}):
                v = o["data"][mime]
                out.append(v if isinstance(v, str) else json.dumps(v))
        return out

    @property
    def text(self) -> str:
        return self.stdout + "\n".join(self.data("text/plain"))

    @property
    def html(self) -> str:
        return "\n".join(self.data("text/html"))

    def ok(self) -> CellResult:
        assert self.error is None, f"cell failed:\n{self.error_text}\n--- stderr:\n{self.stderr}"
        return self

    def one_line_error(self) -> str:
        """peft_magic's error for this cell, checked to be what a user must see: a
        ``UsageError`` whose message (the execute reply's ``evalue``) is one line, shown as
        that one ``UsageError: …`` line, with no traceback. Returns the message.

        It reads the reply, not the whole stderr block: a library that prints at import
        (a fresh kernel's first heavy command) must not be counted as part of peft_magic's
        error, nor hide one. Whether a normal run writes anything else to stderr is a
        separate check."""
        e = self.error
        assert e is not None, f"the cell did not fail: {self.text}"
        assert e.get("ename") == "UsageError", f"not a UsageError:\n{self.error_text}"
        message = str(e.get("evalue") or "").strip()
        assert message and "\n" not in message, f"not one line: {message!r}"
        assert not [o for o in self.outputs if o.get("output_type") == "error"], self.error_text
        shown = ANSI.sub("", self.stderr)
        assert "Traceback" not in shown, shown
        assert f"UsageError: {message}" in shown.splitlines(), f"the line shown is not the error:\n{shown}"
        return message


class Kernel:
    """Start a kernel; ``run(code)`` executes one cell and returns its outputs."""

    def __init__(self, timeout: int = 600, cwd: str | Path | None = None, kernel_name: str = "python3",
                 env: dict[str, str] | None = None) -> None:
        """``env``: the kernel's whole environment (default: this process's)."""
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
        resources = {"metadata": {"path": str(cwd)}} if cwd else {}
        self._replies: dict[int, dict] = {}
        self.client = NotebookClient(self.nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                                     resources=resources, store_widget_state=True,
                                     on_cell_executed=self._on_executed)
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(cwd=str(cwd) if cwd else None, **({"env": env} if env is not None else {}))
        self.client.start_new_kernel_client()

    def _on_executed(self, cell: Any, cell_index: int, execute_reply: dict) -> None:
        self._replies[cell_index] = execute_reply.get("content", {})

    def run(self, code: str) -> CellResult:
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        index = len(self.nb.cells) - 1
        self.client.execute_cell(cell, index)
        return CellResult(cell, self._replies.get(index))

    def ok(self, code: str) -> CellResult:
        return self.run(code).ok()

    def eval(self, expr: str) -> Any:
        """Evaluate a Python expression in the kernel and return its value (via JSON)."""
        res = self.ok(f"import json as _json; print('@@' + _json.dumps({expr}))")
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("@@")][-1]
        return json.loads(line[2:])

    def interrupt(self) -> None:
        """Press the stop button (SIGINT to the kernel, as JupyterLab does)."""
        from jupyter_core.utils import run_sync

        run_sync(self.client.km.interrupt_kernel)()

    def save(self, path: str | Path) -> Path:
        """Write the notebook with widget state, as JupyterLab would save it."""
        path = Path(path)
        if self.client.widget_state:
            self.client.set_widgets_metadata()
        nbformat.write(self.nb, str(path))
        return path

    def shutdown(self) -> None:
        """Stop the kernel at once, and whatever it started that is still running.

        Why not jupyter_client's graceful shutdown: it waits while the kernel's interpreter
        finalizes torch, transformers and the model — ~1.5 s of CPU per kernel (measured on a
        kernel with SmolLM2 loaded: 1.62 s graceful, 0.11 s immediate), about 40 s across the
        suite — and the kernel's exit is not what any test checks. A kernel's child processes
        (torchrun workers start a session of their own) are stopped with it."""
        children = []
        try:
            import psutil

            children = psutil.Process(self.client.km.provisioner.pid).children(recursive=True)
        except Exception:
            pass
        self.client.shutdown_kernel = "immediate"
        try:
            self.client._cleanup_kernel()
        except Exception:
            pass
        for child in children:
            try:
                child.kill()
            except Exception:
                pass
