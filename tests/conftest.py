"""Shared fixtures: offline environment, a model cache shared by all tests, kernels; and how
the suite runs in parallel (xdist groups, threads per worker) and on which device."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

# No hub at run time, here or in CI: fail fast instead of waiting on DNS.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PEFT_MAGIC_CACHE", str(ROOT / ".cache" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ARTIFACTS = ROOT / "test-artifacts"

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


# ----------------------------------------------------------------------------- xdist groups

#: a guess of a test's seconds before any run has been timed (fresh clone): what dominates
_GUESS_S = {"browser": 20.0, "slow": 40.0, "kernel": 6.0}
_DURATIONS_KEY = "peft_magic/durations"


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """Module- or class-scoped fixtures a test uses: tests that share one must run in one worker."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in ("module", "class", "package")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``--dist loadgroup``): one group per test file, so a module-scoped kernel
    or model is made once; a file whose tests share no module-scoped fixture (the notebook
    runs, the compile tests) is split so its long tests run side by side. Groups go out
    longest first (the last run's timings from pytest's cache, else a guess by marker), so
    no worker is left with a long file at the end. Outside xdist, and with ``-p randomly``,
    the order is left alone."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    by_file: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
    for path, tests in by_file.items():
        uses: dict[str, int] = {}
        for t in tests:
            for name in _shared_fixtures(t):
                uses[name] = uses.get(name, 0) + 1
        together = any(n > 1 for n in uses.values())
        for t in tests:
            t.add_marker(pytest.mark.xdist_group(path if together else t.nodeid))
    if config.pluginmanager.has_plugin("randomly") and config.getoption("randomly_reorganize", True):
        return  # a shuffled run stays shuffled
    timed = config.cache.get(_DURATIONS_KEY, {}) if config.cache else {}

    def seconds(item: pytest.Item) -> float:
        if item.nodeid in timed:
            return timed[item.nodeid]
        return max([v for k, v in _GUESS_S.items() if item.get_closest_marker(k)] or [1.0])

    group_s: dict[str, float] = {}
    for item in items:
        group = item.get_closest_marker("xdist_group").args[0]
        group_s[group] = group_s.get(group, 0.0) + seconds(item)
    items.sort(key=lambda it: -group_s[it.get_closest_marker("xdist_group").args[0]])  # stable: file order within


_TIMED: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember each test's seconds, set-up and teardown included (in the controller, where
    xdist sends the reports)."""
    _TIMED[report.nodeid] = _TIMED.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not _TIMED or session.config.cache is None:
        return
    timed = session.config.cache.get(_DURATIONS_KEY, {})
    timed.update({k: round(v, 2) for k, v in _TIMED.items()})
    session.config.cache.set(_DURATIONS_KEY, timed)
