"""Shared helpers for benchmarks: medians, and one section per benchmark in RESULTS.md.

Each benchmark replaces only its own section (between ``<!-- name -->`` markers), so
benchmarks can be run one at a time without losing the others' figures.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmarks\n\nMedians of repeated runs, side by side in one process run; ratios are what to read.\n"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of bench/RESULTS.md with ``body``."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    stamp = time.strftime("%Y-%m-%d")
    block = f"{start}\n{body.rstrip()}\n\n_{stamp}, {machine()}_\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
