"""Shared fixtures: offline environment, a model cache shared by all tests, kernels."""

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
