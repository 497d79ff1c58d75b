"""Training data in any common shape → tokenized examples, without a tokenization loop.

Why: in a notebook the data is whatever is at hand — a list of strings, a list of dicts,
a DataFrame, a ``datasets.Dataset``, a ``.jsonl`` file. The user should not write a
collator or a ``map`` call. This module recognises the shape from the column names and
tokenizes accordingly:

============  =================================  ======================================
shape         columns                            loss on
============  =================================  ======================================
text          ``text`` (or a list of str)        every token
completion    ``prompt`` + ``completion``        the completion only
              (also instruction/input/output,
              question/answer)
chat          ``messages`` (role/content list)   assistant turns only (chat template)
classify      ``text`` + ``label``               the label (sequence classification)
============  =================================  ======================================

Anything else is one line naming the columns found and the shapes accepted.

Speed: tokenization is batched (the fast tokenizer's Rust batch path) and cached per
(data content, tokenizer, max_len), so re-running a training cell does not re-tokenize.
Batches are padded dynamically (to the longest in the batch, rounded up to a multiple of
8) and length-grouped by the trainer: on long-tailed real text this is 4.7× the real
tokens/s of ``padding="max_length"`` (measured: see ``bench/RESULTS.md``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PeftMagicError

SHAPES = "text | prompt+completion | messages (chat) | text+label"
_COMPLETION_KEYS = [("prompt", "completion"), ("instruction", "output"), ("question", "answer"),
                    ("input", "output"), ("prompt", "response")]


@dataclass
class Examples:
    """Tokenized examples ready for the trainer (a list of dicts: input_ids, labels, …)."""

    rows: list[dict[str, list[int]]]
    shape: str  # "text" | "completion" | "chat" | "classify"
    n_raw: int
    label_names: list[str] | None = None  # for classify: id → name
    truncated: int = 0  # examples longer than max_len
    skipped: int = 0  # empty examples dropped
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]

    @property
    def real_tokens(self) -> int:
        return sum(len(r["input_ids"]) for r in self.rows)


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


def detect_shape(records: list[Any]) -> tuple[str, list[str]]:
    """The shape of the records and their columns; a one-line error for anything else."""
    if not records:
        raise PeftMagicError("the training data is empty")
    first = records[0]
    if isinstance(first, str):
        if not all(isinstance(r, str) for r in records):
            raise PeftMagicError("the data mixes strings and other things", "use a list of strings or a list of dicts")
        return "text", ["text"]
    if not isinstance(first, dict):
        raise PeftMagicError(f"each example must be a string or a dict, got {type(first).__name__}")
    cols = list(first.keys())
    keys = set(cols)
    if keys & {"messages", "conversations"}:
        return "chat", cols
    for a, b in _COMPLETION_KEYS:
        if a in keys and b in keys:
            return "completion", cols
    if "text" in keys and ("label" in keys or "labels" in keys):
        return "classify", cols
    if "text" in keys:
        return "text", cols
    if "sentence" in keys and "label" in keys:
        return "classify", cols
    raise PeftMagicError(f"cannot tell what to train on: the data has columns {cols}", f"accepted: {SHAPES}")


# ----------------------------------------------------------------------------- tokenization

_CACHE: OrderedDict[tuple, Examples] = OrderedDict()
_CACHE_SIZE = 8


def _tok_key(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}:{name}:{len(tokenizer)}:{getattr(tokenizer, 'chat_template', None) and hash(tokenizer.chat_template)}"


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _batched(tokenizer: Any, texts: list[str], add_special: bool = True) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), 1000):
        enc = tokenizer(texts[i:i + 1000], add_special_tokens=add_special, truncation=False, verbose=False)
        out.extend(enc["input_ids"])
    return out


def _chat_ids(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and labels that are -100 except on assistant turns.

    The template is applied to growing prefixes of the conversation; the tokens an
    assistant message adds are its span. This works with any chat template (no need for
    ``{% generation %}`` markers).
    """
    def ids(msgs: list[dict], gen: bool) -> list[int]:
        out = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
        if hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    full = ids(messages, False)
    labels = [-100] * len(full)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        start = len(ids(messages[:i], True)) if i else 0
        end = len(ids(messages[:i + 1], False))
        for j in range(start, min(end, len(full))):
            labels[j] = full[j]
    return full, labels


def tokenize(data: Any, tokenizer: Any, *, max_len: int = 512, task: str = "CAUSAL_LM",
             split: str = "train", label_names: list[str] | None = None) -> Examples:
    """Tokenize ``data`` for ``task`` (cached per data content, tokenizer and max_len)."""
    if tokenizer is None:
        raise PeftMagicError("training needs a tokenizer and none was found",
                             "load the model with %peft load, or pass --tokenizer VAR")
    records, fp = to_records(data, split)
    key = (fp, _tok_key(tokenizer), max_len, task, tuple(label_names or ()))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    shape, cols = detect_shape(records)
    if task == "SEQ_CLS" and shape != "classify":
        raise PeftMagicError(f"a classification model needs text+label data; this data is '{shape}' "
                             f"(columns {cols})", "add a label column")
    if shape == "classify" and task != "SEQ_CLS":
        raise PeftMagicError("this data has text+label (classification) but the model is not a classifier",
                             "load it with %peft load … --labels N")

    rows: list[dict[str, list[int]]] = []
    truncated = skipped = 0
    names = None

    def add(ids: list[int], labels: list[int]) -> None:
        """Keep an example: cut to max_len; drop it when no label is left to learn."""
        nonlocal truncated, skipped
        if len(ids) > max_len:
            ids, labels, truncated = ids[:max_len], labels[:max_len], truncated + 1
        if all(x == -100 for x in labels):
            skipped += 1
            return
        rows.append({"input_ids": ids, "labels": labels})

    if shape == "text":
        texts = [r if isinstance(r, str) else str(r.get("text") or "") for r in records]
        all_ids = _batched(tokenizer, texts)
        eos = _eos(tokenizer)
        for ids in all_ids:
            if not ids:
                skipped += 1
                continue
            if eos and ids[-1] != eos[0]:
                ids = ids + eos  # teach the model to stop
            add(ids, list(ids))
    elif shape == "completion":
        a, b = next((a, b) for a, b in _COMPLETION_KEYS if a in records[0] and b in records[0])
        prompts, completions = [], []
        for r in records:
            p = str(r.get(a) or "")
            if a == "instruction" and r.get("input"):
                p = f"{p}\n\n{r['input']}"
            prompts.append(p)
            completions.append(str(r.get(b) or ""))
        if getattr(tokenizer, "chat_template", None):
            # Instruct models learn best in their own chat format.
            for p, c in zip(prompts, completions):
                add(*_chat_ids(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": c}]))
        else:
            p_ids = _batched(tokenizer, prompts)
            c_ids = _batched(tokenizer, [" " + c if c and not c[0].isspace() else c for c in completions],
                             add_special=False)
            eos = _eos(tokenizer)
            for p, c in zip(p_ids, c_ids):
                add(p + c + eos, [-100] * len(p) + c + eos)
    elif shape == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise PeftMagicError("chat data needs a tokenizer with a chat template, and this one has none",
                                 "set tokenizer.chat_template, or give prompt/completion columns")
        for r in records:
            msgs = r.get("messages") or r.get("conversations") or []
            msgs = [{"role": m.get("role") or m.get("from"), "content": m.get("content") or m.get("value")}
                    for m in msgs]
            if not msgs:
                skipped += 1
                continue
            add(*_chat_ids(tokenizer, msgs))
    else:  # classify
        text_key = "text" if "text" in records[0] else "sentence"
        label_key = "label" if "label" in records[0] else "labels"
        raw = [r.get(label_key) for r in records]
        if all(isinstance(x, bool) or isinstance(x, int) for x in raw):
            ids_of = {x: int(x) for x in raw}
        else:
            names = label_names or sorted({str(x) for x in raw})
            ids_of = {}
            for x in raw:
                if str(x) not in names:
                    raise PeftMagicError(f"label '{x}' is not one of the known labels {names}")
                ids_of[x] = names.index(str(x))
        texts = [str(r.get(text_key) or "") for r in records]
        for ids, lab in zip(_batched(tokenizer, texts), raw):
            if len(ids) > max_len:
                ids, truncated = ids[:max_len], truncated + 1
            rows.append({"input_ids": ids, "labels": ids_of[lab]})  # type: ignore[dict-item]
    if not rows:
        raise PeftMagicError("no usable examples: every example was empty or had nothing to learn")
    ex = Examples(rows, shape, len(records), names, truncated, skipped, cols)
    _CACHE[key] = ex
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ex


class Collator:
    """Pad a batch to its longest example (rounded up to a multiple of 8) and count real tokens.

    Dynamic padding instead of ``padding="max_length"``: padding is wasted compute, and
    on real text with long-tailed lengths most of a fixed-length batch is padding.
    ``tokens`` counts the real (non-pad) tokens seen, for the tokens/s readout.
    """

    def __init__(self, pad_id: int, classify: bool = False, multiple: int = 8) -> None:
        self.pad_id = pad_id
        self.classify = classify
        self.multiple = multiple
        self.tokens = 0

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(b["input_ids"]) for b in batch)
        if self.multiple > 1:
            longest = -(-longest // self.multiple) * self.multiple
        n = len(batch)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        labels = None if self.classify else torch.full((n, longest), -100, dtype=torch.long)
        for i, b in enumerate(batch):
            ids = b["input_ids"]
            input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, :len(ids)] = 1
            if labels is not None:
                labels[i, :len(ids)] = torch.tensor(b["labels"], dtype=torch.long)
            self.tokens += len(ids)
        out = {"input_ids": input_ids, "attention_mask": attention}
        out["labels"] = torch.tensor([int(b["labels"]) for b in batch], dtype=torch.long) if self.classify else labels
        return out


def split_eval(examples: Examples, fraction: float, seed: int = 0) -> tuple[Examples, Examples]:
    """Hold out ``fraction`` of the examples for evaluation (deterministic)."""
    import random

    if not 0 < fraction < 1:
        raise PeftMagicError(f"eval fraction must be between 0 and 1, got {fraction}")
    idx = list(range(len(examples.rows)))
    random.Random(seed).shuffle(idx)
    k = max(1, int(round(len(idx) * fraction)))
    if k >= len(idx):
        raise PeftMagicError(f"too few examples ({len(idx)}) to hold out {fraction:.0%} for evaluation")
    ev = [examples.rows[i] for i in sorted(idx[:k])]
    tr = [examples.rows[i] for i in sorted(idx[k:])]
    mk = lambda rows: Examples(rows, examples.shape, len(rows), examples.label_names)  # noqa: E731
    return mk(tr), mk(ev)
