"""``%peft plan``: will it fit, and with which method — before loading a single weight.

Why: every notebook fine-tune starts with "will this fit on my GPU?", and people find out
by loading for minutes and hitting an out-of-memory error. Estimators that treat every
parameter as trainable and ignore activations are useless for PEFT, where activations
are usually the largest part. This package answers from the model's config alone:

* the model is built on the meta device (no weights read, no memory) in the training
  dtype, prepared as the method needs (QLoRA's 4-bit layers and k-bit preparation,
  gradient checkpointing) and the method is attached by **peft itself** — so frozen
  weights, adapter parameters, gradients and optimizer states are the tensors a real run
  creates, counted to the byte (``sketch``);
* activations come from running one forward / backward of that meta model under a
  counter of live tensor bytes (``trace``) — the installed transformers and peft code
  itself, with the attention kernel the target device would use;
* a runtime overhead (CUDA context, allocator fragmentation, optimizer-step temporaries)
  completes the total, which is checked against the device the kernel sees or a named
  GPU (``target``, ``gpus``).

This module holds the entry point :func:`plan`; ``fit.check_fit`` is the quick question
for the model as it is now, ``measure.measure`` runs real steps and compares.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .. import fused_loss as fusing
from .. import stack
from ..errors import PeftMagicError, first_line
from ..fmt import fmt_bytes
from ..model.properties import count_params
from ..settings import SETTINGS
from ..state import is_peft_model, state_for
from . import measure as measuring
from . import search, sharding
from .device import resolve_target
from .estimate import Estimator, parts_of
from .fit import check_fit, positive, resident_bytes
from .recommend import GOAL_ALIASES, GOALS, recommend
from .requests import DEFAULT_METHODS, PLAN_KEYS, Request, label_for, resolve_requests
from .results import MethodPlan, Plan, Recommendation, Target
from .sketch import layer_count, resolve_optimizer, tensor_accounting
from .subject import Subject, subject_of

__all__ = ["plan", "check_fit", "PLAN_KEYS", "DEFAULT_METHODS"]

ATTN_CHOICES = (None, "sdpa", "eager", "flash_attention_2", "flash")


def _row_notes(row: MethodPlan, req: Request, est: Estimator, step: Any, opt: Any, target: Target) -> None:
    """What a reader of the row should know about how its total was counted."""
    if step.overlap > 0.05 * row.parts.total:
        row.notes.append(f"gradients and activations peak at different moments: the real peak can be up to "
                         f"{fmt_bytes(step.overlap)} below this total (the plan adds them, to be safe)")
    if req.spec is None and target.dtype != "float32":
        row.notes.append(f"full fine-tuning keeps Adam's states in {target.dtype} here; the usual mixed-"
                         "precision recipe (fp32 master weights) needs about twice as much: dtype=fp32")
    if opt.paged:
        row.notes.append("paged optimizer states can spill to CPU RAM when the GPU runs short")
    tokens = getattr(est.peft_config, "num_virtual_tokens", None)
    if req.spec is not None and req.spec.info.is_prompt_learning and tokens:
        row.notes.append(f"the model sees seq + {tokens} virtual tokens")


def _method_row(subject: Subject, req: Request, target: Target, batch: int, seq: int, checkpointing: bool,
                attn: str | None, opt: Any, with_flip: bool, fused: bool) -> tuple[MethodPlan, Estimator | None, Any]:
    """One row of the table (with the error in it when the method cannot be estimated)."""
    label = req.method
    try:
        est = Estimator(subject, req, target, checkpointing, attn, fused)
        label = label_for(req, est.peft_config, target.dtype)
        account = est.account()
        step = est.step(batch, seq)
        parts = parts_of(account, step, opt, target, req.spec is None)
    except PeftMagicError as e:
        return MethodPlan(req.method, label, None, error=e.message), None, None
    except Exception as e:  # an architecture the meta device cannot run: say so in the row
        if SETTINGS.debug:
            raise
        return MethodPlan(req.method, label, None, error=f"cannot trace: {first_line(e)[:120]}"), None, None
    row = MethodPlan(req.method, label, parts, trainable=account.trainable_params,
                     total_params=account.total_params, checkpointing=est.checkpointing,
                     available=target.available, settings=dict(req.settings), overlap=step.overlap)
    _row_notes(row, req, est, step, opt, target)
    if with_flip and not req.quantized:
        with contextlib.suppress(Exception):
            flipped = Estimator(subject, req, target, not checkpointing, attn, est.fused)
            row.other = parts_of(account, flipped.step(batch, seq), opt, target, req.spec is None)
    return row, est, account


def _recommendation(rows: list[MethodPlan], goal: str, target: Target, estimators: dict[str, Any], opt: Any,
                    batch: int, seq: int, with_limits: bool) -> Recommendation:
    """The recommended method, with the largest batch and seq it allows and hints."""
    method, reason = recommend([r for r in rows if r.method != "current"], goal, target.available)
    rec = Recommendation(method, reason, goal=goal)
    if not (method and with_limits and target.available and method in estimators):
        return rec
    est, account = estimators[method]
    full = est.req is not None and est.req.spec is None
    with contextlib.suppress(Exception):
        rec.batch, rec.seq, rec.seq_cap = search.limits(est, account, opt, target, full, batch, seq)
        rec.checkpointing = est.checkpointing
        row = next(r for r in rows if r.method == method)
        if not row.fits and not est.checkpointing:
            rec.hints.append("gradient checkpointing (checkpointing=True / --checkpointing) cuts activations "
                             "to about one layer's worth")
        if not rec.batch and not rec.seq:
            least = parts_of(account, est.step(1, 64), opt, target, full).total
            rec.hints.append(f"even batch 1 × seq 64 needs {fmt_bytes(least)} with {method}: a GPU with more "
                             "memory, or a smaller model")
    return rec


def _check_choices(goal: str, attn: str | None) -> str:
    goal_key = GOAL_ALIASES.get(str(goal).lower(), str(goal).lower())
    if goal_key not in GOALS:
        raise PeftMagicError(f"unknown goal '{goal}'", "goal= one of " + ", ".join(GOALS))
    if attn not in ATTN_CHOICES:
        raise PeftMagicError(f"unknown attention implementation '{attn}'", "attn= sdpa, eager or flash_attention_2")
    return goal_key


def plan(model: Any = None, methods: str | list[str] | tuple[str, ...] | None = None, *, batch: int = 4,
         seq: int = 512, grad_accum: int = 1, gpu: str | None = None, checkpointing: bool = False,
         optim: str = "adamw", dtype: str | None = None, task: str | None = None, attn: str | None = None,
         goal: str = "auto", measure: bool = False, limits: bool = True, gpus: Any = None,
         strategy: str | None = None, zero: Any = None, fused_loss: Any = "auto", objective: str | None = None,
         **settings: Any) -> Plan:
    """Memory needed to train ``model`` with each method, a verdict and a recommendation.

    ``model`` is a model in the kernel, a transformers config (or a dict with
    ``model_type``), a folder, a hub id or a built-in name — only the config is read.
    ``methods`` defaults to full fine-tuning, LoRA, QLoRA, prompt and prefix tuning and
    bottleneck adapters; other keyword arguments are method settings (``r=16``,
    ``tokens=20``). ``gpu`` names a GPU or a size (``"T4"``, ``"24GB"``); otherwise the
    device the kernel (or ``model``) uses. ``measure`` runs two real training steps on a
    live model and compares. ``limits=False`` skips what costs extra traces: the largest
    batch and seq that fit, and each method's total with checkpointing the other way.
    ``gpus`` (a count or ``"all"``) with ``strategy`` ``"ddp"`` / ``"fsdp"`` / ``"deepspeed"``
    (``zero`` 2 or 3) gives each GPU's share of a multi-GPU run (``sharding``).
    ``fused_loss`` (``"auto"``, ``True``, ``False``) plans a language model's loss computed
    without its logits, as ``%peft train`` computes it (``fused_loss``); the plan shows the
    logits' share either way ("logits 2.4 GB → fused 0.1 GB").
    ``objective`` (``"dpo"``, ``"ipo"``, ``"orpo"``, ``"simpo"``, ``"kto"``) plans preference
    tuning: ``batch`` pairs are twice as many sequences in the forward that keeps
    activations (chosen + rejected), and the passes without gradients are named in a note;
    its loss is TRL's, computed from the logits (never fused).
    """
    t0 = time.perf_counter()
    stack.ensure()
    batch, seq, grad_accum = positive("batch", batch), positive("seq", seq), positive("grad_accum", grad_accum)
    goal_key = _check_choices(goal, attn)
    opt = resolve_optimizer(optim)
    per_example = preference_sequences(objective, measure)
    user_batch, batch = batch, batch * per_example
    if model is None:
        raise PeftMagicError("which model?", "e.g. plan('smollm2'), a folder, a hub id, or a model in the kernel")
    subject = subject_of(model, task)
    if measure and subject.live is None:
        raise PeftMagicError("--measure needs a model in the kernel", "load one first: %peft load smollm2")
    methods = [methods] if isinstance(methods, str) else methods
    requests = resolve_requests(list(methods or DEFAULT_METHODS), settings, bool(methods))
    target = resolve_target(gpu, dtype, subject.live, attn)
    # a preference run computes TRL's loss from the logits: never fused
    fused = not objective and fusing.planned(fused_loss, subject.task, int(getattr(subject.config, "vocab_size", 0) or 0),
                                             batch, seq)

    rows: list[MethodPlan] = []
    estimators: dict[str, tuple[Estimator, Any]] = {}
    params = 0
    if subject.live is not None:
        resident = resident_bytes(subject.live, target)
        if resident and target.available is not None:
            target.available += resident
            target.detail += f", plus {fmt_bytes(resident)} the model already holds"
        current = current_row(subject, target, batch, seq, checkpointing, opt, fused)
        if current is not None:
            rows.append(current)
    for req in requests:
        row, est, account = _method_row(subject, req, target, batch, seq, checkpointing, attn, opt, limits, fused)
        rows.append(row)
        if est is not None:
            estimators[req.method] = (est, account)
            params = params or (account.total_params - (account.trainable_params if req.spec is not None else 0))
    notes = [preference_note(objective, user_batch)] if objective else []
    shared = None
    if gpus is not None or strategy is not None or zero is not None:
        if gpus is None:
            raise PeftMagicError("--strategy / --zero plan a multi-GPU run", "add --gpus N")
        n, key = sharding.resolve(gpus, strategy, zero)
        notes += sharding.shard_rows(rows, n, key, layer_count(subject.config), target)
        shared = f"per GPU of {n} with {sharding.LABELS[key]}"
    if target.kind == "cpu" and subject.live is None and not gpu:
        notes.append("no GPU in this kernel: planned for CPU RAM in fp32 (pass gpu='T4', '24GB', … to plan for a GPU)")
    plan_obj = Plan(
        model=subject.name, model_type=getattr(subject.config, "model_type", "?"),
        params=params or (count_params(subject.base) if subject.base is not None else 0),
        layers=layer_count(subject.config), batch=user_batch, seq=seq, grad_accum=grad_accum, optim=opt.name,
        dtype=target.dtype, target=target, rows=rows, checkpointing=checkpointing, notes=notes,
        recommendation=_recommendation(rows, goal_key, target, estimators, opt, batch, seq, limits),
        sharding=shared, fused_loss=fused,
    )
    if plan_obj.recommendation.batch:  # the search counts sequences; a preference batch counts pairs
        plan_obj.recommendation.batch //= per_example
    if subject.task in fusing.LM_TASKS and estimators:
        with contextlib.suppress(Exception):
            plan_obj.logits = next(iter(estimators.values()))[0].logits(batch, seq)
    if measure:
        plan_obj.measurement = measuring.measure(subject.live, batch=min(batch, 2), seq=min(seq, 64),
                                                 target_batch=batch, target_seq=seq, optim=opt.name, fused=fused)
    plan_obj.seconds = time.perf_counter() - t0
    return plan_obj


def preference_sequences(objective: str | None, measure: bool) -> int:
    """Sequences per example in the forward that keeps activations (1 without ``objective``)."""
    if not objective:
        return 1
    from ..tasks.preference import objective_info

    if measure:
        raise PeftMagicError("--measure runs supervised steps", "plan objective= without --measure")
    return objective_info(objective).sequences


def preference_note(objective: str, batch: int) -> str:
    """What a preference step adds to a supervised one, in the plan's words."""
    from ..tasks.preference import objective_info

    info = objective_info(objective)
    kept = (f"each of the {batch} pairs is two sequences (chosen + rejected): activations are for "
            f"{batch * info.sequences} sequences" if info.sequences > 1 else
            f"{batch} completions per batch, as a supervised step")
    extra = (f"without gradients it also runs {info.no_grad_passes}, forwards that keep no activations; no second "
             "model is loaded" if info.no_grad_passes else f"{info.title} has no reference policy: no extra forward")
    return f"objective={info.name}: {kept}; {extra}"


def current_row(subject: Subject, target: Target, batch: int, seq: int, checkpointing: bool,
                opt: Any, fused: bool = False) -> MethodPlan | None:
    """The live model's own setup (its adapters as attached), when it has any."""
    from ..adapter_ops.listing import adapter_infos

    live = subject.live
    st = state_for(live)
    peft_model = live if is_peft_model(live) else (st.peft_model if st else None)
    if peft_model is None or not getattr(peft_model, "peft_config", None):
        return None
    described = []
    for a in adapter_infos(peft_model, st, targets=False):
        settings = ", ".join(f"{k}={v}" for k, v in a.settings.items())
        described.append(f"{a.method} '{a.name}'" + (f" ({settings})" if settings else ""))
    label = "as attached now: " + "; ".join(described)
    try:
        est = Estimator(subject, None, target, checkpointing, None, fused)
        account = tensor_accounting(peft_model, cuda=target.cuda)
        step = est.step(batch, seq)
    except Exception as e:
        msg = e.message if isinstance(e, PeftMagicError) else f"cannot trace: {first_line(e)[:120]}"
        return MethodPlan("current", label, None, error=msg)
    parts = parts_of(account, step, opt, target, False)
    return MethodPlan("current", label, parts, trainable=account.trainable_params, total_params=account.total_params,
                      checkpointing=est.checkpointing, available=target.available, overlap=step.overlap)
