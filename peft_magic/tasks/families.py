"""The five task families: what data each takes, how it is tokenized and batched, and
which metrics the field reports for it.

One table, keyed by peft's task type, is what training, ``%peft evaluate``,
``%peft predict`` and the panel consult, so a task is added in one place. The shapes of
causal LM and classification data live in ``causal_lm`` and ``seq_cls``; the other
three in ``seq2seq``, ``token_cls`` and ``qa``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PeftMagicError
from . import causal_lm, preference, qa, seq2seq, seq_cls, token_cls
from .common import Examples


@dataclass(frozen=True)
class Family:
    """One task family as the rest of the package sees it."""

    task: str  # peft TaskType value: "SEQ_2_SEQ_LM"
    title: str  # "sequence-to-sequence"
    shapes: str  # the data it accepts, for errors and help
    metrics: tuple[str, ...]  # what evaluation reports
    label_keys: tuple[str, ...] = ("labels",)  # what the Trainer treats as the labels


FAMILIES: dict[str, Family] = {f.task: f for f in [
    Family("CAUSAL_LM", "causal language modelling", f"{causal_lm.SHAPES} | {preference.SHAPES}",
           ("loss", "perplexity")),
    Family("SEQ_CLS", "sequence classification", seq_cls.SHAPES, ("loss", "accuracy", "f1")),
    Family("SEQ_2_SEQ_LM", "sequence-to-sequence", "source → target pairs: " + ", ".join(
        f"{a}/{b}" for a, b in seq2seq.PAIRS), ("loss", "exact_match", "rougeL")),
    Family("TOKEN_CLS", "token classification", "tokens (a list of words) + tags / ner_tags / labels",
           ("loss", "precision", "recall", "f1", "accuracy")),
    Family("QUESTION_ANS", "extractive question answering", "question + context + answers {text, answer_start} "
           "(SQuAD) or answer", ("loss", "exact_match", "f1"), ("start_positions", "end_positions")),
]}


def family(task: str | None) -> Family:
    """The family of a task type; one line for a task that cannot be trained."""
    fam = FAMILIES.get(task or "CAUSAL_LM")
    if fam is None:
        raise PeftMagicError(f"a {task} model has no head to train",
                             "load it with a task head: --task causal-lm, seq-cls, seq2seq, token-cls or qa")
    return fam


def tokenize_records(records: Sequence[Any], tokenizer: Any, task: str, *, max_len: int = 512,
                     label_names: list[str] | None = None, stride: int | None = None) -> Examples:
    """Records → training rows for ``task``; the shape is detected (one line when it does not fit)."""
    if task == "SEQ_2_SEQ_LM":
        return seq2seq.tokenize_seq2seq(records, tokenizer, max_len=max_len)
    if task == "TOKEN_CLS":
        return token_cls.tokenize_token_cls(records, tokenizer, max_len=max_len, label_names=label_names)
    if task == "QUESTION_ANS":
        return qa.tokenize_qa_train(records, tokenizer, max_len=max_len, stride=stride or max_len // 4)
    family(task)
    if not records:
        raise PeftMagicError("the training data is empty")
    if task == "CAUSAL_LM" and preference.detect_preference(records):
        return preference.tokenize_preference(records, tokenizer, max_len=max_len)
    classify = seq_cls.detect_classify(records)
    if task == "SEQ_CLS":
        if not classify:
            shape, cols = causal_lm.detect_causal(records)
            raise PeftMagicError(f"a classification model needs text+label data; this data is "
                                 f"'{shape or 'unknown'}' (columns {cols})", "add a label column")
        return seq_cls.tokenize_classify(records, tokenizer, max_len=max_len, label_names=label_names)
    if classify:
        raise PeftMagicError("this data has text+label (classification) but the model is not a classifier",
                             "load it with %peft load … --labels N")
    shape, cols = causal_lm.detect_causal(records)
    if not shape:
        raise PeftMagicError(f"cannot tell what to train on: the data has columns {cols}",
                             f"accepted: {causal_lm.SHAPES} | text+label (classifier)")
    return causal_lm.tokenize_causal(records, tokenizer, shape, cols, max_len=max_len)


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with (the eos token where a tokenizer has no pad token)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id or 0


@dataclass(frozen=True)
class BatchNeeds:
    """What the adapter's forward needs in a batch beyond the task's own inputs."""

    task_ids: bool = False  # multitask prompt tuning, Poly: one task id per row
    cpt_offset: int | None = None  # CPT: the largest type id of its context tokens


def cpt_type_mask(labels: Any, attention_mask: Any, offset: int) -> Any:
    """CPT's ``input_type_mask`` for plain rows: each token's role (1 input template,
    2 input, 3 output template, 4 output; 0 padding), as CPT reads it after adding the
    context's largest type id ``offset``.

    CPT computes its loss only where the shifted type is a positive multiple of 4, so
    the tokens our data marks as labels get the type that lands there and the other
    real tokens the next type: with the context's own types this makes the row the
    newest in-context example (weight 1; CPT's decay falls on the older ones). Without
    this every label is masked and the loss is 0 — nothing learned.
    """
    label = 4 - offset % 4
    other = label % 4 + 1
    return ((labels != -100).long() * (label - other) + other) * attention_mask.long()


class WithMethodInputs:
    """Adds what the method's forward needs (:class:`BatchNeeds`) to every batch."""

    def __init__(self, collator: Any, needs: BatchNeeds) -> None:
        self.collator = collator
        self.needs = needs

    @property
    def tokens(self) -> int:
        return self.collator.tokens

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out = self.collator(batch)
        if self.needs.task_ids:  # a row's task_id, else 0
            out["task_ids"] = torch.tensor([int(b.get("task_id", 0)) for b in batch], dtype=torch.long)
        if self.needs.cpt_offset is not None and "labels" in out and out["labels"].dim() == 2:
            out["input_type_mask"] = cpt_type_mask(out["labels"], out["attention_mask"], self.needs.cpt_offset)
        return out


def collator_for(task: str, tokenizer: Any, needs: BatchNeeds | None = None) -> Any:
    """The padding collator of a task; each counts the real tokens it has seen (``tokens``).
    ``needs``: what the adapter's forward needs besides (``inference.running.batch_needs``)."""
    return collator_with_pad(task, pad_id(tokenizer), needs)


def collator_with_pad(task: str, pid: int, needs: BatchNeeds | None = None) -> Any:
    """:func:`collator_for` given the pad id itself (training workers have no tokenizer)."""
    if task == "SEQ_2_SEQ_LM":
        coll: Any = seq2seq.Seq2SeqCollator(pid)
    elif task == "QUESTION_ANS":
        coll = qa.QACollator(pid)
    else:
        coll = causal_lm.Collator(pid, classify=(task == "SEQ_CLS"))
    return WithMethodInputs(coll, needs) if needs is not None and needs != BatchNeeds() else coll


_SHAPE_TEXT = {"text": "text (loss on every token)", "completion": "prompt → completion (loss on the completion)",
               "chat": "chat messages (loss on the assistant turns)", "classify": "text → label",
               "seq2seq": "source → target", "token-cls": "words → tags", "qa": "question + context → answer span",
               "paired": "prompt → chosen / rejected (preference pairs)",
               "unpaired": "prompt → completion, desirable or not (kto)"}


def describe(examples: Examples) -> str:
    """``120 examples · prompt → completion (loss on the completion) · 3 cut to max_len`` —
    what the training display prints about the data."""
    parts = [f"{examples.n_raw:,} examples", _SHAPE_TEXT.get(examples.shape, examples.shape)]
    if examples.shape == "qa":
        parts.append(f"{len(examples):,} windows of max_len" + (
            f" ({examples.truncated:,} contexts split)" if examples.truncated else ""))
    if examples.label_names:
        shown = ", ".join(examples.label_names[:8]) + (" …" if len(examples.label_names) > 8 else "")
        parts.append(f"labels {shown}")
    if examples.truncated and examples.shape != "qa":
        parts.append(f"{examples.truncated:,} cut to max_len")
    if examples.skipped:
        parts.append(f"{examples.skipped:,} skipped (nothing to learn)")
    return " · ".join(parts)
