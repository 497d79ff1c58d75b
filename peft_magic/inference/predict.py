"""``%peft predict``: the task's natural answer for one input or a list of them.

A classifier gives a label and its probability; a token classifier gives entities (text,
type, character span; B-/I- tags merged); an extractive QA model gives the answer text,
its span in the context and a score; seq2seq and causal LMs give generated text (greedy,
the latter through ``generate``, with its chat template). Lists are run in batches. The
model is used in eval mode without gradients and left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import stack
from ..errors import PeftMagicError
from ..memory import device_of
from ..model.properties import infer_task, require_model
from ..rendering import HtmlRepr
from ..state import peft_model_for, unwrap
from ..tasks import qa, token_cls
from ..tasks.families import family
from .evaluate import EVAL_BATCH, qa_answers, seq2seq_generate
from .running import eval_mode

DEFAULT_NEW_TOKENS = 48


@dataclass
class Predictions(HtmlRepr):
    """One answer per input; ``outputs[i]`` is the answer to ``inputs[i]`` (a dict for
    classification and QA, a list of entity dicts for token classification, a string for
    generated text)."""

    task: str
    inputs: list[Any]
    outputs: list[Any]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, i: int) -> Any:
        return self.outputs[i]

    def answer_text(self, i: int) -> str:
        """Output ``i`` as one line of text."""
        out = self.outputs[i]
        if self.task == "SEQ_CLS":
            return f"{out['label']} ({out['score']:.1%})"
        if self.task == "TOKEN_CLS":
            return ", ".join(f"{e['text']} [{e['type']}] {e['start']}–{e['end']}" for e in out) or "no entities"
        if self.task == "QUESTION_ANS":
            return (f"{out['text']!r} at {out['start']}–{out['end']} ({out['score']:.1%})" if out["text"]
                    else "no answer")
        return str(out)

    def input_text(self, i: int) -> str:
        item = self.inputs[i]
        if isinstance(item, dict):
            return f"{item.get('question', '')} | {item.get('context', '')}"
        return item if isinstance(item, str) else " ".join(map(str, item))

    def __repr__(self) -> str:
        if len(self.outputs) == 1:
            return self.answer_text(0)
        return "\n".join(f"{self.input_text(i)[:60]} → {self.answer_text(i)}" for i in range(len(self.outputs)))


def _label_names(model: Any) -> list[str]:
    cfg = unwrap(model).config
    return [cfg.id2label[i] for i in sorted(cfg.id2label)]


def _classify(model: Any, tokenizer: Any, items: list[str], batch: int, max_len: int) -> list[dict[str, Any]]:
    import torch

    names = _label_names(model)
    out: list[dict[str, Any]] = []
    for lo in range(0, len(items), batch):
        enc = tokenizer(items[lo:lo + batch], return_tensors="pt", padding=True, truncation=True, max_length=max_len)
        enc = {k: v.to(device_of(model)) for k, v in enc.items()}
        with torch.no_grad():
            probs = model(**enc).logits.float().softmax(-1).cpu()
        for row in probs:
            k = int(row.argmax())
            out.append({"label": names[k], "score": float(row[k]),
                        "scores": {names[i]: float(p) for i, p in enumerate(row)}})
    return out


def _entities(model: Any, tokenizer: Any, items: list[Any], max_len: int) -> list[list[dict[str, Any]]]:
    import torch

    names = _label_names(model)
    out = []
    for item in items:
        enc = token_cls.encode_for_predict(item, tokenizer, max_len=max_len)
        dev = device_of(model)
        inputs = {"input_ids": torch.tensor([enc["input_ids"]], device=dev),
                  "attention_mask": torch.tensor([enc["attention_mask"]], device=dev)}
        with torch.no_grad():
            logits = model(**inputs).logits[0].float().cpu().tolist()
        out.append(token_cls.decode_entities(item, enc["word_ids"], logits, names, offsets=enc["offsets"]))
    return out


def _as_qa_records(items: list[Any]) -> list[dict[str, Any]]:
    records = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "question" not in item or "context" not in item:
            raise PeftMagicError(f"input {i} is not a question with a context",
                                 'give question="…" context="…" (a dict with both, or a list of them)')
        records.append({"question": item["question"], "context": item["context"]})
    qa.qa_examples(records, need_answers=False)
    return records


def _generate(model: Any, tokenizer: Any, task: str, items: list[str], batch: int, max_len: int,
              max_new_tokens: int) -> list[str]:
    if task == "SEQ_2_SEQ_LM":
        return seq2seq_generate(model, tokenizer, items, max_len, max_new_tokens, batch)
    from .generate import generate

    return [generate(model, text, tokenizer=tokenizer, max_new_tokens=max_new_tokens).text for text in items]


def predict(model: Any, inputs: Any, *, tokenizer: Any, batch: int = EVAL_BATCH, max_len: int = 512,
            max_new_tokens: int = DEFAULT_NEW_TOKENS) -> Predictions:
    """The task's answer for ``inputs``: one input — a string, or a ``{"question", "context"}``
    dict for QA — or a list of them (for token classification an item may also be a list
    of words)."""
    stack.ensure()
    require_model(model)
    if tokenizer is None:
        raise PeftMagicError("prediction needs the model's tokenizer", "pass tokenizer=… (--tokenizer VAR)")
    task = infer_task(model) or "CAUSAL_LM"
    family(task)
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else list(inputs)
    if not items:
        raise PeftMagicError("nothing to predict: the input list is empty")
    if task != "QUESTION_ANS" and not all(isinstance(x, (str, list, tuple)) for x in items):
        raise PeftMagicError(f"cannot predict from a {type(items[0]).__name__}", "give a string or a list of strings")
    pm = peft_model_for(model)
    target = pm if pm is not None else unwrap(model)
    with eval_mode(target):
        if task == "SEQ_CLS":
            outputs: list[Any] = _classify(target, tokenizer, [str(x) for x in items], batch, max_len)
        elif task == "TOKEN_CLS":
            outputs = _entities(target, tokenizer, items, max_len)
        elif task == "QUESTION_ANS":
            outputs = qa_answers(target, tokenizer, _as_qa_records(items), max_len, None, batch)
        else:
            outputs = _generate(target, tokenizer, task, [str(x) for x in items], batch, max_len, max_new_tokens)
    return Predictions(task, items, outputs)
