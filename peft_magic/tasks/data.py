"""Training data in any common container → records → the task's tokenized rows.

Why: in a notebook the data is whatever is at hand — a list of strings, a list of dicts,
a DataFrame, a ``datasets.Dataset``, a ``.jsonl`` / ``.json`` / ``.csv`` / ``.txt`` file. The
user should not write a collator or a ``map`` call. This module turns any of them into
records, and hands them to the task family of the model (``tasks/families.py``), which
recognises the shape from the column names (text, prompt → completion, chat, text +
label, source → target, words + tags, SQuAD) and tokenizes accordingly; anything else is
one line naming the columns found and the shapes accepted.

Speed: tokenization is batched (the fast tokenizer's Rust batch path) and cached per
(data content, tokenizer, task, max_len), so re-running a training cell does not
re-tokenize. Batches are padded dynamically (to the longest in the batch, rounded up to
a multiple of 8) and length-grouped by the trainer: on long-tailed real text this is
4.7× the real tokens/s of ``padding="max_length"`` (measured: see ``bench/RESULTS.md``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import PeftMagicError
from . import families
from .causal_lm import Collator
from .common import Examples

__all__ = ["Collator", "Examples", "tokenize", "tokenize_records", "to_records", "split_records"]


# ----------------------------------------------------------------------------- records


def _read_file(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                for key in ("data", "train", "examples", "rows"):
                    if isinstance(data.get(key), list):
                        return data[key]
                raise PeftMagicError(f"{path.name} holds a JSON object, not a list of examples",
                                     "use a list of objects, or .jsonl with one object per line")
            return data
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        if suffix == ".txt":
            text = path.read_text(encoding="utf-8")
            blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
            if len(blocks) > 1:
                return blocks  # one example per paragraph
            return [ln for ln in text.splitlines() if ln.strip()]
    except json.JSONDecodeError as e:
        raise PeftMagicError(f"{path.name} is not valid JSON: line {e.lineno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise PeftMagicError(f"{path.name} is not UTF-8 text") from None
    raise PeftMagicError(f"cannot read {path.name}: unsupported file type '{suffix}'",
                         "use .jsonl, .json, .csv or .txt")


def to_records(data: Any, split: str = "train") -> tuple[list[Any], str]:
    """Any supported container → (list of str or dict records, a content fingerprint)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.exists():
            raise PeftMagicError(f"no such file: {data}", "give a variable holding the data, or a .jsonl/.json/.csv/.txt path")
        stat = path.stat()
        return _read_file(path), f"file:{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    mod = type(data).__module__
    name = type(data).__name__
    if mod.startswith("datasets"):
        if name == "DatasetDict":
            if split not in data:
                raise PeftMagicError(f"the DatasetDict has no '{split}' split (it has {', '.join(data)})")
            data = data[split]
        fp = getattr(data, "_fingerprint", None)
        return data.to_list(), f"ds:{fp}" if fp else _fingerprint(data.to_list())
    if mod.startswith("pandas") and name == "DataFrame":
        records = data.to_dict(orient="records")
        return records, _fingerprint(records)
    if mod.startswith("pandas") and name == "Series":
        records = data.tolist()
        return records, _fingerprint(records)
    if isinstance(data, (list, tuple)):
        return list(data), _fingerprint(data)
    raise PeftMagicError(
        f"cannot train on a {name}",
        "give a list of strings or dicts, a pandas DataFrame, a datasets.Dataset, or a .jsonl/.json/.csv/.txt path",
    )


def _fingerprint(records: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for r in records:
        h.update(json.dumps(r, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return "rec:" + h.hexdigest()


_CACHE: OrderedDict[tuple, Examples] = OrderedDict()
_CACHE_SIZE = 8


def _tok_key(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    template = getattr(tokenizer, "chat_template", None)
    return f"{type(tokenizer).__name__}:{name}:{len(tokenizer)}:{template and hash(template)}"


def tokenize(data: Any, tokenizer: Any, *, max_len: int = 512, task: str = "CAUSAL_LM",
             split: str = "train", label_names: list[str] | None = None, stride: int | None = None) -> Examples:
    """Tokenize ``data`` for ``task`` (cached per data content, tokenizer, task and max_len)."""
    if tokenizer is None:
        raise PeftMagicError("training needs a tokenizer and none was found",
                             "load the model with %peft load, or pass --tokenizer VAR")
    records, fp = to_records(data, split)
    return tokenize_records(records, fp, tokenizer, max_len=max_len, task=task, label_names=label_names,
                            stride=stride)


def tokenize_records(records: list[Any], fingerprint: str, tokenizer: Any, *, max_len: int = 512,
                     task: str = "CAUSAL_LM", label_names: list[str] | None = None,
                     stride: int | None = None) -> Examples:
    """Records (with their content fingerprint) → the task's rows, through the cache."""
    key = (fingerprint, _tok_key(tokenizer), max_len, task, tuple(label_names or ()), stride)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    ex = families.tokenize_records(records, tokenizer, task, max_len=max_len, label_names=label_names, stride=stride)
    if not ex.rows:
        raise PeftMagicError("no usable examples: every example was empty or had nothing to learn")
    _CACHE[key] = ex
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ex


def split_records(records: list[Any], fraction: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Hold out ``fraction`` of the records for evaluation (deterministic, order kept)."""
    import random

    if not 0 < fraction < 1:
        raise PeftMagicError(f"eval fraction must be between 0 and 1, got {fraction}")
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    k = max(1, int(round(len(idx) * fraction)))
    if k >= len(idx):
        raise PeftMagicError(f"too few examples ({len(idx)}) to hold out {fraction:.0%} for evaluation")
    held = set(idx[:k])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def class_label_names(data: Any, task: str) -> list[str] | None:
    """Label names a ``datasets`` ClassLabel feature carries (NER tags, class labels), if any."""
    features = getattr(data, "features", None)
    if features is None and type(data).__name__ == "DatasetDict":
        features = getattr(next(iter(data.values()), None), "features", None)
    if features is None:
        return None
    keys = ("ner_tags", "tags", "labels") if task == "TOKEN_CLS" else ("label", "labels")
    for key in keys:
        feat = features.get(key) if hasattr(features, "get") else None
        names = getattr(getattr(feat, "feature", feat), "names", None)
        if names:
            return list(names)
    return None
