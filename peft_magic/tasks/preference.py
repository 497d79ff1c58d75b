"""Preference data, the causal-LM family's fourth shape: what was preferred, not what to copy.

============  ================================================  ===========================
shape         columns                                           objectives
============  ================================================  ===========================
paired        ``prompt`` + ``chosen`` + ``rejected`` (text, or   dpo (default), ipo, orpo,
              lists of chat messages; without ``prompt`` the    simpo, kto
              shared first turns of a chat are the prompt)
unpaired      ``prompt`` + ``completion`` + ``label``           kto (default)
              (true: desirable, false: not)
============  ================================================  ===========================

The pure pieces live here: recognising the shape, checking every row (one line naming
the row that is wrong), putting plain text into the model's chat template when it has
one (as prompt → completion training does, so an SFT adapter and the DPO run on top of it
see the same format), and the token ids of each row exactly as TRL's trainers make them
(``tests/test_preference.py`` checks ours against TRL's own tokenized dataset). The
trainer itself is TRL's (``training/preference.py``); what each objective is, for
planning and display, is :data:`OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError

SHAPES = "prompt+chosen+rejected (preference pairs) | prompt+completion+label (kto)"
PAIRED, UNPAIRED = "paired", "unpaired"
_ANSWER_IDS = ("chosen_ids", "rejected_ids", "completion_ids")
_TRUE = {"true", "1", "yes", "y", "good", "desirable", "chosen"}
_FALSE = {"false", "0", "no", "n", "bad", "undesirable", "rejected"}


@dataclass(frozen=True)
class Objective:
    """What one preference objective is, as planning and the display need to know it."""

    name: str
    title: str
    shapes: tuple[str, ...]  # the data shapes it trains on (KTO unpairs pairs)
    reference: bool  # compares with a reference policy: the base, the adapter switched off
    sequences: int  # sequences per example in the forward that keeps activations
    no_grad_passes: str  # what runs besides, without gradients (planning's note); "" for nothing
    beta: float = 0.1  # the default β: TRL's, except SimPO's (its reward is β × the *mean* token
    # log-probability, and its paper trains with β 2–2.5; TRL's CPOConfig default 0.1 is DPO's)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in [
    Objective("dpo", "DPO", (PAIRED,), True, 2, "the reference policy (adapter off) on the same pairs"),
    Objective("ipo", "IPO", (PAIRED,), True, 2, "the reference policy (adapter off) on the same pairs"),
    Objective("orpo", "ORPO", (PAIRED,), False, 2, ""),
    Objective("simpo", "SimPO", (PAIRED,), False, 2, "", beta=2.0),
    Objective("kto", "KTO", (UNPAIRED, PAIRED), True, 1,
              "the KL estimate (mismatched completions) and the reference policy (adapter off) on both"),
]}
DEFAULT_OBJECTIVE = {PAIRED: "dpo", UNPAIRED: "kto"}


def objective_info(name: str) -> Objective:
    """The objective called ``name`` (case-insensitive); one line with the choices otherwise."""
    from ..errors import did_you_mean

    key = str(name).strip().lower()
    if key not in OBJECTIVES:
        hint = did_you_mean(key, list(OBJECTIVES))
        raise PeftMagicError(f"unknown objective '{name}'" + (f": {hint}" if hint else ""),
                             "objective= one of " + ", ".join(OBJECTIVES))
    return OBJECTIVES[key]


# ----------------------------------------------------------------------------- the shape


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "role" in m for m in value)


def detect_preference(records: Sequence[Any]) -> str | None:
    """``"paired"``, ``"unpaired"`` or None, from the first record's columns.

    A first row with ``chosen`` or ``rejected`` is taken as paired data (a later check says
    which row lacks the other); ``prompt`` + ``completion`` + ``label`` is unpaired (without
    ``label`` it is ordinary prompt → completion data).
    """
    first = records[0] if records else None
    if not isinstance(first, Mapping):
        return None
    keys = set(first)
    if keys & {"chosen", "rejected"}:
        return PAIRED
    if {"prompt", "completion", "label"} <= keys:
        return UNPAIRED
    return None


def _label(value: Any, i: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise PeftMagicError(f"row {i} of the preference data: label must be true or false (desirable or not), "
                         f"got {value!r}")


_NEEDS = {PAIRED: "every row needs prompt, chosen and rejected",
          UNPAIRED: "every row needs prompt, completion and label"}


def _answer_keys(row: Mapping[str, Any]) -> list[str]:
    return [k for k in ("chosen", "rejected", "completion") if k in row]


def _text_or_messages(row: Mapping[str, Any], key: str, i: int, conversational: bool, shape: str) -> Any:
    """One field of a row, checked: present, in the first row's form, an answer not empty."""
    value = row.get(key)
    if value is None:
        raise PeftMagicError(f"row {i} of the preference data has no '{key}'", _NEEDS[shape])
    if hasattr(value, "tolist") and not isinstance(value, str):  # a numpy array from a DataFrame cell
        value = value.tolist()
    if conversational:
        if not _is_messages(value):
            raise PeftMagicError(f"row {i} of the preference data: '{key}' is not a list of chat messages like "
                                 "the first row's", "give every row in the same form (text, or messages)")
        if key != "prompt" and not any(str(m.get("content") or "").strip() for m in value):
            raise PeftMagicError(f"row {i} of the preference data: '{key}' is empty", "drop the row or fill it in")
        return [dict(m) for m in value]
    if not isinstance(value, str):
        raise PeftMagicError(f"row {i} of the preference data: '{key}' is a {type(value).__name__}, not text like "
                             "the first row's", "give every row in the same form (text, or messages)")
    if key != "prompt" and not value.strip():
        raise PeftMagicError(f"row {i} of the preference data: '{key}' is empty", "drop the row or fill it in")
    return value


def check_rows(records: Sequence[Any], shape: str) -> tuple[list[dict[str, Any]], bool]:
    """Every row checked and in TRL's standard form (``prompt`` / ``chosen`` / ``rejected``, or
    ``prompt`` / ``completion`` / ``label``); and whether they are chat messages.

    Errors name the row: ``row 3 of the preference data has no 'rejected'``.
    """
    answers = ("chosen", "rejected") if shape == PAIRED else ("completion",)
    first = records[0] if isinstance(records[0], Mapping) else {}
    conversational = _is_messages(first.get(answers[0]))
    out: list[dict[str, Any]] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise PeftMagicError(f"row {i} of the preference data is a {type(r).__name__}, not a dict")
        if shape == PAIRED and conversational and "prompt" not in r:
            row = _implicit_prompt(r, i)
        else:
            row = {"prompt": _text_or_messages(r, "prompt", i, conversational and _is_messages(r.get("prompt")),
                                               shape)}
            if conversational and not isinstance(row["prompt"], list):
                raise PeftMagicError(f"row {i} of the preference data: the prompt is text but the answers are "
                                     "chat messages", "give the prompt as messages too, or leave it out")
            for key in answers:
                row[key] = _text_or_messages(r, key, i, conversational, shape)
        if shape == UNPAIRED:
            if r.get("label") is None:
                raise PeftMagicError(f"row {i} of the preference data has no 'label'", _NEEDS[shape])
            row["label"] = _label(r["label"], i)
        out.append(row)
    return out, conversational


def _implicit_prompt(r: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Chat pairs without a ``prompt``: the turns both share are the prompt (TRL's ``extract_prompt``)."""
    from trl.data_utils import extract_prompt

    chosen = _text_or_messages(r, "chosen", i, True, PAIRED)
    rejected = _text_or_messages(r, "rejected", i, True, PAIRED)
    split = extract_prompt({"chosen": chosen, "rejected": rejected})
    if not split["prompt"]:
        raise PeftMagicError(f"row {i} of the preference data has no prompt: chosen and rejected share no first "
                             "turn", "add a prompt column")
    if not split["chosen"] or not split["rejected"]:
        raise PeftMagicError(f"row {i} of the preference data: chosen and rejected are the same conversation")
    return split


def as_chat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain-text rows as one user turn and one assistant turn — how prompt → completion
    data is rendered for a model with a chat template (``causal_lm.tokenize_causal``)."""
    out = []
    for r in rows:
        row = {"prompt": [{"role": "user", "content": r["prompt"]}]}
        for key in ("chosen", "rejected", "completion"):
            if key in r:
                row[key] = [{"role": "assistant", "content": r[key]}]
        if "label" in r:
            row["label"] = r["label"]
        out.append(row)
    return out


def spaced(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain text without a chat template: a space between prompt and answer, as prompt →
    completion training puts there (TRL joins the two strings as they are)."""
    out = []
    for r in rows:
        row = dict(r)
        for key in ("chosen", "rejected", "completion"):
            text = row.get(key)
            if isinstance(text, str) and text and not text[0].isspace() and row["prompt"] and \
                    not row["prompt"][-1].isspace():
                row[key] = " " + text
        out.append(row)
    return out


# ----------------------------------------------------------------------------- token ids


def _ids(tokenizer: Any, value: Any, **template: Any) -> list[int]:
    """Token ids the way TRL's trainers make them: the chat template for messages (dict
    output), the tokenizer's own call (special tokens included) for text."""
    if isinstance(value, list):
        out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **template)
        return list(out["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def token_row(tokenizer: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``prompt_ids`` and the completion ids (``chosen_ids`` / ``rejected_ids``, or
    ``completion_ids``) of one standard row, as TRL's DPO and KTO trainers tokenize it: text
    answers get the EOS token appended, and the completion starts where the tokenized prompt
    and prompt + answer stop agreeing."""
    keys = _answer_keys(row)
    chat = isinstance(row["prompt"], list)
    eos = getattr(tokenizer, "eos_token", None) or ""
    prompt_ids = _ids(tokenizer, row["prompt"], add_generation_prompt=True) if chat else _ids(tokenizer, row["prompt"])
    full = {}
    for k in keys:
        answer = row[k]
        if not chat and eos and not answer.endswith(eos):
            answer = answer + eos
        full[k] = _ids(tokenizer, row["prompt"] + answer)
    start = min(_common_prefix(prompt_ids, ids) for ids in full.values())
    out: dict[str, Any] = {"prompt_ids": prompt_ids[:start]}
    for k in keys:
        out[f"{k}_ids"] = full[k][start:]
    if "label" in row:
        out["label"] = row["label"]
    return out


@dataclass
class PreferenceExamples:
    """Preference data ready for TRL's trainer, with what the display and planning need.

    ``records`` are the rows in TRL's standard form (what its trainer tokenizes itself);
    ``rows`` their token ids as that trainer makes them (for the fit check, ``%peft evaluate``
    and the tests). Behaves like :class:`~peft_magic.tasks.common.Examples` where the
    training run reads it (``len``, ``shape``, ``n_raw``, ``longest``, …).
    """

    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    shape: str  # "paired" | "unpaired"
    n_raw: int
    conversational: bool
    max_len: int = 512  # longer sequences are cut to this (TRL's max_length)
    label_names: list[str] | None = None
    truncated: int = 0  # rows whose prompt + answer is longer than max_len (cut from the end)
    skipped: int = 0
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def __iter__(self):
        return iter(self.rows)

    @property
    def sequences_per_row(self) -> int:
        """A pair is two sequences in every batch (chosen and rejected); KTO's row is one."""
        return 2 if self.shape == PAIRED else 1

    @property
    def longest(self) -> int:
        """The longest sequence (prompt + answer) in tokens."""
        return max((len(r["prompt_ids"]) + len(r[k]) for r in self.rows for k in _ANSWER_IDS if k in r), default=1)

    @property
    def real_tokens(self) -> int:
        """Tokens over every sequence a batch holds (a pair's prompt is in both of its sequences)."""
        return sum(len(r["prompt_ids"]) + len(r[k]) for r in self.rows for k in _ANSWER_IDS if k in r)


def tokenize_preference(records: Sequence[Any], tokenizer: Any, *, max_len: int = 512,
                        shape: str | None = None) -> PreferenceExamples:
    """Records of preference data → checked standard rows and their token ids.

    A prompt that fills ``max_len`` by itself is refused with the row's number (TRL would
    drop the row silently: nothing of its answers would be left to learn from); answers
    that run past ``max_len`` are cut, and counted.
    """
    shape = shape or detect_preference(records)
    if shape is None:
        raise PeftMagicError("this is not preference data", f"accepted: {SHAPES}")
    rows, conversational = check_rows(records, shape)
    if not conversational and getattr(tokenizer, "chat_template", None):
        rows, conversational = as_chat(rows), True
    elif not conversational:
        rows = spaced(rows)
    elif not getattr(tokenizer, "chat_template", None):
        raise PeftMagicError("chat-message preference data needs a tokenizer with a chat template, and this one "
                             "has none", "set tokenizer.chat_template, or give prompt/chosen/rejected as text")
    ids, truncated = [], 0
    for i, row in enumerate(rows):
        t = token_row(tokenizer, row)
        if len(t["prompt_ids"]) >= max_len:
            raise PeftMagicError(f"row {i} of the preference data: the prompt is {len(t['prompt_ids'])} tokens, "
                                 f"max_len is {max_len} — nothing of the answers would be left",
                                 "raise max_len= or shorten the prompt")
        if any(len(t["prompt_ids"]) + len(t[k]) > max_len for k in _ANSWER_IDS if k in t):
            truncated += 1
        ids.append(t)
    cols = list(records[0].keys()) if isinstance(records[0], Mapping) else []
    return PreferenceExamples(rows, ids, shape, len(records), conversational, max_len, None, truncated, 0, cols)
