"""The one exception type the engine raises for anything a user can fix.

Why a single type: every face (magics, panel, plain Python) must show a bad input as
*one clear line* that says what was wrong and what would work, never a traceback wall.
The engine raises :class:`PeftMagicError` with that line; the magics turn it into an
IPython ``UsageError``, the panel shows it in its status line, and plain Python callers
get an ordinary exception (a ``ValueError``, so existing ``except ValueError`` code keeps
working).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PeftMagicError(ValueError):
    """A problem the user can fix, described in one line (plus an optional hint).

    ``str(err)`` is the whole line: ``message`` followed by ``hint`` when there is one.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = _one_line(message)
        self.hint = _one_line(hint) if hint else None
        super().__init__(self.message + (f" — {self.hint}" if self.hint else ""))


def _one_line(text: str) -> str:
    """Collapse whitespace so that a message never spans several lines."""
    return " ".join(str(text).split())


def did_you_mean(word: str, candidates: Iterable[str], n: int = 1) -> str:
    """A ``did you mean 'x'?`` suffix for ``word``, or ``''`` when nothing is close.

    ``difflib`` with a 0.6 cutoff gets typos (``rr`` → ``r``, ``lora_alpah`` →
    ``lora_alpha``) and is silent about unrelated words, which matters more than recall:
    a wrong suggestion is worse than none.
    """
    cands = sorted(set(candidates))
    matches = difflib.get_close_matches(word, cands, n=n, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in cands}
        matches = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)]
    if not matches:
        return ""
    return "did you mean " + " or ".join(f"'{m}'" for m in matches) + "?"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, for wrapping library errors.

    Library errors (peft, transformers) often carry multi-line messages; the first line
    is the statement, the rest is usually a dump. Falls back to the exception's type.
    """
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text.strip("'\"")
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return type(exc).__name__
