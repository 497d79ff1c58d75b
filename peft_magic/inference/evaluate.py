"""``%peft evaluate``: the task's own metrics on held-out data, for the adapter and the base.

The metrics people in each field report (``tasks/metrics.py``): loss and perplexity for
causal LM; accuracy and macro-F1 for classification; entity precision / recall / F1
(seqeval) for token classification; SQuAD exact match and F1 for extractive QA (answers
mapped from token logits back to text through the offsets, best span over windows);
loss, exact match and ROUGE-L for seq2seq (greedy generation); on preference pairs,
DPO's implicit rewards of the adapter against the base (``rewards.py``). The same function
feeds the metrics a training run reports with ``eval=`` (``training/callbacks.py``).

The model is run in eval mode without gradients and left exactly as it was; with
``compare`` the base model is the same model with its adapters switched off for the call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import peft_view, stack
from ..adapter_ops.find import method_name
from ..adapter_ops.switch import set_off, set_on
from ..errors import PeftMagicError
from ..fmt import fmt_metric
from ..memory import device_of
from ..model.properties import infer_task, label_names, require_model
from ..rendering import HtmlRepr
from ..state import peft_model_for, state_for, unwrap
from ..tasks import data as data_mod
from ..tasks import metrics, qa, token_cls
from ..tasks.families import collator_for, family
from ..tasks.preference import PreferenceExamples
from .running import batch_needs, batches, eval_mode

EVAL_BATCH = 16


@dataclass
class EvalSet:
    """Held-out data for one task: the records (for answers and references) and the rows
    the model reads (for the loss)."""

    task: str
    records: list[Any]
    examples: Any
    tokenizer: Any
    max_len: int
    label_names: list[str] | None = None
    stride: int | None = None


def build_eval_set(records: list[Any], fingerprint: str, tokenizer: Any, task: str, *, max_len: int,
                   label_names: list[str] | None = None, stride: int | None = None) -> EvalSet:
    """Tokenize held-out records the way training does (cached), keeping the records."""
    examples = data_mod.tokenize_records(records, fingerprint, tokenizer, max_len=max_len, task=task,
                                         label_names=label_names, stride=stride)
    return EvalSet(task, records, examples, tokenizer, max_len, examples.label_names or label_names, stride)


# ----------------------------------------------------------------------------- per task


def _loss(model: Any, es: EvalSet, batch: int) -> float:
    """Mean loss over the rows, batch means weighted by batch size (as the Trainer's eval)."""
    import torch

    total, n = 0.0, 0
    collator = collator_for(es.task, es.tokenizer, batch_needs(model))
    with torch.no_grad():
        for lo, b in batches(es.examples.rows, collator, batch, device_of(model)):
            size = b["input_ids"].shape[0]
            total += float(model(**b).loss) * size
            n += size
    return total / n if n else float("nan")


def _classification(model: Any, es: EvalSet, batch: int) -> dict[str, float]:
    import torch

    preds: list[int] = []
    with torch.no_grad():
        for _, b in batches(es.examples.rows, collator_for("SEQ_CLS", es.tokenizer, batch_needs(model)), batch, device_of(model)):
            b.pop("labels", None)
            preds += model(**b).logits.argmax(-1).tolist()
    return metrics.classification_scores([r["labels"] for r in es.examples.rows], preds)


def _token_cls(model: Any, es: EvalSet, batch: int) -> dict[str, float]:
    import torch

    rows = es.examples.rows
    logits: list[Any] = []
    with torch.no_grad():
        for lo, b in batches(rows, collator_for("TOKEN_CLS", es.tokenizer, batch_needs(model)), batch, device_of(model)):
            b.pop("labels", None)
            out = model(**b).logits.float().cpu().numpy()
            logits += [out[i, :len(rows[lo + i]["input_ids"])] for i in range(out.shape[0])]
    true_tags, pred_tags = token_cls.align_predictions(logits, [r["labels"] for r in rows], es.label_names)
    return metrics.entity_scores(true_tags, pred_tags)


def qa_answers(model: Any, tokenizer: Any, records: list[Any], max_len: int, stride: int | None,
               batch: int, allow_empty: bool = False) -> list[dict[str, Any]]:
    """The best answer span per record (text, character span, score)."""
    import torch

    windows = qa.tokenize_qa_eval(records, tokenizer, max_len=max_len, stride=stride or max_len // 4).rows
    starts: list[Any] = []
    ends: list[Any] = []
    with torch.no_grad():
        for lo, b in batches(windows, collator_for("QUESTION_ANS", tokenizer, batch_needs(model)), batch, device_of(model)):
            out = model(**b)
            s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for i in range(s.shape[0]):
                n = len(windows[lo + i]["input_ids"])
                starts.append(s[i, :n])
                ends.append(e[i, :n])
    return qa.postprocess_qa(starts, ends, windows, records, allow_empty=allow_empty)


def _qa(model: Any, es: EvalSet, batch: int) -> dict[str, float]:
    examples = qa.qa_examples(es.records, need_answers=True)
    allow_empty = any(not ex["answers"] for ex in examples)  # SQuAD v2: some questions have no answer
    answers = qa_answers(model, es.tokenizer, es.records, es.max_len, es.stride, batch, allow_empty)
    return metrics.squad_metrics([a["text"] for a in answers], [[t for t, _ in ex["answers"]] for ex in examples])


def seq2seq_generate(model: Any, tokenizer: Any, sources: list[str], max_len: int, max_new_tokens: int,
                     batch: int) -> list[str]:
    """Greedy generations for sources (an encoder-decoder reads each source whole)."""
    import torch

    out: list[str] = []
    dev = device_of(model)
    for lo in range(0, len(sources), batch):
        enc = tokenizer(sources[lo:lo + batch], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_len)
        enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [o.strip() for o in out]


def _seq2seq(model: Any, es: EvalSet, batch: int) -> dict[str, float]:
    from ..tasks.seq2seq import detect_seq2seq_columns

    src, tgt = detect_seq2seq_columns(es.records)
    keep = [r for r in es.records if str(r.get(tgt) or "").strip()]
    longest = max((len(r["labels"]) for r in es.examples.rows), default=16)
    preds = seq2seq_generate(model, es.tokenizer, [str(r.get(src) or "") for r in keep], es.max_len,
                             longest + 2, batch)
    refs = [str(r.get(tgt)) for r in keep]
    return {"exact_match": metrics.exact_match(preds, refs), "rougeL": metrics.rouge_l(preds, refs)}


_TASK_METRICS = {"SEQ_CLS": _classification, "TOKEN_CLS": _token_cls, "QUESTION_ANS": _qa,
                 "SEQ_2_SEQ_LM": _seq2seq}


def task_metrics(model: Any, es: EvalSet, *, eval_loss: float | None = None, batch: int = EVAL_BATCH) -> dict:
    """Every metric of the task on ``es`` (``eval_loss`` reuses a loss computed already)."""
    with eval_mode(model):
        loss = eval_loss if eval_loss is not None else _loss(model, es, batch)
        out: dict[str, float] = {"loss": float(loss)}
        if es.task == "CAUSAL_LM":
            out["perplexity"] = metrics.perplexity(loss)
        elif es.task in _TASK_METRICS:
            out.update(_TASK_METRICS[es.task](model, es, batch))
    return out


# ----------------------------------------------------------------------------- %peft evaluate


@dataclass
class EvalResult(HtmlRepr):
    """What ``evaluate`` measured: ``metrics`` for the model as it is (its active adapter),
    and ``base`` for the base model with ``compare``."""

    task: str
    metrics: dict[str, float]
    examples: int
    label: str  # who was evaluated: "default (lora)", "base model"
    base: dict[str, float] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    kind: str | None = None  # what was measured when not the task's own metrics ("preference pairs …")

    @property
    def title(self) -> str:
        return f"{self.kind or family(self.task).title} · {self.label}"

    @property
    def columns(self) -> list[tuple[str, dict[str, float]]]:
        return ([("base model", self.base)] if self.base is not None else []) + [(self.label, self.metrics)]

    def __repr__(self) -> str:
        names = list(self.metrics)
        head = f"{self.kind or family(self.task).title} · {self.examples:,} examples · {self.seconds:.1f} s"
        width = max(len(n) for n in names + ["metric"])
        cols = self.columns
        lines = [head, "  ".join(["metric".ljust(width)] + [c for c, _ in cols])]
        for n in names:
            lines.append("  ".join([n.ljust(width)] + [fmt_metric(n, m.get(n)).ljust(len(c)) for c, m in cols])
                         .rstrip())
        return "\n".join(lines + [f"note: {x}" for x in self.notes])


def _who(pm: Any, target: Any, st: Any, off: bool) -> str:
    if target is not pm:
        return "base model"
    if off:
        return "base model (adapters off)"
    name = peft_view.active_adapter(pm)
    return f"{name} ({method_name(pm.peft_config[name], st, name)})"


def _preference(target: Any, es: EvalSet, pm: Any, st: Any, off: bool, compare: bool, beta: float | None,
                batch: int, n: int) -> EvalResult:
    """Preference pairs: DPO's rewards of the adapter against the base, both columns from one
    pass with the adapter on and one with it off (``rewards.py``)."""
    from .rewards import beta_of, reward_columns

    beta = beta if beta is not None else beta_of(st, pm)
    adapter_on = target is pm and not off
    with eval_mode(target):
        mine, base = reward_columns(target, es.examples, es.tokenizer, beta=beta, max_len=es.max_len, batch=batch,
                                    adapter_on=adapter_on)
    result = EvalResult(es.task, mine, n, _who(pm, target, st, off),
                        kind=f"preference pairs · DPO rewards against the base, β={beta:g}")
    if compare and adapter_on:
        result.base = base
    elif compare:
        result.notes.append("the model has no adapters switched on: only the base model to show")
    return result


def evaluate(model: Any, data: Any, *, tokenizer: Any, compare: bool = False, batch: int = EVAL_BATCH,
             max_len: int = 512, stride: int | None = None, beta: float | None = None) -> EvalResult:
    """The task's metrics on ``data`` for the model with its active adapter.

    ``data`` is anything training takes (a list, DataFrame, Dataset, file) in the task's
    shape; ``compare=True`` also evaluates the base model (adapters off for the call).
    ``.metrics`` uses the names ``loss``, ``perplexity``, ``accuracy``, ``f1``,
    ``precision``, ``recall``, ``exact_match``, ``rougeL`` (fractions in 0..1). On
    preference data (prompt + chosen + rejected) they are DPO's reward readouts with
    ``beta`` (default: the adapter's last preference run's, else 0.1): ``accuracy``,
    ``margin``, ``chosen``, ``rejected``, ``likelihood_accuracy`` (``rewards.py``).
    """
    stack.ensure()
    require_model(model)
    if tokenizer is None:
        raise PeftMagicError("evaluation needs the model's tokenizer", "pass tokenizer=… (--tokenizer VAR)")
    t0 = time.perf_counter()
    task = infer_task(model) or "CAUSAL_LM"
    family(task)
    records, fp = data_mod.to_records(data, "validation")
    if not records:
        raise PeftMagicError("the evaluation data is empty")
    es = build_eval_set(records, fp, tokenizer, task, max_len=max_len,
                        label_names=label_names(model) if task in ("SEQ_CLS", "TOKEN_CLS") else None,
                        stride=stride)
    pm = peft_model_for(model)
    st = state_for(model, create=True)
    target = pm if pm is not None and peft_view.configs(pm) else unwrap(model)
    off = st.adapters_off
    if isinstance(es.examples, PreferenceExamples):
        result = _preference(target, es, pm, st, off, compare, beta, batch, len(records))
    else:
        result = EvalResult(task, task_metrics(target, es, batch=batch), len(records), _who(pm, target, st, off))
    if compare and result.base is None and result.kind is None:
        if target is pm and not off:
            set_off(pm, st)
            try:
                result.base = task_metrics(target, es, batch=batch)
            finally:
                set_on(pm, st)
        else:
            result.notes.append("the model has no adapters switched on: only the base model to show")
    result.seconds = time.perf_counter() - t0
    return result
