"""Sequence classification data: ``text`` (or ``sentence``) + ``label`` (ints or names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import PeftMagicError
from .causal_lm import batched_ids
from .common import Examples

SHAPES = "text + label (also sentence + label)"


def detect_classify(records: Sequence[Any]) -> bool:
    """Whether the records have a text column and a label column."""
    first = records[0]
    if not isinstance(first, dict):
        return False
    keys = set(first)
    return bool(keys & {"text", "sentence"}) and bool(keys & {"label", "labels"})


def tokenize_classify(records: Sequence[Any], tokenizer: Any, max_len: int = 512,
                      label_names: list[str] | None = None) -> Examples:
    """Rows ``{"input_ids", "labels": id}``; string labels become ids in ``label_names``
    order (default: sorted), integer labels are taken as ids."""
    text_key = "text" if "text" in records[0] else "sentence"
    label_key = "label" if "label" in records[0] else "labels"
    raw = [r.get(label_key) for r in records]
    names = None
    if all(isinstance(x, (bool, int)) for x in raw):
        ids_of = {x: int(x) for x in raw}
    else:
        names = label_names or sorted({str(x) for x in raw})
        ids_of = {}
        for x in raw:
            if str(x) not in names:
                raise PeftMagicError(f"label '{x}' is not one of the known labels {names}")
            ids_of[x] = names.index(str(x))
    rows, truncated = [], 0
    for ids, lab in zip(batched_ids(tokenizer, [str(r.get(text_key) or "") for r in records]), raw):
        if len(ids) > max_len:
            ids, truncated = ids[:max_len], truncated + 1
        rows.append({"input_ids": ids, "labels": ids_of[lab]})
    return Examples(rows, "classify", len(records), names, truncated, 0, list(records[0].keys()))
