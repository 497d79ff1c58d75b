"""The architecture, enforced: one engine, three faces, arrows one way.

Each rule reads the package's source (``ast``), so it fails the moment a change breaks
it — a new import cycle, the engine importing a face, peft's private attributes read
outside ``peft_view``, a flag the help does not show.

One test per rule: it collects every violation in the package and asserts the list is
empty, so a failure names all of them at once, and each rule is one count in
``pytest -m rule`` (the behavioural tests are counted apart). What every rule reads —
the import graph, peft's private names, our own — is built once per session, not once
per module checked.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.rule

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "peft_magic"

#: the faces and what only they may use; everything else in the package is the engine
FACES = ("peft_magic", "peft_magic.api", "peft_magic.notebook", "peft_magic.comm", "peft_magic.display",
         "peft_magic.magics", "peft_magic.panel")
FACE_ONLY_LIBS = ("IPython", "ipywidgets", "ipykernel", "comm")
#: the modules that may read peft's private attributes
PEFT_INSIDERS = ("peft_magic.peft_view", "peft_magic.bottleneck")
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "labextension" not in p.parts}


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_face(name: str) -> bool:
    return name == "peft_magic" or _is_under(name, FACES[1:])


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes under ``if TYPE_CHECKING:`` (never executed, so not real imports)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


@functools.cache
def _tree(path: Path) -> ast.Module:
    """Each module's source is parsed once per session, whichever rules read it."""
    return ast.parse(path.read_text())


def _imports(name: str, path: Path, type_only: bool = False) -> list[tuple[str, int]]:
    """(absolute module, line) of every import in a module, lazy ones inside functions included
    (``type_only``: the ``if TYPE_CHECKING:`` ones too)."""
    tree = _tree(path)
    skip = set() if type_only else _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub if sub in MODULES else mod, node.lineno))
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    edges = {n: sorted({m for m, _ in deps if m in MODULES and m != n}) for n, deps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            strong(v)
    return found


def test_the_package_is_read_whole():
    assert len(MODULES) > 60 and "peft_magic.peft_view" in MODULES and "peft_magic.magics.core" in MODULES


def test_no_import_cycle_anywhere():
    """Lazy imports inside functions count: a cycle through them is still a knot."""
    assert _cycles() == []


def test_a_cycle_would_be_found(tmp_path):
    """The detector itself works: a fake edge back from the engine to a face is a cycle."""
    GRAPH["peft_magic.state"].append(("peft_magic.magics.registry", 0))
    try:
        assert any("peft_magic.state" in c for c in _cycles())
    finally:
        GRAPH["peft_magic.state"].pop()


def test_engine_imports_no_face():
    """The engine never imports display, magics, panel, comm (relative imports included),
    IPython or ipywidgets."""
    engine = [n for n in MODULES if not _is_face(n)]
    assert len(engine) > 40  # the rule has modules to look at
    bad = [(name, m, line) for name in engine for m, line in GRAPH[name]
           if (m.startswith("peft_magic") and _is_face(m)) or m.split(".")[0] in FACE_ONLY_LIBS]
    assert bad == [], "engine modules import a face: " + "; ".join(f"{n}:{line} imports {m}" for n, m, line in bad)


def test_faces_do_not_import_peft():
    """A face calls the engine; it never talks to peft itself."""
    faces = [n for n in MODULES if _is_face(n) and n != "peft_magic"]
    assert len(faces) > 10
    bad = [(name, m, line) for name in faces for m, line in GRAPH[name] if m == "peft" or m.startswith("peft.")]
    assert bad == [], "faces import peft: " + "; ".join(f"{n}:{line} imports {m}" for n, m, line in bad)


@functools.cache
def _peft_private_names() -> frozenset[str]:
    """Private attribute and method names peft defines on its objects (from its source)."""
    import importlib.util

    spec = importlib.util.find_spec("peft")
    names: set[str] = set()
    for path in sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.Assign):
                        names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


@functools.cache
def _own_private_names() -> frozenset[str]:
    """Private names our own classes define (``self._x`` of our objects is ours to read)."""
    names: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
    return frozenset(names)


def test_peft_private_names_are_known():
    """The detector has something to detect: peft's own private names were collected."""
    assert {"_get_available_adapters", "_adapters_disabled"} <= _peft_private_names()


def _peft_reaches(name: str) -> list[tuple[str, int]]:
    """(what, line) of each read of a peft private name, or import of peft's internals, in one module."""
    return _peft_reaches_in(_tree(MODULES[name]))


def _peft_reaches_in(tree: ast.AST) -> list[tuple[str, int]]:
    peft_private = _peft_private_names()
    ours = _own_private_names() - peft_private
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in peft_private and node.attr not in ours:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                bad.append((node.attr, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "peft":
            if node.module not in ("peft", "peft.config", "peft.mapping") or \
                    any(a.name.startswith("_") for a in node.names):
                bad.append((node.module, node.lineno))
    return bad


def test_only_peft_view_reads_peft_privates():
    """peft's private attributes are read in ``peft_view`` (and the bottleneck tuner) only;
    peft's internal modules are imported there only."""
    checked = [n for n in MODULES if not _is_under(n, PEFT_INSIDERS)]
    bad = [(name, what, line) for name in checked for what, line in _peft_reaches(name)]
    assert bad == [], "modules reach into peft: " + "; ".join(f"{n}:{line} {w}" for n, w, line in bad)


def test_the_peft_privates_detector_finds_a_read():
    """The detector itself works: a read of a peft private attribute and an import of peft's
    internals, written the way a module would, are both named."""
    code = "from peft.tuners.lora import layer\ndef f(m):\n    return m._get_available_adapters()\n"
    assert _peft_reaches_in(ast.parse(code)) == [("peft.tuners.lora", 1), ("_get_available_adapters", 3)]


def test_every_flag_a_command_takes_is_in_its_help():
    """Usage lines are generated from each command's one declaration of its flags."""
    from peft_magic.magics import command_modules
    from peft_magic.magics.help import help_text
    from peft_magic.magics.registry import COMMANDS

    command_modules.load_all()
    overview = help_text()
    assert len(COMMANDS) >= 20
    for cmd in COMMANDS.values():
        text = cmd.help()
        accepted = cmd.value_flags | cmd.switch_flags
        missing = [f for f in accepted if not re.search(re.escape(f) + r"\b", text)]
        assert missing == [], f"%peft help {cmd.name} does not mention {missing}"
        assert cmd.usage in overview
        for f in cmd.flags:
            if f.metavar:
                assert f"{f.name} {f.metavar}" in cmd.usage


def test_the_parser_takes_exactly_the_declared_flags():
    """The same declaration drives the parser: an undeclared flag is one clear error."""
    from peft_magic.errors import PeftMagicError
    from peft_magic.magics import command_modules
    from peft_magic.magics.registry import COMMANDS
    from peft_magic.syntax.read import parse_line

    command_modules.load_all()
    train = COMMANDS["train"]
    args = parse_line("steps=3 --display text --resume", train.value_flags, train.switch_flags,
                      command="train", optional_flags=train.optional_flags)
    assert args.flags == {"--display": "text", "--resume": True}
    args = parse_line("--resume runs/a steps=3", train.value_flags, train.switch_flags,
                      command="train", optional_flags=train.optional_flags)
    assert args.flags == {"--resume": "runs/a"} and args.settings["steps"] == 3
    with pytest.raises(PeftMagicError, match="--nope"):
        parse_line("--nope", train.value_flags, train.switch_flags, command="train")


def test_no_module_is_over_450_lines():
    """Small modules with names that say what they hold: none over 450 lines, no exceptions."""
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, "modules over 450 lines: " + ", ".join(f"{k} ({v})" for k, v in long.items())


def _package_order() -> list[str]:
    """The package order written in docs/architecture.md ("The order of the packages"), leaves first."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = doc.split("## The order of the packages", 1)[1].split("```")[1]
    order: list[str] = []
    for line in block.strip().splitlines():
        names = re.split(r"\s{2,}", line.strip())[0]
        order += [n.strip() for n in names.split("·")]
    return order


def _package(module: str) -> str:
    parts = module.split(".")
    return "peft_magic" if len(parts) == 1 else parts[1]


def _every_import(name: str, path: Path) -> list[tuple[str, int]]:
    """Like ``_imports`` but with the ``if TYPE_CHECKING:`` ones: a type-only edge is still a knot to read."""
    return _imports(name, path, type_only=True)


def _order_violations(extra: dict[str, list[tuple[str, int]]] | None = None) -> list[str]:
    order = _package_order()
    rank = {p: i for i, p in enumerate(order)}
    bad = []
    imports = {name: _every_import(name, path) for name, path in MODULES.items()}
    for name, deps in (extra or {}).items():
        imports.setdefault(name, []).extend(deps)
    for name, deps in imports.items():
        mine = _package(name)
        if mine not in rank:
            bad.append(f"package {mine} is not in docs/architecture.md's order")
            continue
        for dep, line in deps:
            if not dep.startswith("peft_magic"):
                continue
            theirs = _package(dep)
            if theirs not in rank:
                bad.append(f"package {theirs} is not in docs/architecture.md's order")
            elif theirs != mine and rank[theirs] > rank[mine]:
                bad.append(f"{name}:{line} imports {dep} ({theirs} comes after {mine})")
    return sorted(set(bad))


def test_the_packages_follow_the_written_order():
    """The package graph, type-only imports included, is the DAG docs/architecture.md writes down."""
    assert len(_package_order()) >= 20
    assert _order_violations() == []


def test_an_import_against_the_order_would_be_found():
    found = _order_violations({"peft_magic.state": [("peft_magic.training.run", 1)]})
    assert found == ["peft_magic.state:1 imports peft_magic.training.run (training comes after state)"]


def test_no_document_outside_the_repository_is_cited():
    text = "\n".join(p.read_text() for p in MODULES.values())
    assert "DESIGN.md" not in text
