"""Task commands: ``%peft evaluate`` (the task's metrics) and ``%peft predict`` (its answers)."""

from __future__ import annotations

from typing import Any

from .. import notebook
from ..errors import PeftMagicError
from .registry import Context, command

_EVAL_KEYS = ("batch", "max_len", "stride")
_PREDICT_KEYS = ("batch", "max_len", "max_new_tokens")


def _ints(ctx: Context, keys: tuple[str, ...], what: str) -> dict[str, int]:
    out = {}
    for k, v in ctx.settings.items():
        if k not in keys:
            raise PeftMagicError(f"unknown {what} setting '{k}'", "settings are " + ", ".join(
                f"{x}=" for x in keys + (("beta",) if what == "evaluate" else ())))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PeftMagicError(f"{k} must be a whole number ≥ 1, got {v!r}")
        out[k] = v
    return out


@command("evaluate", args="data=EXPR|PATH [batch=] [max_len=] [beta=]",
         summary="the task's own metrics on held-out data; --compare: base model beside the adapter",
         flags=(("--compare", "also evaluate the base model (adapters off)"), "--model VAR", "--tokenizer VAR"),
         aliases=("eval",), group="training")
def cmd_evaluate(ctx: Context) -> Any:
    """Evaluate the model (its active adapter) on held-out data with the metrics of its task:

    ==========================  =============================================
    causal LM                   loss, perplexity
    sequence classification     loss, accuracy, macro-F1
    token classification (NER)  loss, entity precision / recall / F1 (seqeval), token accuracy
    extractive QA               loss, exact match, F1 (official SQuAD normalisation)
    seq2seq                     loss, exact match, ROUGE-L (greedy generation)
    preference pairs            accuracy and margin of DPO's rewards (chosen vs
                                rejected), mean rewards, likelihood accuracy
    ==========================  =============================================

    On preference data (``prompt`` + ``chosen`` + ``rejected``) the reward of an answer is
    DPO's: β × (log-probability with the adapter − with the adapter off), summed over the
    answer's tokens; ``beta=`` (default: the adapter's last DPO run's, else 0.1). The base
    model is its own reference (rewards 0); ``likelihood_accuracy`` — how often the chosen
    answer has the higher mean token log-probability — compares the two directly.

    ``data`` is a notebook variable or a file, in the shape training takes for the task.
    ``--compare`` adds the base model (the same model with adapters switched off for the
    call) beside it. Returns an ``EvalResult``; ``.metrics`` is a dict.

    Examples::

        %peft evaluate data=dev
        %peft evaluate data=dev.jsonl --compare
    """
    from ..inference.evaluate import evaluate

    settings = dict(ctx.settings)
    if "data" not in settings:
        raise PeftMagicError("which data?", "e.g. %peft evaluate data=dev")
    ctx.settings = settings
    data = ctx.value("data")
    beta = settings.pop("beta", None)
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0):
        raise PeftMagicError(f"beta must be a number > 0, got {beta!r}")
    var, model = ctx.model()
    return evaluate(model, data, tokenizer=ctx.tokenizer(var), compare=bool(ctx.args.flag("--compare")),
                    beta=beta, **_ints(ctx, _EVAL_KEYS, "evaluate"))


@command("predict", args='"TEXT" | VAR | question="…" context="…" [max_new_tokens=]',
         summary="the task's answer: label, entities, answer span or generated text",
         flags=("--model VAR", "--tokenizer VAR"), cell="none", group="training")
def cmd_predict(ctx: Context) -> Any:
    """Predict with the model's task head and show the natural answer:

    * classification — the label and its probability;
    * token classification — the entities: text, type, character span (B-/I- tags merged);
    * extractive QA — the answer text, its span in the context and a score
      (``question="…" context="…"``);
    * seq2seq and causal LM — the generated text (greedy).

    The input is a quoted text, or a notebook variable: a string, a dict (QA), or a list
    of them (predicted in batches). Returns ``Predictions`` (``p[0]`` is the first answer).

    Examples::

        %peft predict "Alice moved to Paris last year"
        %peft predict question="What color is Anna's car?" context="Anna has a red car."
        %peft predict reviews
    """
    from ..inference.predict import predict

    settings = dict(ctx.settings)
    inputs: Any
    if "question" in settings or "context" in settings:
        if ctx.args.positionals:
            raise PeftMagicError("give either a text or question=… context=…, not both")
        inputs = {"question": str(settings.pop("question", "")), "context": str(settings.pop("context", ""))}
    elif len(ctx.args.positionals) == 1:
        inputs = notebook.input_value(ctx.ns, ctx.args.raw_positionals[0], ctx.args.positionals[0])
    elif not ctx.args.positionals:
        raise PeftMagicError("predict what?", 'e.g. %peft predict "some text", or a variable holding texts')
    else:
        raise PeftMagicError("predict takes one input", 'quote a text with spaces: %peft predict "two words"')
    ctx.settings = settings
    var, model = ctx.model()
    return predict(model, inputs, tokenizer=ctx.tokenizer(var), **_ints(ctx, _PREDICT_KEYS, "predict"))
