"""Speed commands: ``%peft profile`` (a few profiled steps, no full run)."""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError
from .registry import Context, command


@command("profile",
         args="[data=EXPR|PATH] [steps=N] [batch=] [max_len=] [compile=True] [checkpointing=True] "
              "[any TrainingArguments field=…]",
         summary="profile a few training steps: where a step's time goes, without a full run",
         flags=("--model VAR", "--tokenizer VAR", ("--adapter NAME", "profile this adapter (default: the active one)"),
                ("--warmup N", "unprofiled steps first (default 1; 2 with compile=True)"),
                ("--trace DIR", "also write a Chrome / Perfetto trace into DIR"),
                ("--display MODE", "auto, widget, text or none")),
         group="training")
def cmd_profile(ctx: Context) -> Any:
    """Run a few real training steps under ``torch.profiler`` and show where a step's time
    goes: data loading / collation, forward, backward, optimizer step, our callbacks and
    display, and the rest, in ms and % of the measured step; the top operators by self
    time; peak memory per phase (CUDA's allocator, or the process's RAM on CPU); and hints
    drawn from the numbers (data loading above 10 % → ``dataloader_num_workers``; attention
    dominating the forward → the attention implementation; a large optimizer step → a
    fused optimizer).

    ``steps`` is the number of profiled steps (5), after one warm-up step (two with
    ``compile=True``: compiling happens there). The same settings as ``%peft train``
    apply (``batch``, ``max_len``, ``compile=True``, ``checkpointing=True``, …), so the
    profile is that of the run you are about to start. The adapter is left exactly as it
    was and the steps are not a run in ``%peft runs``. Returns the ``Profile``.

    Examples::

        %peft profile data=texts batch=8
        %peft profile data=texts compile=True steps=3 --trace traces/
    """
    from ..api import profile
    from ..state import is_peft_model, peft_model_for

    if ctx.args.positionals:
        raise PeftMagicError(f"unexpected '{ctx.args.positionals[0]}'", "settings are key=value, e.g. data=texts")
    var, model = ctx.model()
    settings = dict(ctx.settings)
    if "data" not in settings:
        raise PeftMagicError("which data?", "data=VARIABLE or a path, e.g. %peft profile data=texts")
    ctx.settings = settings
    data = ctx.value("data")
    if not is_peft_model(model) and peft_model_for(model) is None:
        raise PeftMagicError(f"'{var}' has no adapter to profile", "attach one first, e.g. %peft lora r=8")
    tokenizer = ctx.tokenizer(var)
    if tokenizer is None:
        raise PeftMagicError("no tokenizer found (looked for 'tokenizer' and f'{var}_tokenizer')",
                             "load the model with %peft load, or pass --tokenizer VAR")
    warmup = ctx.args.flag("--warmup")
    if warmup is not None:
        try:
            warmup = int(warmup)
        except ValueError:
            raise PeftMagicError(f"--warmup takes a whole number, got '{warmup}'") from None
    return profile(model, data, tokenizer=tokenizer, display=ctx.args.flag("--display", "auto"), warmup=warmup,
                   trace=ctx.args.flag("--trace"), adapter=ctx.args.flag("--adapter"), **settings)
