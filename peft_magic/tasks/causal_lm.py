"""Causal language modelling data: plain text, prompt → completion, and chat.

============  =================================  ======================================
shape         columns                            loss on
============  =================================  ======================================
text          ``text`` (or a list of str)        every token
completion    ``prompt`` + ``completion``        the completion only
              (also instruction/input/output,
              question/answer)
chat          ``messages`` (role/content list)   assistant turns only (chat template)
============  =================================  ======================================

Tokenization is batched (the fast tokenizer's Rust batch path). An instruct model's
completion data is put into its own chat template, which is how it learns best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import PeftMagicError
from .common import Examples, PaddingCollator, round_up

COMPLETION_KEYS = [("prompt", "completion"), ("instruction", "output"), ("question", "answer"),
                   ("input", "output"), ("prompt", "response")]
SHAPES = "text | prompt+completion | messages (chat)"


def detect_causal(records: Sequence[Any]) -> tuple[str, list[str]]:
    """``"text"``, ``"completion"`` or ``"chat"`` and the columns, or ``None`` shape when none fits."""
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
    for a, b in COMPLETION_KEYS:
        if a in keys and b in keys:
            return "completion", cols
    if "text" in keys:
        return "text", cols
    return "", cols


def eos_ids(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def batched_ids(tokenizer: Any, texts: list[str], add_special: bool = True) -> list[list[int]]:
    """Token ids of many texts through the fast tokenizer's batch path, 1000 at a time."""
    out: list[list[int]] = []
    for i in range(0, len(texts), 1000):
        enc = tokenizer(texts[i:i + 1000], add_special_tokens=add_special, truncation=False, verbose=False)
        out.extend(enc["input_ids"])
    return out


def chat_ids(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
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


class _Rows:
    """Collects examples: cut to max_len, drop those with nothing left to learn."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.rows: list[dict[str, Any]] = []
        self.truncated = self.skipped = 0

    def add(self, ids: list[int], labels: list[int]) -> None:
        if len(ids) > self.max_len:
            ids, labels = ids[:self.max_len], labels[:self.max_len]
            self.truncated += 1
        if all(x == -100 for x in labels):
            self.skipped += 1
            return
        self.rows.append({"input_ids": ids, "labels": labels})


def _completion_pairs(records: Sequence[Any]) -> tuple[list[str], list[str]]:
    a, b = next((a, b) for a, b in COMPLETION_KEYS if a in records[0] and b in records[0])
    prompts, completions = [], []
    for r in records:
        p = str(r.get(a) or "")
        if a == "instruction" and r.get("input"):
            p = f"{p}\n\n{r['input']}"
        prompts.append(p)
        completions.append(str(r.get(b) or ""))
    return prompts, completions


def tokenize_causal(records: Sequence[Any], tokenizer: Any, shape: str, cols: list[str],
                    max_len: int = 512) -> Examples:
    """Records of a detected ``shape`` → rows ``{"input_ids", "labels"}`` (labels -100 where
    there is nothing to learn)."""
    out = _Rows(max_len)
    if shape == "text":
        eos = eos_ids(tokenizer)
        for ids in batched_ids(tokenizer, [r if isinstance(r, str) else str(r.get("text") or "") for r in records]):
            if not ids:
                out.skipped += 1
                continue
            if eos and ids[-1] != eos[0]:
                ids = ids + eos  # teach the model to stop
            out.add(ids, list(ids))
    elif shape == "completion":
        prompts, completions = _completion_pairs(records)
        if getattr(tokenizer, "chat_template", None):  # instruct models learn best in their own format
            for p, c in zip(prompts, completions):
                out.add(*chat_ids(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": c}]))
        else:
            eos = eos_ids(tokenizer)
            c_ids = batched_ids(tokenizer, [" " + c if c and not c[0].isspace() else c for c in completions],
                                add_special=False)
            for p, c in zip(batched_ids(tokenizer, prompts), c_ids):
                out.add(p + c + eos, [-100] * len(p) + c + eos)
    else:  # chat
        if not getattr(tokenizer, "chat_template", None):
            raise PeftMagicError("chat data needs a tokenizer with a chat template, and this one has none",
                                 "set tokenizer.chat_template, or give prompt/completion columns")
        for r in records:
            msgs = [{"role": m.get("role") or m.get("from"), "content": m.get("content") or m.get("value")}
                    for m in (r.get("messages") or r.get("conversations") or [])]
            if not msgs:
                out.skipped += 1
                continue
            out.add(*chat_ids(tokenizer, msgs))
    return Examples(out.rows, shape, len(records), None, out.truncated, out.skipped, cols)


class Collator(PaddingCollator):
    """Pad a batch to its longest example (rounded up to a multiple of 8) and count real tokens.

    Dynamic padding instead of ``padding="max_length"``: padding is wasted compute, and
    on real text with long-tailed lengths most of a fixed-length batch is padding.
    ``tokens`` counts the real (non-pad) tokens seen, for the tokens/s readout. With
    ``classify`` the labels are one id per example (sequence classification); otherwise
    they are padded with -100 like the inputs (causal LM, token classification).
    """

    def __init__(self, pad_id: int, classify: bool = False, multiple: int = 8) -> None:
        super().__init__(pad_id, multiple)
        self.classify = classify

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(b["input_ids"]) for b in batch)
        if self.multiple > 1:
            longest = round_up(longest, self.multiple)
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
