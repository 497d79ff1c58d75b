"""Sequence-to-sequence data (summarisation, translation, rewriting) for encoder-decoder models.

Why: an encoder-decoder (T5, BART, mT5) reads the source with its encoder and is trained
to emit the target with its decoder, so a row is two token lists — ``input_ids`` for the
encoder and ``labels`` for the decoder (the model shifts the labels right into its
decoder inputs itself). The source/target columns are recognised from their names, the
target is tokenized with ``tokenizer(text_target=...)`` (which appends EOS the way the
model's tokenizer does, so the model learns to stop), and :class:`Seq2SeqCollator` pads
the two sides separately: input ids with the pad id, labels with -100.

==================================  =============================================
columns (source / target)           typical data
==================================  =============================================
prompt / completion                 generic
input / target, source / target     rewriting, translation pairs
document / summary                  XSum-style summarisation
question / answer                   closed-book QA
input / output, text / summary,     common alternatives
dialogue / summary,
article / highlights
==================================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PeftMagicError
from .common import Examples, PaddingCollator, check_records, round_up

PAIRS: list[tuple[str, str]] = [
    ("prompt", "completion"), ("input", "target"), ("source", "target"), ("document", "summary"),
    ("question", "answer"), ("input", "output"), ("text", "summary"), ("dialogue", "summary"),
    ("article", "highlights"),
]


def detect_seq2seq_columns(records: Sequence[Any]) -> tuple[str, str]:
    """The (source, target) column names: the first pair of :data:`PAIRS` the records have."""
    records = check_records(records, "seq2seq")
    keys = set(records[0].keys())
    for src, tgt in PAIRS:
        if src in keys and tgt in keys:
            return src, tgt
    raise PeftMagicError(f"cannot tell the source and target columns: the data has columns {list(records[0].keys())}",
                         "accepted pairs: " + ", ".join(f"{a}/{b}" for a, b in PAIRS))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _encode(tokenizer: Any, texts: list[str], max_len: int, target: bool) -> tuple[list[list[int]], set[int]]:
    """Token ids of ``texts`` (as source or target), cut to ``max_len``; and which were cut.

    Tokenized untruncated first (batched, Rust), so that cuts are counted; only the long
    ones are re-tokenized with truncation, which keeps the closing special tokens.
    """
    def run(batch: list[str], **kw: Any) -> list[list[int]]:
        out: list[list[int]] = []
        for i in range(0, len(batch), 1000):
            part = batch[i:i + 1000]
            enc = tokenizer(text_target=part, verbose=False, **kw) if target else tokenizer(part, verbose=False, **kw)
            out.extend(list(x) for x in enc["input_ids"])
        return out

    ids = run(texts, truncation=False)
    long = [i for i, x in enumerate(ids) if len(x) > max_len]
    if long:
        for i, x in zip(long, run([texts[i] for i in long], truncation=True, max_length=max_len)):
            ids[i] = x
    return ids, set(long)


def tokenize_seq2seq(records: Sequence[Any], tokenizer: Any, max_len: int = 512,
                     max_target_len: int | None = None) -> Examples:
    """Source/target records → rows ``{"input_ids", "labels"}`` for an encoder-decoder.

    Sources are cut to ``max_len`` tokens, targets to ``max_target_len`` (default
    ``max_len``); ``truncated`` counts records where either was cut. Records with an
    empty target are dropped (``skipped``): there is nothing to learn from them.
    """
    if tokenizer is None:
        raise PeftMagicError("training needs a tokenizer and none was found",
                             "load the model with %peft load, or pass --tokenizer VAR")
    records = check_records(records, "seq2seq")
    src, tgt = detect_seq2seq_columns(records)
    keep = [r for r in records if _text(r.get(tgt)).strip()]
    if not keep:
        raise PeftMagicError(f"no usable examples: every '{tgt}' is empty")
    src_ids, cut_src = _encode(tokenizer, [_text(r.get(src)) for r in keep], max_len, target=False)
    tgt_ids, cut_tgt = _encode(tokenizer, [_text(r.get(tgt)) for r in keep], max_target_len or max_len, target=True)
    truncated = len(cut_src | cut_tgt)  # a record cut on both sides counts once
    rows = [{"input_ids": s, "labels": t} for s, t in zip(src_ids, tgt_ids)]
    return Examples(rows, "seq2seq", len(records), None, truncated, len(records) - len(keep),
                        list(records[0].keys()))


class Seq2SeqCollator(PaddingCollator):
    """Pad a seq2seq batch: sources and targets each to their longest (rounded up to a multiple of 8).

    ``input_ids`` pad with ``pad_id`` (``attention_mask`` 1 on real tokens, 0 on padding),
    ``labels`` with -100 so padding is not learned. The model builds its decoder inputs
    from the labels. ``tokens`` counts the real tokens seen, source and target together
    (the encoder and the decoder both process them).
    """

    def __call__(self, batch: list[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        n = len(batch)
        src_len = round_up(max(len(b["input_ids"]) for b in batch), self.multiple)
        tgt_len = round_up(max(len(b["labels"]) for b in batch), self.multiple)
        input_ids = torch.full((n, src_len), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, src_len), dtype=torch.long)
        labels = torch.full((n, tgt_len), -100, dtype=torch.long)
        for i, b in enumerate(batch):
            s, t = b["input_ids"], b["labels"]
            input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            attention[i, :len(s)] = 1
            labels[i, :len(t)] = torch.tensor(t, dtype=torch.long)
            self.tokens += len(s) + len(t)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
