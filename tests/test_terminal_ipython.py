"""``%peft train`` in terminal IPython, through a pseudo-terminal of 80 and 160 columns.

In a terminal the live display is one line rewritten in place with ``\\r``. A line longer
than the terminal wraps, and ``\\r`` then only returns to the start of its last row, so
every update would leave rows behind. The test runs real ``ipython`` (prompt_toolkit, as
a user has it) in a pty of the given size — no ``$COLUMNS``: the renderer must read the
terminal's own size — trains a few steps and reads everything the terminal received:
every progress update stays on one row (only ``\\r`` between updates, no newline), and no
row of the training output is wider than the terminal.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

STEPS = 12
CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
LINES = [
    "%load_ext peft_magic",
    "%peft load tiny-llama",
    "%peft lora r=8",
    "texts = ['The quick brown fox jumps over the lazy dog.'] * 16",
    f"%peft train data=texts steps={STEPS} batch=4 lr=5e-3",
]


@pytest.mark.parametrize("columns", [80, 160])
def test_train_prints_one_line_that_fits_the_terminal(columns, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", IPYTHONDIR=str(tmp_path / "ipython"))
    child = pexpect.spawn(sys.executable, ["-m", "IPython", "--colors=NoColor", "--no-banner"], env=env,
                          dimensions=(50, columns), encoding="utf-8", timeout=300, cwd=str(tmp_path))
    try:
        child.expect(r"In \[1\]")
        for n, line in enumerate(LINES, start=1):
            child.sendline(line)
            child.expect(rf"In \[{n + 1}\]")  # the next prompt: this line has run
        received = child.before
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = CSI.sub("", received)
    start = text.index(LINES[-1]) + len(LINES[-1])
    training = text[start:].split("Out[")[0]  # the display's output, before IPython prints the Run
    rows = training.replace("\r\n", "\n").split("\n")
    # no row wider than the terminal: a wider one wraps, and \r cannot rewrite it in place
    for segment in (s for r in rows for s in r.split("\r")):
        assert len(segment) < columns, (columns, len(segment), segment)
    progress_rows = [r for r in rows if "█" in r or "░" in r]
    assert len(progress_rows) == 1, rows  # every update went to the same row …
    updates = [u for u in progress_rows[0].split("\r") if u.strip()]
    assert len(updates) >= 3, updates  # … rewritten in place (start, steps, end)
    assert re.search(rf"█+ {STEPS}/{STEPS} · loss \d+\.\d{{4}}", updates[-1]), updates[-1]
    assert f"Training lora adapter 'default': completed {STEPS}/{STEPS}" in training
    # the room is used: at 160 columns the line carries more than at 80
    widest = max(len(u) for u in updates)
    assert widest > columns * 0.6, (columns, updates)
    if columns >= 160:
        assert "elapsed" in updates[-1] and "peak" in updates[-1], updates[-1]
