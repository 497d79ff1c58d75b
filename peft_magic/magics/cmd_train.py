"""Training commands: ``%peft train``, ``%peft runs``, ``%%peft watch``."""

from __future__ import annotations

import ast
from typing import Any

from ..errors import PeftMagicError
from .registry import Context, command

#: multi-process training (``training/distributed``): flag → ``train`` keyword
LAUNCH_FLAGS = (("--processes N", "train in N worker processes on this machine's CPU (torchrun, gloo)"),
                ("--gpus N", "one worker process per GPU: a count or all (torchrun, nccl)"),
                ("--strategy S", "with --processes / --gpus: ddp (default), fsdp (FULL_SHARD per block) or deepspeed"),
                ("--zero N", "DeepSpeed's ZeRO stage: 2 (default) or 3"),
                ("--stall SECONDS", "stop the workers when one shows no progress for this long (default 600)"),
                ("--dry-run", "show the launch command, the global batch and the generated config; start nothing"))
LAUNCH_KEYS = ("processes", "gpus", "strategy", "zero", "stall")


def _launch_options(ctx: Context, settings: dict[str, Any]) -> dict[str, Any]:
    """``--processes 2`` or ``processes=2`` (a ``%%peft train`` body line) → ``train`` keywords."""
    out = {}
    for key in LAUNCH_KEYS:
        flag = ctx.args.flag(f"--{key}")
        if flag is not None and key in settings:
            raise PeftMagicError(f"{key} is given both as --{key} and as {key}=")
        value = flag if flag is not None else settings.pop(key, None)
        if value is not None:
            out[key] = value
    return out


@command("train",
         args="[data=EXPR|PATH] [steps=N | epochs=N] [lr=] [batch=] [grad_accum=] [max_len=] [eval=EXPR|PATH|0.1] "
              "[objective=dpo|ipo|orpo|simpo|kto] [beta=] [compile=True] [checkpointing=True] [fused_loss=auto|False] "
              "[save_every=N] [save_to=DIR] [keep=2] "
              "[any TrainingArguments field=…]",
         summary="train the attached adapter with live progress, loss, tokens/s and memory",
         flags=("--model VAR", "--tokenizer VAR", ("--adapter NAME", "train this adapter (default: the active one)"),
                ("--display MODE", "auto, widget, text or none"),
                ("--resume [DIR]", "continue this adapter's newest checkpoint (an interrupted run of this kernel, "
                                   "or on disk after a restart: re-run the cells with the same data); DIR: where"),
                ("--no-autosave", "write no checkpoints (autosave is on by default)"),
                *LAUNCH_FLAGS,
                ("--profile", "profile a few steps: where a step's time goes, shown under the display"),
                ("--trace DIR", "with --profile: also write a Chrome / Perfetto trace into DIR")),
         group="training")
def cmd_train(ctx: Context) -> Any:
    """Train the active adapter of the model on a dataset, with a live progress display.

    ``data`` is a notebook variable or any Python expression (``rows[40:]``,
    ``ds["train"].select(range(500))``) holding a list of strings or dicts, a pandas
    DataFrame or a ``datasets.Dataset`` / ``DatasetDict``; or a ``.jsonl`` / ``.json`` /
    ``.csv`` / ``.txt`` path. An expression that evaluates wins, then a path; otherwise
    one line says what was tried (``eval=`` and ``--model`` read the same way). The shape is recognised from the columns: ``text``; ``prompt`` + ``completion``
    (loss on the completion only); ``messages`` (the tokenizer's chat template, loss on
    the assistant turns); ``text`` + ``label`` for a classifier (``%peft load … --labels N``).

    Settings: ``steps`` or ``epochs`` (default 1 epoch), ``lr`` (default by method: 2e-4
    for LoRA, 3e-2 for prompt tuning, …), ``batch`` (8), ``grad_accum``, ``max_len`` (512),
    ``eval`` (data, or a fraction such as 0.1 to hold out), and any
    ``transformers.TrainingArguments`` field (``warmup_steps=10``, ``optim=adamw_torch`` …).
    Batches are padded dynamically and grouped by length; bf16/fp16 are used where the
    GPU supports them; a 4-bit model trains with gradient checkpointing.

    Preference tuning (TRL's trainers, the same display): data with ``prompt`` +
    ``chosen`` + ``rejected`` (text, or chat messages) trains with DPO, data with
    ``prompt`` + ``completion`` + ``label`` (true / false) with KTO; ``objective=`` picks
    ``dpo``, ``ipo``, ``orpo``, ``simpo`` or ``kto``; ``beta=`` and the objective's other
    settings are the fields of its TRL config (``DPOConfig``, ``KTOConfig``, ``CPOConfig``,
    ``ORPOConfig``: ``loss_type=``, ``label_smoothing=``, ``simpo_gamma=`` …). The display
    adds the rewards of the chosen and rejected answers, their margin and the preference
    accuracy as TRL logs them. The reference policy is the base model (the adapter switched
    off): no second model in memory. ``%peft evaluate`` on held-out pairs measures the
    rewards against the base.

    Beyond one process: ``--processes N`` trains data-parallel in N worker processes on
    CPU (gloo), ``--gpus N`` or ``--gpus all`` in one process per GPU (nccl), started with
    torchrun; ``--strategy fsdp`` shards with FSDP (FULL_SHARD, one unit per transformer
    block), ``--strategy deepspeed`` with ZeRO-2 (``--zero 3`` for ZeRO-3). ``batch`` is
    per process: the global batch is batch × processes × grad_accum. The display, the
    status bar and ``%peft runs`` work as for one process; the trained adapter comes back
    into the model. What this machine cannot run is refused before anything starts;
    ``--dry-run`` shows the launch command and the generated config instead.

    The stop button stops at the next step boundary and keeps what was learned;
    ``%peft train --resume`` continues that run. Out of memory is caught: the model
    stays usable and the message says what to change.

    Autosave: every run writes a checkpoint every ``%config PeftMagic.autosave_minutes``
    (10) of training, every ``save_every`` steps if given, and at the end, into ``save_to``
    (default ``checkpoints/`` beside the notebook, a folder per adapter and run; on Colab
    a mounted Drive folder survives a disconnect), keeping the last ``keep`` (2). After a
    crash or a disconnect, re-run the cells (load, attach, the data) and add ``--resume``:
    the run continues from the newest checkpoint exactly as if it had not stopped, and the
    chart shows the whole curve. A different base model, adapter settings, data or training
    settings are refused in one line. ``--no-autosave`` writes nothing.

    Speed: ``--profile`` times a few steps (data, forward, backward, optimizer step, our
    display, other; top operators; peak memory; hints) and shows the table under the
    display (``run.profile``); ``compile=True`` uses ``torch.compile`` (the display says
    how long compiling took and the steady tokens/s after it); ``checkpointing=True``
    trades recompute time for activation memory (both shown). ``%peft profile`` profiles
    a few steps without a full run.

    Memory: a language model's loss is computed without its ``[batch, seq, vocab]``
    logits — a chunk of tokens at a time (Liger-Kernel or cut-cross-entropy on a GPU where
    installed) — wherever one batch's logits would take 64 MB or more, or 16 MB when most
    positions are prompt (``fused_loss=auto``; on completion and chat data it is faster
    too: no logits are made for the prompt); the loss and gradients are the model's own. ``fused_loss=True``
    fuses at any size, ``fused_loss=False`` computes the model's own loss from the full
    logits. The display's "loss path" says which ran; a model the fused loss cannot
    reproduce falls back with the reason.

    Examples::

        texts = ["First example ...", "Second example ..."]
        %peft train data=texts steps=100 lr=2e-4
        %peft train data=ds["train"].select(range(500)) eval=ds["validation"] steps=200

        %%peft train
        data: ./chat.jsonl
        epochs: 2
        batch: 4
        max_len: 1024
        eval: 0.1

        %peft train --resume
        %peft train data=rows steps=4000 save_to=/content/drive/MyDrive/ckpt --resume

        %peft train data=pairs objective=dpo beta=0.1 steps=30 lr=5e-4 eval=pairs_dev

        %peft train data=texts steps=100 batch=4 --processes 2
        %peft train data=texts epochs=1 --gpus all --strategy fsdp --dry-run
    """
    from ..api import train
    from ..state import is_peft_model

    if ctx.args.positionals:
        raise PeftMagicError(f"unexpected '{ctx.args.positionals[0]}'", "settings are key=value, e.g. data=texts")
    var, model = ctx.model()
    settings = dict(ctx.settings)
    resume = ctx.args.flag("--resume") or False  # True, or a folder
    launch = _launch_options(ctx, settings)
    if ctx.args.flag("--dry-run"):
        from ..training.distributed.dryrun import dry_run

        for key in ("data", "eval"):
            settings.pop(key, None)
        return dry_run(model, adapter=ctx.args.flag("--adapter"), **launch, **settings)
    data = None
    ctx.settings = settings
    if "data" in settings:
        data = ctx.value("data")
    elif not resume:
        raise PeftMagicError("which data?", "data=VARIABLE or a path, e.g. %peft train data=texts steps=50")
    if "eval" in settings:
        settings["eval"] = ctx.value("eval")
    if not is_peft_model(model):
        from ..state import peft_model_for

        if peft_model_for(model) is None:
            raise PeftMagicError(f"'{var}' has no adapter to train", "attach one first, e.g. %peft lora r=8")
    tokenizer = ctx.tokenizer(var)
    if tokenizer is None and not resume:
        raise PeftMagicError("no tokenizer found (looked for 'tokenizer' and f'{var}_tokenizer')",
                             "load the model with %peft load, or pass --tokenizer VAR")
    if ctx.args.flag("--adapter"):
        settings["adapter"] = ctx.args.flag("--adapter")
    settings.update(launch)
    return train(model, data, tokenizer=tokenizer, display=ctx.args.flag("--display", "auto"), resume=resume,
                 autosave=not ctx.args.flag("--no-autosave"), profile=bool(ctx.args.flag("--profile")),
                 trace=ctx.args.flag("--trace"), **settings)


@command("runs", args="[DIR …]",
         summary="every training run of this kernel (and runs found on disk), with the loss curves together",
         cell="none", group="training")
def cmd_runs(ctx: Context) -> Any:
    """Every training run in this kernel: method, adapter, settings, steps, first and final
    loss, peak memory, time and status (completed / interrupted / oom / error), with all
    loss curves in one chart. Returns a ``RunsReport`` (``.runs`` is the list of records).

    Below it, the runs found on disk that are not this kernel's — a kernel that died, a
    Colab session that disconnected — with their last checkpoint and whether ``--resume``
    can continue them: in ``checkpoints/`` (``%config PeftMagic.checkpoint_dir``), where
    this kernel's runs saved, and in each DIR given (a ``save_to=`` folder).
    """
    from ..training.report import runs_report

    return runs_report(ctx.args.positionals)


@command("watch", summary="run the cell as Python with a live memory readout; report peak and change",
         flags=(("--device DEV", "cuda:1, cpu, … (default: the device in use)"),), cell="only", group="training")
def cmd_watch(ctx: Context) -> Any:
    """Run the cell body as ordinary Python while showing live memory, then report the
    peak and the change — the ``%%time`` of memory. The device is the one in use (CUDA
    when initialised, else this process's RAM), or ``--device cuda:1`` / ``cpu``.

    Example::

        %%peft watch
        outputs = model.generate(**inputs, max_new_tokens=200)
    """
    from ..display.watch import LiveMemory
    from ..memory import Watch

    if ctx.cell is None:
        raise PeftMagicError("watch is a cell magic", "use %%peft watch with code in the cell body")
    live = LiveMemory()
    with live, Watch(ctx.args.flag("--device")) as watch:
        value = _run_body(ctx.shell, ctx.cell)
    live.close(watch.report)
    return value


def _run_body(shell: Any, body: str) -> Any:
    """Execute like ``%%time``: magics transformed, the last expression's value returned."""
    cell = shell.transform_cell(body)
    tree = shell.compile.ast_parse(cell)
    tree = shell.transform_ast(tree)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    ns = shell.user_ns
    code = shell.compile(tree, "<peft watch>", "exec")
    try:
        exec(code, ns, ns)
        if last is not None:
            return eval(shell.compile(last, "<peft watch>", "eval"), ns, ns)
    except Exception as e:
        e._peft_magic_user_code = True  # type: ignore[attr-defined]  (not a peft_magic error)
        raise
    return None
