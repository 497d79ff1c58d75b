"""Task names as users type them → peft's ``TaskType`` values.

Why a table of our own: people write ``seq-cls``, ``classification``, ``ner`` or ``qa``;
peft wants ``SEQ_CLS``, ``TOKEN_CLS``, ``QUESTION_ANS``. A leaf module (no peft import),
because loading, attaching and planning all normalise tasks before peft is needed.
"""

from __future__ import annotations

from ..errors import PeftMagicError, did_you_mean

#: task spelling accepted from users → peft TaskType value
TASK_ALIASES: dict[str, str] = {
    "causal_lm": "CAUSAL_LM", "causal": "CAUSAL_LM", "clm": "CAUSAL_LM", "lm": "CAUSAL_LM",
    "text_generation": "CAUSAL_LM",
    "seq_cls": "SEQ_CLS", "classification": "SEQ_CLS", "sequence_classification": "SEQ_CLS", "cls": "SEQ_CLS",
    "seq2seq": "SEQ_2_SEQ_LM", "seq_2_seq_lm": "SEQ_2_SEQ_LM", "seq2seq_lm": "SEQ_2_SEQ_LM",
    "token_cls": "TOKEN_CLS", "token_classification": "TOKEN_CLS", "ner": "TOKEN_CLS",
    "question_ans": "QUESTION_ANS", "qa": "QUESTION_ANS", "question_answering": "QUESTION_ANS",
    "feature_extraction": "FEATURE_EXTRACTION", "features": "FEATURE_EXTRACTION", "embedding": "FEATURE_EXTRACTION",
}


def normalize_task(task: str | None) -> str | None:
    """``"seq-cls"`` / ``"SEQ_CLS"`` / ``"classification"`` → ``"SEQ_CLS"``; ``None`` stays."""
    if task is None:
        return None
    key = str(task).strip().lower().replace("-", "_").replace(" ", "_")
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    if key.upper() in set(TASK_ALIASES.values()):
        return key.upper()
    hint = did_you_mean(key, TASK_ALIASES)
    raise PeftMagicError(f"unknown task '{task}'",
                         "use one of causal-lm, seq-cls, seq2seq, token-cls, qa, feature-extraction "
                         + (f"({hint})" if hint else ""))
