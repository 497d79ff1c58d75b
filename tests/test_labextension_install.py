"""A plain ``pip install .`` puts the prebuilt status-bar extension into JupyterLab.

Fresh venv, ``pip install --no-deps .`` (the real build: pip's isolated environment,
hatchling + hatch-jupyter-builder), with no node on PATH — the prebuilt assets are
enough — then ``jupyter labextension list`` from that venv must list ``peft-magic``
enabled and OK, found in the venv's own ``share/jupyter/labextensions``.

Only the package itself is installed (``--no-deps``: torch & co. would take minutes);
JupyterLab, which the listing needs, is reached through a ``.pth`` file pointing at the
project's .venv, placed *after* the fresh venv's own site-packages.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "peft_magic" / "labextension"
NAME = "peft-magic"


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    # cwd outside the source tree, or `python -c` would import peft_magic from it
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, **kw)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    return res


def test_pip_install_lists_the_extension_enabled(tmp_path: Path):
    assert (BUILT / "static" / "style.js").exists(), (
        "the extension is not built: `make venv` (pip install -e .) or `make labextension` builds it")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    # Node must not be needed: only the fresh venv's bin on PATH (pip adds its build env's).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=str(venv / "bin"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], env=env, cwd=tmp_path)

    share = venv / "share" / "jupyter" / "labextensions" / NAME
    pkg = json.loads((share / "package.json").read_text())
    assert pkg["name"] == NAME and pkg["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    assert (share / pkg["jupyterlab"]["_build"]["load"]).exists()
    assert json.loads((share / "install.json").read_text())["packageName"] == "peft_magic"
    meta = next((venv / "lib").glob("python3*/site-packages/peft_magic-*.dist-info/METADATA")).read_text()
    assert "Classifier: Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt" in meta

    # JupyterLab from the project's venv, after the fresh venv's own packages
    fresh_site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           env=env, cwd=tmp_path).stdout.strip())
    lab_site = sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else site.getsitepackages()[0]
    (fresh_site / "zz_project_venv.pth").write_text(lab_site + "\n")
    where = _run([str(py), "-c", "import peft_magic, jupyterlab; print(peft_magic.__file__)"], env=env,
                 cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree

    res = _run([str(py), "-m", "jupyterlab.labextensions", "list"], env=env, cwd=tmp_path)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
    section = out.split(str(venv / "share" / "jupyter" / "labextensions"), 1)
    assert len(section) == 2, out
    line = next((ln for ln in section[1].splitlines() if ln.strip().startswith(NAME + " ")), "")
    assert re.search(rf"{NAME} v0\.1\.0 enabled\s+OK \(python, peft_magic\)", line), out
