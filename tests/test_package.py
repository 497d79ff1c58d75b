"""Package-level contracts: lazy API names never shadowed by submodules; engine purity."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import peft_magic

pytestmark = pytest.mark.rule

PKG = Path(peft_magic.__file__).parent


def test_api_names_are_not_submodule_names():
    assert len(peft_magic._API) > 10
    both = [name for name in peft_magic._API if importlib.util.find_spec(f"peft_magic.{name}") is not None]
    assert both == [], f"both an API function and a submodule: {both}"


def test_api_resolves_to_callables():
    not_callable = [name for name in peft_magic._API if not callable(getattr(peft_magic, name))]
    assert not_callable == []


ENGINE_EXEMPT = {"magics", "display", "panel"}  # the faces


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # module level only: lazy imports inside functions are the point
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# peft plug-in modules: they subclass torch / peft classes, so importing those is their point.
# Only peft_magic.bottleneck.register() imports them, once peft is loaded; test_bottleneck_kernel.py
# checks that `import peft_magic` still imports nothing heavy.
PEFT_PLUGIN_MODULES = {("bottleneck", "config.py"), ("bottleneck", "layer.py"), ("bottleneck", "model.py")}


def test_no_heavy_imports_at_module_level():
    heavy = {"torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "pandas", "trl"}
    bad = {}
    for path in sorted(PKG.rglob("*.py")):
        if path.relative_to(PKG).parts in PEFT_PLUGIN_MODULES:
            continue
        found = _top_level_imports(path) & heavy
        if found:
            bad[str(path.relative_to(PKG))] = sorted(found)
    assert bad == {}, f"modules importing the heavy stack at module level: {bad}"


def test_engine_never_imports_ipython_or_widgets():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ENGINE_EXEMPT or rel.name in ("__init__.py", "comm.py") and len(rel.parts) == 1:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            bad += [f"{rel}:{node.lineno} imports {m}" for m in mods if m.startswith(("IPython", "ipywidgets"))]
    assert bad == [], f"engine modules import IPython / ipywidgets: {bad}"
