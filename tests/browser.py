"""Browser tests' harness: a real ``jupyter lab`` and headless Debian Chromium (Playwright).

Why a harness: every browser test needs the same fragile set-up done the same way — a
server on 127.0.0.1 with a token, ``--allow-root``, a throw-away root and settings dir
(``fetchNews: false`` so no news prompt covers the page), Debian's Chromium driven by
Python Playwright through ``executable_path`` (no browser download), and waiting for the
*status bar* to say "Idle" (the notebook toolbar says idle before the kernel is ready).

Usage (see DEVELOPERS.md)::

    from browser import JupyterLab, chromium, NotebookPage

    with JupyterLab() as lab, chromium() as browser:
        lab.write_notebook("demo.ipynb", ["1 + 1", "print('hi')"])
        nb = NotebookPage.open(browser, lab, "demo.ipynb")
        nb.run_all()                       # and wait until every cell ran, kernel Idle
        nb.screenshot("demo")              # test-artifacts/demo.png

Each piece is small on purpose: ``lab.url``/``lab.token``/``lab.root``, ``nb.page`` (the
Playwright page) and ``nb.app(js)`` (JupyterLab's ``app`` object, exposed with
``--LabApp.expose_app_in_browser``) are there for whatever a test needs beyond this.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

# DEVELOPERS.md: the flags Debian's Chromium needs here (no sandbox as root, no GPU, no
# network chatter of its own).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium (``apt-get install chromium chromium-driver``), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1, a free port and a token, in temporary directories.

    ``root`` is the server's root dir (default: a new temporary one). The server's output
    goes to ``log_path`` (kept in ``test-artifacts/`` when a test fails to start it).
    """

    def __init__(self, root: str | Path | None = None, env: dict[str, str] | None = None,
                 startup_timeout: float = 90, app: str = "lab") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="peft_magic-lab-")
        tmp = Path(self._tmp.name)
        self.root = Path(root) if root else tmp / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings_dir = tmp / "settings"
        self.workspaces_dir = tmp / "workspaces"
        self.log_path = tmp / "jupyter-lab.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.app = app  # "lab": JupyterLab; "notebook": Jupyter Notebook 7 (same server, its own UI)
        self.proc: subprocess.Popen | None = None

    def _write_settings(self) -> None:
        # No news / update prompt over the page; no "would you like to get notified" toast.
        notif = self.settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True, exist_ok=True)
        notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.workspaces_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> JupyterLab:
        self._write_settings()
        module, app = ("notebook", "JupyterNotebookApp") if self.app == "notebook" else ("jupyterlab", "LabApp")
        cmd = [
            sys.executable, "-m", module, "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            f"--{app}.user_settings_dir={self.settings_dir}", f"--{app}.workspaces_dir={self.workspaces_dir}",
            f"--{app}.expose_app_in_browser=True",
        ]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=str(self.root))
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"jupyter lab did not answer in {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        """The server's output so far (kernel errors end up here too)."""
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def save_log(self, name: str = "jupyter-lab") -> Path:
        """Copy the server's log to ``test-artifacts/NAME.log`` (call it when a test fails)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.log"
        path.write_text(self.log())
        return path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_notebook(self, name: str, cells: Sequence[str]) -> Path:
        """A Python 3 notebook with these code cells, in the server's root."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                     "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        path = self.root / name
        nbformat.write(nb, str(path))
        return path

    def lab_url(self, path: str = "") -> str:
        """The page of notebook ``path`` (JupyterLab's ``/lab/tree/…``, Notebook 7's ``/notebooks/…``)."""
        if self.app == "notebook":
            return f"{self.url}/notebooks/{path}?token={self.token}" if path else f"{self.url}/tree?token={self.token}"
        return f"{self.url}/lab/tree/{path}?token={self.token}" if path else f"{self.url}/lab?token={self.token}"


@contextlib.contextmanager
def chromium(viewport: tuple[int, int] = (1400, 900)) -> Iterator[Any]:
    """A Playwright browser context on Debian's Chromium (headless)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("browser tests need Chromium: apt-get install -y chromium chromium-driver")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        try:
            yield context
        finally:
            context.close()
            browser.close()


class NotebookPage:
    """One notebook open in JupyterLab; cells are run the way a user runs them."""

    def __init__(self, page: Any, lab: JupyterLab, path: str) -> None:
        self.page = page
        self.lab = lab
        self.path = path

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, context: Any, lab: JupyterLab, path: str, timeout: float = 120) -> NotebookPage:
        """Load JupyterLab on ``path`` in a new page; wait until its kernel is Idle."""
        page = context.new_page()
        page.goto(lab.lab_url(path))
        nb = cls(page, lab, path)
        nb.wait_for_app(timeout)
        nb.wait_for_idle(timeout)
        return nb

    def open_other(self, path: str, timeout: float = 120) -> NotebookPage:
        """Open another notebook in the same JupyterLab page (a new tab, its own kernel)."""
        self.app(f"app.commands.execute('docmanager:open', {{path: {json.dumps(path)}}})", wait=False)
        other = NotebookPage(self.page, self.lab, path)
        other.page.wait_for_function(
            "p => window.jupyterapp.shell.currentWidget?.context?.path === p", arg=path, timeout=timeout * 1000)
        other.wait_for_idle(timeout)
        return other

    def activate(self, timeout: float = 30) -> None:
        """Bring this notebook's tab to the front (a click on the tab, as a user would)."""
        name = Path(self.path).name
        self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=name).first.click()
        self.page.wait_for_function(
            "p => window.jupyterapp.shell.currentWidget?.context?.path === p", arg=self.path,
            timeout=timeout * 1000)

    def wait_for_app(self, timeout: float = 120) -> None:
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell && "
            "document.querySelector('.jp-NotebookPanel .jp-Cell')", timeout=timeout * 1000)

    # ------------------------------------------------------------------ kernel state

    def kernel_status_text(self) -> str:
        """The status bar's kernel item, e.g. ``Python 3 (ipykernel) | Idle``."""
        return self.page.locator("#jp-main-statusbar").inner_text()

    def wait_for_idle(self, timeout: float = 120) -> None:
        """Wait for "Idle" in the bottom status bar (the toolbar says idle too early), with
        this notebook's kernel really there. (Notebook 7 has no status bar: there the
        kernel's own status decides.)

        A busy machine can make JupyterLab's first kernel start fail over to its "Select
        Kernel" dialog; it is accepted (the notebook's own kernel is preselected), as a user
        would."""
        deadline = time.monotonic() + timeout
        status = self.page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\bIdle\b")).first
        dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
        while True:
            if dialog.count() and dialog.first.is_visible():
                dialog.first.locator("button.jp-mod-accept").click()
            elif (self.lab.app == "notebook" or status.count()) and self.page.evaluate(
                    """p => { const app = window.jupyterapp;
                        const w = [...app.shell.widgets('main')].find(w => w.context && w.context.path === p);
                        const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
                        return !!k && k.status === 'idle'; }""", self.path):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: kernel not Idle after {timeout}s "
                                   f"(status bar: {self.kernel_status_text()!r})")
            time.sleep(0.25)

    def app(self, js: str, wait: bool = True) -> Any:
        """Evaluate the expression ``js`` with ``app`` = JupyterLab's application object.

        With ``wait`` a promise is awaited; the result comes back if it is plain JSON
        (``None`` for widgets and other live objects)."""
        if not wait:
            return self.page.evaluate(f"() => {{ const app = window.jupyterapp; void ({js}); }}")
        return self.page.evaluate(
            f"async () => {{ const app = window.jupyterapp; const r = await ({js});"
            " try { return JSON.parse(JSON.stringify(r ?? null)); } catch (e) { return null; } }")

    # ------------------------------------------------------------------ cells

    def prompts(self) -> list[str]:
        """Each code cell's input prompt: ``[3]:``, ``[*]:`` (running / queued) or ``[ ]:``."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt").all_inner_texts()

    def run_all(self, timeout: float = 600) -> None:
        """Run every cell (Run ▸ Run All Cells) and wait until all have run and the kernel is Idle."""
        self.app("app.commands.execute('notebook:run-all-cells')", wait=False)
        self.wait_for_cells(timeout)

    def run_cell(self, index: int, timeout: float = 600) -> None:
        """Click cell ``index`` and press Shift+Enter; wait until it ran."""
        cell = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)
        cell.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Shift+Enter")
        self.wait_for_cells(timeout)

    def cells_done(self) -> bool:
        """No cell running or queued, and at least one has run (a number in its prompt)."""
        ps = self.prompts()
        return bool(ps) and all("*" not in p for p in ps) and any(re.search(r"\d", p) for p in ps)

    def wait_for_cells(self, timeout: float = 600) -> None:
        """Wait until no cell is running or queued, then for the kernel's Idle."""
        self.page.wait_for_function(
            "() => { const ps = [...document.querySelectorAll("
            "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];"
            " return ps.length > 0 && ps.every(p => !p.textContent.includes('*'))"
            " && ps.some(p => /\\d/.test(p.textContent)); }",
            timeout=timeout * 1000, polling=250)
        self.wait_for_idle(timeout)

    def outputs(self) -> list[list[dict]]:
        """Every code cell's outputs, as nbformat JSON, read from JupyterLab's model."""
        return self.page.evaluate(
            """p => { const app = window.jupyterapp;
                const w = [...app.shell.widgets('main')].find(w => w.context && w.context.path === p);
                return w ? [...w.content.model.cells].filter(c => c.type === 'code')
                           .map(c => c.outputs.toJSON()) : null; }""", self.path)

    def errors(self) -> list[str]:
        """Error outputs and stderr lines that name an error (``UsageError: ...``)."""
        found = []
        for outs in self.outputs() or []:
            for o in outs:
                if o.get("output_type") == "error":
                    found.append(f"{o.get('ename')}: {o.get('evalue')}")
                elif o.get("output_type") == "stream" and o.get("name") == "stderr" and "Error" in o.get("text", ""):
                    found.append(o["text"])
        return found

    # ------------------------------------------------------------------ artifacts

    def screenshot(self, name: str, locator: Any = None, readme: str | None = None, **options: Any) -> Path:
        """Save a PNG to ``test-artifacts/NAME.png`` (the whole page, or one element).

        ``readme``: this picture is one of the README's; when ``$PEFT_MAGIC_SCREENSHOTS``
        names a folder (``make screenshots``: docs/images) it is copied there as
        ``README.png``. ``options`` go to Playwright (e.g. ``clip``)."""
        return save_screenshot(locator or self.page, name, readme, **options)


def save_screenshot(target: Any, name: str, readme: str | None = None, **options: Any) -> Path:
    """``target.screenshot`` (a Playwright page or locator) into test-artifacts/, and into
    ``$PEFT_MAGIC_SCREENSHOTS`` as ``README.png`` when it is set and ``readme`` is given."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path), **options)
    folder = os.environ.get("PEFT_MAGIC_SCREENSHOTS")
    if readme and folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / f"{readme}.png")
    return path
