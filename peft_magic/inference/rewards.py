"""``%peft evaluate`` on preference data: DPO's implicit rewards, the adapter against the base.

DPO defines the reward of an answer as β × (log π(answer | prompt) − log π_ref(answer | prompt)),
the log-probabilities summed over the answer's tokens; the reference π_ref here is what
preference training uses (``training/preference.py``): the same model with its adapters
switched off. From the rewards of held-out pairs:

* ``accuracy`` — how often the chosen answer's reward is above the rejected one's (TRL's
  ``rewards/accuracies``), and ``margin`` — their mean difference (``rewards/margins``);
  ``chosen`` / ``rejected`` — the mean rewards. The base model is its own reference, so its
  rewards are 0 by definition (accuracy 0, margin 0: where every adapter starts).
* ``likelihood_accuracy`` — how often the model gives the chosen answer the higher mean
  log-probability per token; it needs no reference, so it compares base and adapter directly.

For unpaired data (KTO's) ``chosen`` / ``rejected`` are the mean rewards of the desirable and
undesirable completions, ``margin`` their difference.

The per-token log-probabilities are TRL's ``selective_log_softmax`` over the model's logits,
on sequences padded with TRL's ``pad`` — the functions its trainers use; the token ids are
those TRL's trainers make (``tasks/preference.py``). The model makes logits only from the
first answer token of a batch on (``logits_to_keep``, where its forward takes it): the
prompt's positions need none, and a batch's logits are vocabulary-sized per position
(SmolLM2: 8 sequences of 512 tokens are 805 MB in fp32, before the float copy and the
log-softmax).
"""

from __future__ import annotations

from typing import Any

from ..memory import device_of
from ..state import unwrap
from ..tasks.families import pad_id
from ..tasks.preference import OBJECTIVES, PAIRED

#: β of DPO's reward when no preference run of the adapter says otherwise (TRL's default)
DEFAULT_BETA = OBJECTIVES["dpo"].beta


def beta_of(st: Any, peft_model: Any) -> float:
    """β of the active adapter's last DPO or KTO run in this kernel (whose reward is this
    one), else TRL's default. (IPO's β is its τ, ORPO's and SimPO's weigh other terms.)"""
    from ..state import runs

    name = getattr(peft_model, "active_adapter", None)
    for run in reversed(runs()):
        if st is not None and run.model_id == st.model_id and run.adapter == name and run.objective:
            beta = run.settings.get("beta") if run.objective in ("dpo", "kto") else None
            return float(beta) if beta is not None else DEFAULT_BETA
    return DEFAULT_BETA


def completion_logps(model: Any, seqs: list[tuple[list[int], list[int]]], *, pad: int, max_len: int,
                     batch: int) -> list[tuple[float, int]]:
    """(summed log-probability of each completion given its prompt, its token count), the
    sequences cut to ``max_len`` as training cuts them."""
    import torch
    from trl.trainer.utils import pad as pad_to, selective_log_softmax

    device = device_of(model)
    takes_keep = _takes_logits_to_keep(model)
    out: list[tuple[float, int]] = []
    for lo in range(0, len(seqs), batch):
        chunk = seqs[lo:lo + batch]
        ids = [torch.tensor((p + c)[:max_len], dtype=torch.long) for p, c in chunk]
        marks = [torch.tensor(([0] * len(p) + [1] * len(c))[:max_len], dtype=torch.long) for p, c in chunk]
        input_ids = pad_to(ids, padding_value=pad, padding_side="right").to(device)
        attention = pad_to([torch.ones_like(x) for x in ids], padding_value=0, padding_side="right").to(device)
        completion = pad_to(marks, padding_value=0, padding_side="right")[:, 1:].to(device)
        length = input_ids.shape[1]
        first = max(1, min(min(len(p) for p, _ in chunk), length - 1))  # the batch's first answer token
        keep = {"logits_to_keep": length - first + 1} if takes_keep else {}
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention, **keep).logits
        # positions first-1 … length-2 predict tokens first … length-1; prompt methods put virtual
        # tokens first, so the real positions are the last ones
        logits = logits[:, -(length - first + 1):-1]
        per_token = selective_log_softmax(logits.float(), input_ids[:, first:]) * completion[:, first - 1:]
        out += list(zip(per_token.sum(1).tolist(), completion.sum(1).tolist()))
    return out


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward (under a peft wrapper, the base model's) has ``logits_to_keep``."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _sequences(rows: list[dict[str, Any]]) -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    """Every (prompt, answer) of the rows, and which answer each is (chosen / rejected / the label)."""
    seqs, kinds = [], []
    for r in rows:
        for key in ("chosen_ids", "rejected_ids", "completion_ids"):
            if key in r:
                seqs.append((r["prompt_ids"], r[key]))
                kinds.append(key[:-4] if key != "completion_ids" else ("chosen" if r["label"] else "rejected"))
    return seqs, kinds


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _readouts(policy: list[tuple[float, int]], reference: list[tuple[float, int]], kinds: list[str],
              beta: float, paired: bool) -> dict[str, float]:
    rewards = [beta * (p - r) for (p, _), (r, _) in zip(policy, reference)]
    per_token = [lp / max(n, 1) for lp, n in policy]
    out = {"chosen": _mean([x for x, k in zip(rewards, kinds) if k == "chosen"]),
           "rejected": _mean([x for x, k in zip(rewards, kinds) if k == "rejected"])}
    out["margin"] = out["chosen"] - out["rejected"]
    if paired:  # rows are chosen, rejected, chosen, rejected, …
        pairs = list(zip(rewards[0::2], rewards[1::2]))
        out["margin"] = _mean([c - r for c, r in pairs])
        out["accuracy"] = _mean([float(c > r) for c, r in pairs])
        out["likelihood_accuracy"] = _mean([float(c > r) for c, r in zip(per_token[0::2], per_token[1::2])])
    return out


def reward_columns(model: Any, examples: Any, tokenizer: Any, *, beta: float, max_len: int, batch: int,
                   adapter_on: bool) -> tuple[dict[str, float], dict[str, float]]:
    """The reward readouts of ``model`` as it is (``adapter_on``: its adapter, else the base)
    and of the base model, from one pass with the adapter and one without."""
    seqs, kinds = _sequences(examples.rows)
    pad = pad_id(tokenizer)
    policy = completion_logps(model, seqs, pad=pad, max_len=max_len, batch=batch)
    reference = policy
    if adapter_on:
        with model.disable_adapter():
            reference = completion_logps(model, seqs, pad=pad, max_len=max_len, batch=batch)
    paired = examples.shape == PAIRED
    return (_readouts(policy, reference, kinds, beta, paired),
            _readouts(reference, reference, kinds, beta, paired))  # the base is its own reference
