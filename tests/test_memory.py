"""Memory readouts: the peak of a block is exact on CPU even when it lasts microseconds.

Each check runs in a fresh interpreter: the readout is the process's resident set, and in a
long-lived test worker the kernel reclaims the worker's file-backed pages (the mmapped model
files of earlier tests) while a block allocates, so a 128 MB spike can show as less there.
What is checked is the sampler's arithmetic on a process that only does what the test does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's peak counter")


def _in_a_fresh_process(body: str) -> None:
    code = "import numpy as np\nfrom peft_magic.memory import PeakSampler, reading\n" + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_short_spike_is_caught_exactly():
    _in_a_fresh_process("""
        with PeakSampler("cpu", interval=10.0) as s:  # polling too slow to ever see the spike
            a = np.ones(32_000_000)  # 256 MB, touched page by page
            del a
        assert s.peak - s.start >= 0.95 * 256_000_000, (s.start, s.peak)
    """)


def test_nested_samplers_keep_the_outer_peak():
    _in_a_fresh_process("""
        with PeakSampler("cpu", interval=10.0) as outer:
            a = np.ones(16_000_000)  # 128 MB, before the inner window
            del a
            with PeakSampler("cpu", interval=10.0) as inner:
                b = np.ones(4_000_000)
                del b
        assert outer.peak - outer.start >= 0.9 * 128_000_000, (outer.start, outer.peak)
        assert inner.peak >= inner.start
        r = reading("cpu")
        assert r.kind == "RAM" and r.label == "process RAM" and r.total and r.used > 0
    """)


def test_a_sampler_left_open_does_not_blind_the_next_one():
    """A sampler whose block never ended (a run abandoned in a thread) must not keep later
    windows from resetting the counter: each block still sees its own short spike."""
    _in_a_fresh_process("""
        stale = PeakSampler("cpu", interval=10.0).__enter__()
        try:
            high = np.ones(40_000_000)  # a 320 MB high-water mark, before the next block
            del high
            with PeakSampler("cpu", interval=10.0) as s:
                a = np.ones(16_000_000)  # 128 MB: below the old high-water mark
                del a
            assert s.peak - s.start >= 0.9 * 128_000_000, (s.start, s.peak)
        finally:
            stale.__exit__(None, None, None)
        assert stale.peak - stale.start >= 0.9 * 128_000_000  # the outer window saw it too
    """)
