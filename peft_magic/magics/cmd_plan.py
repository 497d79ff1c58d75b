"""``%peft plan``: memory by part for each method, a verdict and a recommendation."""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError
from .registry import Context, command


def _is_method(word: str) -> bool:
    from ..peft_methods.discovery import resolve_method
    from ..planning.requests import FULL_NAMES

    if word.lower() in FULL_NAMES:
        return True
    try:
        resolve_method(word)
    except PeftMagicError:
        return False
    return True


@command("plan", args="[ID_OR_PATH] [METHOD …] [batch=] [seq=] [grad_accum=] [optim=…] [dtype=] [goal=] "
                      "[objective=dpo|…]",
         summary="will it fit, and which method: memory by part for each method, before loading a weight",
         flags=("--model VAR",
                ("--gpu NAME_OR_SIZE", "plan for a GPU: T4, L4, A10G, A100-80GB, H100, RTX-4090, … or a size like 24GB"),
                "--task TASK", ("--dtype D", "the training dtype: bf16, fp16 or fp32"),
                ("--checkpointing", "with gradient checkpointing"),
                ("--measure", "also run two real training steps on the model and compare"),
                ("--gpus N", "each GPU's share of a run on N GPUs (a count or all)"),
                ("--strategy S", "with --gpus: ddp (default), fsdp or deepspeed"),
                ("--zero N", "DeepSpeed's ZeRO stage: 2 (default) or 3")),
         group="training")
def cmd_plan(ctx: Context) -> Any:
    """Estimate the memory a fine-tune needs — by part, for each method — and say whether
    it fits, which method to use and how large a batch and sequence can go.

    The model is built on the meta device from its config (no weights are read, even for
    a 70B config), prepared for each method the way a real run is (QLoRA's 4-bit layers,
    gradient checkpointing) with the method attached by peft itself; one forward and
    backward on that empty model gives the activations. Parts: frozen weights, adapter,
    gradients, optimizer states, activations, runtime overhead.

    ID_OR_PATH is a built-in name, a folder with a config.json or a hub id; without one
    the model in the notebook is planned (``--model VAR`` picks the variable). METHODs
    default to full fine-tuning, LoRA, QLoRA, prompt tuning, prefix tuning and bottleneck
    adapters; any method of ``%peft methods`` works, with its settings (``r=16``,
    ``tokens=20``). The verdict is against the device the kernel sees, or a named GPU:
    ``--gpu T4``, ``L4``, ``A100-80GB``, ``RTX-4090``, or a size like ``--gpu 24GB``.

    Options: ``batch=`` (4), ``seq=`` (512), ``grad_accum=``, ``optim=`` (adamw,
    adamw_torch, adamw_8bit, paged_adamw, paged_adamw_8bit, adafactor, lion, sgd),
    ``dtype=`` (bf16 / fp16 / fp32; default: what the device trains in), ``attn=`` (sdpa,
    eager), ``goal=`` (auto, quality, memory, prompts, reuse), ``--checkpointing`` (gradient
    checkpointing for every method), ``--measure`` (run two real training steps on the
    model in the notebook, at a small batch and seq, and compare with the estimate),
    ``fused_loss=`` (auto, True, False: a language model's loss computed without its
    logits, as ``%peft train`` does by default where that saves memory; the plan shows the
    logits on their own line, "logits 2.4 GB → fused 0.1 GB").
    ``--gpus N --strategy ddp|fsdp|deepspeed`` (``--zero 3``) gives what *each* GPU needs
    on N GPUs: ddp keeps the full model on every GPU; fsdp and ZeRO-3 shard weights,
    gradients and optimizer states by N; ZeRO-2 shards optimizer states and gradients.
    ``objective=dpo`` (ipo, orpo, simpo, kto) plans preference tuning: ``batch`` pairs are
    chosen + rejected, twice the sequences; the reference policy's forward (the adapter
    switched off) keeps no activations and loads no second model.

    Examples::

        %peft plan smollm2
        %peft plan ./Llama-2-7b-hf --gpu T4
        %peft plan meta-llama/Llama-2-7b-hf lora qlora r=16 batch=8 seq=1024 --gpu A100-80GB
        %peft plan lora r=16 batch=8 seq=512           # the model in the notebook
        %peft plan --measure                           # compare with two real steps
        %peft plan ./Llama-2-13b-hf lora --gpu A100-40GB --gpus 4 --strategy fsdp
        %peft plan lora r=8 batch=4 seq=512 objective=dpo
        p = %peft plan smollm2 --gpu 24GB
        p["qlora"].parts.activations
    """
    from ..planning.plan import PLAN_KEYS, plan

    settings = dict(ctx.settings)
    opts = {k: settings.pop(k) for k in PLAN_KEYS if k in settings}
    source: Any = None
    methods: list[str] = []
    for word in ctx.args.positionals:
        if _is_method(word):
            methods.append(word)
        elif source is None and not methods:
            source = word
        else:
            hint = "methods come after the model" if source is None else "give one model, then methods"
            raise PeftMagicError(f"'{word}' is not a method", f"{hint}; see %peft methods")
    if source is not None and ctx.args.flag("--model"):
        raise PeftMagicError("give either a model name / path or --model VAR, not both")
    if source is None:
        var = ctx.model_var()
        if var not in ctx.ns:
            raise PeftMagicError("which model? give a name, a folder or a hub id, or load one first",
                                 "e.g. %peft plan smollm2, or %peft plan ./my-model --gpu T4")
        _, source = ctx.model()
    for flag, key in (("--gpu", "gpu"), ("--task", "task"), ("--dtype", "dtype"), ("--gpus", "gpus"),
                      ("--strategy", "strategy"), ("--zero", "zero")):
        if ctx.args.flag(flag):
            if key in opts:
                raise PeftMagicError(f"{key} is given both as {flag} and as {key}=")
            opts[key] = ctx.args.flag(flag)
    if ctx.args.flag("--checkpointing"):
        opts["checkpointing"] = True
    if ctx.args.flag("--measure"):
        opts["measure"] = True
    if "gpu" in opts:
        opts["gpu"] = str(opts["gpu"])
    for key in ("checkpointing", "measure"):
        if key in opts and not isinstance(opts[key], bool):
            raise PeftMagicError(f"{key} must be true or false, got {opts[key]!r}")
    return plan(source, methods or None, **opts, **settings)
