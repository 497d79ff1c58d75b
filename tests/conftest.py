"""Shared fixtures: offline environment, a model cache shared by all tests, kernels; and how
the suite runs in parallel (xdist work units, threads per worker) and on which device."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

# No hub at run time, here or in CI: fail fast instead of waiting on DNS.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PEFT_MAGIC_CACHE", str(ROOT / ".cache" / "models"))
# torch.compile's kernels in the clone, not in the machine's /tmp/torchinductor_<user> that every
# clone and torch build shares: a fresh clone compiles from nothing, as CI does (the compile test
# took 10 s with another clone's kernels in /tmp and 35 s without).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The text display wraps at $COLUMNS: the caller's terminal must not decide what the kernels print
# (tests that are about the width set their own).
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
ARTIFACTS = ROOT / "test-artifacts"
# Every process this test process starts (kernels, and the torchrun workers they launch) carries
# this tag in its environment, so a check for "no process left behind" looks at ours only — not
# at another test run's on the same machine (the other xdist worker, a second checkout, CI).
os.environ["PEFT_MAGIC_TEST_SESSION"] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def started_here(proc) -> bool:
    """Whether a ``psutil.Process`` was started by this test process (directly or not)."""
    try:
        return proc.environ().get("PEFT_MAGIC_TEST_SESSION") == os.environ["PEFT_MAGIC_TEST_SESSION"]
    except Exception:  # gone, or not ours to read
        return False

# The device. The suite checks peft_magic's behaviour with tiny models in float32 on the CPU,
# on every machine, so that its numbers (hand-worked losses, logits equal after reload) mean
# the same thing everywhere: a CUDA GPU is hidden from the tests and from the kernels they
# start. `make gpu-check` sets PEFT_MAGIC_TEST_GPU=1 and runs the tests marked `device` — the
# ones whose expectation depends on the device they see (refusals of --gpus, the memory
# readout, dtype, compile, 4-bit) — with the GPU visible; each asserts what is right there.
TEST_GPU = os.environ.get("PEFT_MAGIC_TEST_GPU") == "1"
if not TEST_GPU:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

# Threads. Under xdist each worker (and every kernel or worker process it starts) gets its
# share of the cores: torch's default of one thread per core in each of N workers oversubscribes
# the machine (measured in DEVELOPERS.md, Tests). An explicit OMP_NUM_THREADS wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // _WORKERS)))


@pytest.fixture(scope="session", autouse=True)
def _checkpoints_out_of_the_tree(tmp_path_factory):
    """Runs trained in the test process autosave into a temporary folder, not the repository."""
    from peft_magic.settings import configure

    configure(checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(autouse=True)
def _the_same_random_state_in_any_order():
    """Every test in the test process starts from the same random state (Python, NumPy, torch),
    whatever ran before it in this worker: a randomly initialised head or adapter is then the
    same in file order, shuffled and alone (a QA head drawn from the state that other tests
    left behind learned in one order and not in another). Kernels start fresh anyway."""
    import random

    import numpy
    import torch  # imported here, not only seeded if present: a test that runs first must get the same state

    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One real kernel per test module, with the extension loaded."""
    from kernel import Kernel

    k = Kernel(cwd=tmp_path_factory.mktemp("kernel"))
    k.ok("%load_ext peft_magic")
    yield k
    k.shutdown()


@pytest.fixture(scope="session")
def tiny_llama_path() -> str:
    from peft_magic.model.builtins import materialize

    return str(materialize("tiny-llama"))


FINGERPRINT = r'''
def _fp(m):
    import hashlib, torch
    h = hashlib.sha256()
    for n, p in m.named_parameters():
        h.update(n.encode()); h.update(str(tuple(p.shape)).encode()); h.update(str(p.requires_grad).encode())
        h.update(str(p.dtype).encode())
        if p.dtype.is_floating_point:
            h.update(repr(round(float(p.detach().double().sum()), 6)).encode())
    h.update(type(m).__name__.encode())
    h.update(str(sorted(getattr(m, "peft_config", {}) or {})).encode())
    h.update(str([type(x).__name__ for x in m.modules()]).encode())
    return h.hexdigest()
'''


# ----------------------------------------------------------------------------- xdist scheduling

#: Test files whose tests share no module-scoped fixture (checked at collection): under xdist
#: each of their tests is scheduled on its own, so a file of long notebook runs or compiles is
#: spread over the workers. Every other file runs whole on one worker (``--dist loadfile``), so
#: its module-scoped kernel or model is made once.
SPLIT_BY_TEST = {"tests/test_technique_notebooks.py", "tests/test_task_notebooks.py", "tests/test_compare.py",
                 "tests/test_speed.py"}
#: a guess of a test's seconds before any run has been timed (fresh clone): what dominates
_GUESS_S = {"browser": 20.0, "slow": 40.0, "kernel": 6.0}
_DURATIONS_KEY = "peft_magic/durations"


def _scope(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return nodeid if path in SPLIT_BY_TEST else path


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, except that the files in ``SPLIT_BY_TEST`` go out test by test, and
    work units go out in collection order (longest first, see below), not by test count.

    (Why not ``--dist loadgroup`` with ``xdist_group`` marks: pytest 9.2 derives ``nodeid``
    from a structured id, so the group suffix xdist 3.8 writes into ``item._nodeid`` is lost
    and every test becomes its own unit — a module's kernel started on both workers.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return FileScheduling(config, log)


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """Module- or class-scoped fixtures a test uses: tests that share one must run in one worker."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in ("module", "class", "package")}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _opt_in_only(config, items)
    _order_for_xdist(config, items)


def _opt_in_only(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``llama_cpp`` need llama.cpp's binding, an optional ~7-minute build: they run
    when asked for (``-m llama_cpp``: ``make test-llama-cpp`` builds and runs them) and are
    deselected otherwise — never a skip that a green run would hide."""
    if "llama_cpp" in (config.getoption("markexpr", "") or ""):
        return
    keep = [it for it in items if it.get_closest_marker("llama_cpp") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[it for it in items if it.get_closest_marker("llama_cpp")])
        items[:] = keep


def _order_for_xdist(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist: refuse a file in ``SPLIT_BY_TEST`` whose tests share a module-scoped fixture
    (split, it would be made on every worker and its tests would not see each other's state),
    then order the work units longest first — the last run's timings from pytest's cache, else
    a guess by marker — so that no worker is left with a long file at the end. Outside xdist,
    and with ``-p randomly``, the order is left alone."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    uses: dict[tuple[str, str], int] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        if path in SPLIT_BY_TEST:
            for name in _shared_fixtures(item):
                uses[path, name] = uses.get((path, name), 0) + 1
    shared = sorted(f"{path} ({name})" for (path, name), n in uses.items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests/conftest.py SPLIT_BY_TEST: these files share a module fixture: {shared}")
    if config.pluginmanager.has_plugin("randomly") and config.getoption("randomly_reorganize", True):
        return  # a shuffled run stays shuffled
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    timed = cache.get(_DURATIONS_KEY, {}) if cache is not None else {}

    def seconds(item: pytest.Item) -> float:
        if item.nodeid in timed:
            return timed[item.nodeid]
        slow = item.get_closest_marker("slow")
        if slow is not None and "seconds" in slow.kwargs:  # a long test says how long, for a fresh clone
            return float(slow.kwargs["seconds"])
        return max([v for k, v in _GUESS_S.items() if item.get_closest_marker(k)] or [1.0])

    unit_s: dict[str, float] = {}
    for item in items:
        unit_s[_scope(item.nodeid)] = unit_s.get(_scope(item.nodeid), 0.0) + seconds(item)
    items.sort(key=lambda it: -unit_s[_scope(it.nodeid)])  # stable: file order within a unit


_TIMED: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember each test's seconds, set-up and teardown included (in the controller, where
    xdist sends the reports)."""
    _TIMED[report.nodeid] = _TIMED.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    cache = getattr(session.config, "cache", None)  # None with -p no:cacheprovider
    if os.environ.get("PYTEST_XDIST_WORKER") or not _TIMED or cache is None:
        return
    timed = cache.get(_DURATIONS_KEY, {})
    timed.update({k: round(v, 2) for k, v in _TIMED.items()})
    cache.set(_DURATIONS_KEY, timed)
