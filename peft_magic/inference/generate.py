"""Generate text with the active adapter, or with the base model and each adapter side by side.

Why not just ``model.generate``: peft's generation is wrong for prompt-based adapters
with the KV cache on (measured here, peft 0.21 / transformers 5.2x):

* prefix tuning: ``generate()`` ignores the prefix entirely and returns the *base
  model's* tokens — the trained adapter looks useless;
* prompt tuning / p-tuning: the first token is right, then the generation drifts from
  what the model computes on the full sequence.

So for prompt-learning adapters this module runs its own decoding loop: one forward
pass of the ``PeftModel`` over the prompt (which injects the prefix into the cache, or
the virtual tokens into the embeddings, exactly as in training) with the cache on, then
one base-model step per new token on that cache. That is what a cache-free decode over
the full sequence computes, token for token, at the cost of a normal cached decode.
Other methods (LoRA, IA3, …) use transformers' ``generate`` unchanged.

Comparison runs every column with the same prompt, settings and seed; the base model is
the adapter model under ``disable_adapter()`` (no second copy in memory).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any

from .. import peft_view, stack
from ..adapter_ops.find import method_name
from ..adapter_ops.switch import set_off, set_on
from ..errors import PeftMagicError, did_you_mean, first_line
from ..memory import device_of
from ..model.properties import require_model
from ..rendering import HtmlRepr
from ..state import peft_model_for, state_for, unwrap
from .running import eval_mode

#: generation settings our own loop (prompt-learning adapters) implements
_LOOP_KEYS = {"max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
              "eos_token_id", "pad_token_id", "min_new_tokens"}


@dataclass
class Generation:
    """One column: who generated (base model or an adapter) and what."""

    label: str
    adapter: str | None
    method: str | None
    text: str
    token_ids: list[int]
    seconds: float

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class GenerationResult(HtmlRepr):
    """Generations for one prompt: one column, or base + each adapter with ``compare``."""

    prompt: str
    chat: bool
    seed: int
    settings: dict[str, Any]
    outputs: list[Generation]
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The (first) generation's text."""
        return self.outputs[0].text if self.outputs else ""

    def __getitem__(self, label: str) -> Generation:
        for o in self.outputs:
            if o.label == label or o.adapter == label:
                return o
        raise KeyError(label)

    def __repr__(self) -> str:
        if len(self.outputs) == 1:
            return self.outputs[0].text
        blocks = []
        for o in self.outputs:
            blocks.append(f"── {o.label} " + "─" * max(4, 40 - len(o.label)) + f"\n{o.text}")
        return "\n".join(blocks + [f"note: {n}" for n in self.notes])


# ----------------------------------------------------------------------------- helpers


def _gen_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Validate generation settings against transformers' GenerationConfig (one-line errors)."""
    from transformers import GenerationConfig

    known = set(GenerationConfig().to_dict()) | {"max_new_tokens", "min_new_tokens"}
    out = dict(settings)
    for k in out:
        if k not in known:
            hint = did_you_mean(k, known)
            raise PeftMagicError(f"unknown generation setting '{k}'" + (f": {hint}" if hint else ""),
                                 "e.g. max_new_tokens=40 temperature=0.7 top_p=0.9")
    out.setdefault("max_new_tokens", 48)
    try:
        if int(out["max_new_tokens"]) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise PeftMagicError(f"max_new_tokens must be a positive number, got {out['max_new_tokens']!r}") from None
    if "temperature" in out and "do_sample" not in out:
        out["do_sample"] = float(out["temperature"]) > 0
    if out.get("do_sample") is False:
        for k in ("temperature", "top_k", "top_p"):
            out.pop(k, None)
    out.setdefault("do_sample", False)
    return out


def _encode(tokenizer: Any, prompt: str, chat: bool | None) -> tuple[Any, bool]:
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        if not getattr(tokenizer, "chat_template", None):
            raise PeftMagicError("this tokenizer has no chat template", "drop --chat (the prompt is used as is)")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    if enc["input_ids"].shape[1] == 0:
        raise PeftMagicError("the prompt is empty after tokenization", "give some text to continue")
    return enc, use_chat


@contextlib.contextmanager
def _keep_active(pm: Any):
    """Restore the active adapter and every ``requires_grad`` flag (set_adapter changes them)."""
    before = pm.active_adapter
    grads = {n: p.requires_grad for n, p in pm.named_parameters()}
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            cfg = pm.peft_config[before] if isinstance(before, str) else None
            pm.set_adapter(before, inference_mode=bool(getattr(cfg, "inference_mode", False)))
        for n, p in pm.named_parameters():
            if n in grads and p.requires_grad != grads[n]:
                p.requires_grad_(grads[n])


def _processors(gen: dict[str, Any]) -> Any:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if gen.get("repetition_penalty") not in (None, 1.0):
        procs.append(RepetitionPenaltyLogitsProcessor(float(gen["repetition_penalty"])))
    if gen.get("do_sample"):
        if gen.get("temperature") not in (None, 1.0):
            procs.append(TemperatureLogitsWarper(float(gen["temperature"])))
        if gen.get("top_k"):
            procs.append(TopKLogitsWarper(int(gen["top_k"])))
        if gen.get("top_p") not in (None, 1.0):
            procs.append(TopPLogitsWarper(float(gen["top_p"])))
    return procs


def _eos_ids(model: Any, tokenizer: Any, gen: dict[str, Any]) -> set[int]:
    eos = gen.get("eos_token_id")
    if eos is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def prompt_learning_decode(pm: Any, input_ids: Any, attention_mask: Any, gen: dict[str, Any],
                           eos: set[int]) -> Any:
    """Decode with a prompt-learning adapter correctly, with the KV cache (see module doc).

    One ``PeftModel`` forward over the prompt puts the virtual tokens (prefix key/values,
    or prompt embeddings) into the cache; each further step runs the base model on the
    new token with that cache. Returns the new token ids, shape ``(batch, n)``.
    """
    import torch

    unsupported = sorted(k for k in gen if k not in _LOOP_KEYS and gen[k] not in (None, False, 1))
    if unsupported:
        raise PeftMagicError(f"{', '.join(unsupported)} is not supported with prompt-based adapters",
                             "use max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty")
    base = pm.get_base_model()
    # transformers 5.2x renamed the forward argument past_key_values → cache (the old name warns)
    cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    procs = _processors(gen)
    max_new = int(gen.get("max_new_tokens", 48))
    min_new = int(gen.get("min_new_tokens", 0) or 0)
    seq = input_ids
    new: list[Any] = []
    with torch.no_grad():
        out = pm(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        past = _cache_of(out)
        logits = out.logits[:, -1, :].float()
        for step in range(max_new):
            scores = procs(seq, logits)
            if step < min_new and eos:
                scores[:, list(eos)] = -float("inf")
            if gen.get("do_sample"):
                probs = torch.softmax(scores, dim=-1)
                nxt = torch.multinomial(probs, 1)
            else:
                nxt = scores.argmax(-1, keepdim=True)
            new.append(nxt)
            seq = torch.cat([seq, nxt], dim=1)
            if eos and all(int(t) in eos for t in nxt[:, 0]):
                break
            if step == max_new - 1:
                break
            past_len = past.get_seq_length() if hasattr(past, "get_seq_length") else past[0][0].shape[-2]
            mask = torch.ones(seq.shape[0], past_len + 1, dtype=attention_mask.dtype, device=seq.device)
            out = base(input_ids=nxt, attention_mask=mask, use_cache=True, **{cache_kw: past})
            past = _cache_of(out)
            logits = out.logits[:, -1, :].float()
    return torch.cat(new, dim=1) if new else input_ids[:, :0]


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "past_key_values", None)
    return cache if cache is not None else getattr(out, "cache", None)


def _one(model: Any, pm: Any, enc: Any, gen: dict[str, Any], tokenizer: Any, seed: int, *, base: bool) -> Any:
    """New token ids for one column (``base``: adapters disabled)."""
    import torch

    ids = enc["input_ids"]
    mask = enc.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    torch.manual_seed(seed)
    kwargs = dict(gen)
    if kwargs.get("pad_token_id") is None:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        kwargs["pad_token_id"] = pad
    if pm is None:
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1]:]
    st = state_for(pm)
    disabled = bool(st is not None and getattr(st, "adapters_off", False))
    if base or disabled:
        # already off (%peft off): peft's disable_adapter() would switch them back on at its end
        ctx = contextlib.nullcontext() if disabled else pm.disable_adapter()
        with ctx, torch.no_grad():
            return pm.get_base_model().generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1]:] \
                if peft_view.is_prompt_learning(pm.active_peft_config) else \
                pm.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1]:]
    if peft_view.is_prompt_learning(pm.active_peft_config):
        return prompt_learning_decode(pm, ids, mask, kwargs, _eos_ids(pm, tokenizer, kwargs))
    with torch.no_grad():
        return pm.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1]:]


def generate(model: Any, prompt: str, *, tokenizer: Any = None, compare: bool = False,
             adapters: list[str] | None = None, seed: int = 0, chat: bool | None = None,
             **settings: Any) -> GenerationResult:
    """Generate a continuation of ``prompt`` with the active adapter.

    ``compare=True`` generates with the base model and with each adapter (or those in
    ``adapters``), same prompt, settings and seed, for a side-by-side view. Instruct
    models get the chat template (``chat=False`` sends the prompt as is). ``settings``
    are generation settings: ``max_new_tokens`` (default 48), ``temperature``, ``top_p``,
    ``top_k``, ``do_sample``, ``repetition_penalty``, … Greedy unless sampling is asked for.
    """
    stack.ensure()
    require_model(model)
    if tokenizer is None:
        raise PeftMagicError("generation needs the model's tokenizer",
                             "%peft load puts it in `tokenizer`; or pass tokenizer=… (--tokenizer VAR)")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PeftMagicError("what should the model continue? the prompt is empty",
                             'e.g. %peft generate "Tell me a joke"')
    gen = _gen_settings(settings)
    st = state_for(model, create=True)
    pm = peft_model_for(model)
    if pm is not None and not getattr(pm, "peft_config", None):
        pm = None
    target = pm if pm is not None else unwrap(model)
    if not hasattr(target, "generate"):
        raise PeftMagicError(f"{type(unwrap(model)).__name__} cannot generate text",
                             "load a causal language model (e.g. %peft load smollm2)")
    enc, used_chat = _encode(tokenizer, prompt, chat)
    dev = device_of(target)
    enc = {k: v.to(dev) for k, v in enc.items()}
    disabled = bool(getattr(st, "adapters_off", False))
    columns, notes = _columns(pm, st, compare, adapters, disabled)
    outputs: list[Generation] = []
    # quiet: peft passes the cache under its deprecated name, prompt methods warn about position ids
    keep = _keep_active(pm) if pm is not None else contextlib.nullcontext()
    with stack.quiet(streams=False), eval_mode(target), keep:
        if disabled and compare and pm is not None:
            set_on(pm, st)
            try:
                outputs = _run_columns(target, pm, columns, enc, gen, tokenizer, seed)
            finally:
                set_off(pm, st)
        else:
            outputs = _run_columns(target, pm, columns, enc, gen, tokenizer, seed)
    return GenerationResult(prompt=prompt, chat=used_chat, seed=seed,
                            settings={k: v for k, v in settings.items()}, outputs=outputs, notes=notes)


def _columns(pm: Any, st: Any, compare: bool, adapters: list[str] | None,
             disabled: bool) -> tuple[list[tuple[str, str | None, str | None, bool]], list[str]]:
    """Who generates: (label, adapter, method, is the base model) per column, and notes."""
    notes: list[str] = []
    if pm is None:
        return [("base model", None, None, True)], (["the model has no adapters: only the base model to show"]
                                                     if compare else [])
    if not compare:
        if disabled:
            return [("base model (adapters off)", None, None, True)], notes
        act = pm.active_adapter
        meth = method_name(pm.peft_config[act], st, act)
        return [(f"{act} ({meth})", act, meth, False)], notes
    columns: list[tuple[str, str | None, str | None, bool]] = [("base model", None, None, True)]
    for n in adapters or list(pm.peft_config):
        if n not in pm.peft_config:
            hint = did_you_mean(n, pm.peft_config)
            raise PeftMagicError(f"no adapter '{n}' on this model" + (f": {hint}" if hint else ""))
        meth = method_name(pm.peft_config[n], st, n)
        columns.append((f"{n} ({meth})", n, meth, False))
    return columns, notes


def _run_columns(target: Any, pm: Any, columns: list[tuple[str, str | None, str | None, bool]], enc: Any,
                 gen: dict[str, Any], tokenizer: Any, seed: int) -> list[Generation]:
    outputs = []
    for label, name, meth, is_base in columns:
        if pm is not None and name is not None and pm.active_adapter != name:
            pm.set_adapter(name, inference_mode=True)
        t0 = time.perf_counter()
        try:
            new = _one(target, pm, enc, gen, tokenizer, seed, base=is_base)
        except PeftMagicError:
            raise
        except Exception as e:
            raise PeftMagicError(f"generation with {label} failed: {first_line(e)}") from None
        ids = [int(t) for t in new[0].tolist()]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        outputs.append(Generation(label, name, meth, text, ids, time.perf_counter() - t0))
    return outputs
