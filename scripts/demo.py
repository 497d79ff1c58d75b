"""`make demo`: execute the quickstart notebook headless and print what it did.

Runs notebooks/quickstart.ipynb in a real kernel (nbclient), prints every cell with its
plain-text output, writes the executed notebook (with its static HTML and widget state)
to build/demo/, and exits non-zero if any cell failed.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def text_of(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "text/plain" in data:
            return data["text/plain"] + "\n"
        return "[" + ", ".join(data) + "]\n"
    if kind == "error":
        return ANSI.sub("", "\n".join(output.get("traceback", []))) + "\n"
    return ""


def main(names: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = ROOT / "build" / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in names:
        path = ROOT / "notebooks" / name
        nb = nbformat.read(path, as_version=4)
        print(f"=== {path.relative_to(ROOT)} ===", flush=True)
        t0 = time.perf_counter()
        client = NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}}, store_widget_state=True,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        client.execute()
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            print(">>> " + cell.source.replace("\n", "\n... "))
            for output in cell.outputs:
                text = text_of(output)
                if output.get("output_type") == "error":
                    failed = True
                if text.strip():
                    print("    " + text.rstrip().replace("\n", "\n    "))
        nbformat.write(nb, out_dir / name)
        print(f"--- {name}: {time.perf_counter() - t0:.1f} s; executed notebook in {out_dir / name}\n", flush=True)
    if failed:
        print("demo FAILED: a cell raised an error", file=sys.stderr)
        return 1
    print("demo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["quickstart.ipynb", "training.ipynb"]))
