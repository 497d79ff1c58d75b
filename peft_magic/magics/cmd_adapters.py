"""Adapter lifecycle commands: save, load-adapter, adapters, use, off, on, delete, merge, generate.

Handlers only parse and call the engine (``adapter_ops``, ``inference``). Commands that
hand back a different model object (``merge`` returns the plain base model; loading an
adapter onto a plain model returns a new PeftModel; deleting the last adapter returns
the base model) rebind the notebook variable, as ``%peft lora`` does.
"""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError
from .registry import Context, command


def _rebind(ctx: Context, var: str, model: Any) -> None:
    ctx.bind_model(var, model)


def _one_positional(ctx: Context, what: str, example: str) -> str:
    pos = ctx.args.positionals
    if len(pos) != 1:
        if not pos:
            raise PeftMagicError(f"{ctx.command} needs {what}", f"e.g. {example}")
        raise PeftMagicError(f"unexpected '{pos[1]}' after {pos[0]}", f"e.g. {example}")
    return pos[0]


def _no_settings(ctx: Context) -> None:
    if ctx.settings:
        key = next(iter(ctx.settings))
        raise PeftMagicError(f"%peft {ctx.command} takes no settings (got '{key}=…')")


@command("save", args="DIR",
         summary="save the adapter (or the merged model) to a folder: atomic, never silently overwritten",
         flags=("--name A", ("--merged", "save the whole model with the adapter merged in"),
                ("--force", "replace an existing adapter folder"), "--model VAR", "--tokenizer VAR"),
         cell="none", group="adapters")
def cmd_save(ctx: Context) -> Any:
    """Save an adapter to folder DIR in peft's format, with a model card.

    DIR gets ``adapter_config.json`` and ``adapter_model.safetensors`` (load them with
    ``%peft load-adapter DIR`` or ``PeftModel.from_pretrained``), a ``README.md`` that
    records the base model, the method and its settings and this adapter's training
    runs (steps, final loss, time, peak memory), and ``loss_curve.svg``.

    The write is atomic: files go into a temporary folder beside DIR, which is renamed
    into place when complete, so a crash or a killed kernel leaves either the old
    adapter or the new one, never a mix. An existing DIR is replaced only with
    ``--force``.

    ``--name A`` saves adapter A (default: the active one). ``--merged`` saves the whole
    model with the adapter merged into its weights (plus the tokenizer), loadable with
    plain transformers; the model in the notebook is not changed. Methods that cannot be
    merged (prompt-based, bottleneck, …) are refused before anything is written.

    Examples::

        %peft save adapters/jokes
        %peft save adapters/jokes --force
        %peft save merged/jokes-model --merged
    """
    from ..adapter_ops.save import save

    _no_settings(ctx)
    path = _one_positional(ctx, "a folder", "%peft save adapters/my-adapter")
    var, model = ctx.model()
    return save(model, path, name=ctx.args.flag("--name"), merged=bool(ctx.args.flag("--merged")),
                force=bool(ctx.args.flag("--force")), tokenizer=ctx.tokenizer(var))


@command("load-adapter", args="DIR",
         summary="load a saved adapter onto the model (safetensors only unless --allow-pickle)",
         flags=("--name A", ("--trainable", "keep it trainable (default: frozen)"),
                ("--allow-pickle", "read a pickle .bin, which can run code: only for files you trust"),
                "--model VAR"),
         cell="none", aliases=("load_adapter",), group="adapters")
def cmd_load_adapter(ctx: Context) -> Any:
    """Load an adapter saved with ``%peft save`` (or peft's ``save_pretrained``) onto the
    model, and make it the active adapter.

    On a plain model this wraps it (the variable is rebound to the PeftModel); on a model
    with adapters it adds one more — name it with ``--name`` (default: ``default``, or
    the folder's name when ``default`` is taken). The adapter is frozen for inference
    unless ``--trainable``.

    Safe with folders from elsewhere: only ``adapter_model.safetensors`` is read; a
    pickle-based ``adapter_model.bin`` (which can run code when loaded) is refused unless
    ``--allow-pickle``; nothing in the folder is executed. An adapter made for another
    model (other layer names or sizes) is refused with both models named, instead of
    loading the part that happens to fit.

    Examples::

        %peft load smollm2
        %peft load-adapter adapters/jokes
        %peft load-adapter adapters/poems --name poems
        %peft load-adapter downloaded/adapter --allow-pickle
    """
    from ..adapter_ops.load import load_adapter

    _no_settings(ctx)
    path = _one_positional(ctx, "a folder", "%peft load-adapter adapters/my-adapter")
    var, model = ctx.model()
    result = load_adapter(model, path, name=ctx.args.flag("--name"), trainable=bool(ctx.args.flag("--trainable")),
                          allow_pickle=bool(ctx.args.flag("--allow-pickle")))
    _rebind(ctx, var, result.model)
    return result


@command("adapters", summary="the model's adapters: name, method, trainable params, active, merged",
         flags=("--model VAR",), cell="none", group="adapters")
def cmd_adapters(ctx: Context) -> Any:
    """List the model's adapters as a table: name, method, parameters, whether they are
    trainable now, which one is active (``off`` after ``%peft off``), and the adapters
    that ``%peft merge`` merged into the weights.
    """
    from ..adapter_ops.listing import adapters

    _no_settings(ctx)
    if ctx.args.positionals:
        raise PeftMagicError(f"unexpected '{ctx.args.positionals[0]}'", "%peft adapters takes no arguments")
    _, model = ctx.model()
    return adapters(model)


@command("use", args="NAME", summary="make adapter NAME the active one", flags=("--model VAR",), cell="none",
         group="adapters")
def cmd_use(ctx: Context) -> Any:
    """Switch the active adapter: generation, evaluation and training use adapter NAME
    from now on. Switches adapters back on after ``%peft off``.

    Example::

        %peft use poems
    """
    from ..adapter_ops.switch import use_adapter

    _no_settings(ctx)
    name = _one_positional(ctx, "an adapter name", "%peft use default (see %peft adapters)")
    var, model = ctx.model()
    result = use_adapter(model, name)
    _rebind(ctx, var, result.model)
    return result


@command("off", summary="switch adapters off: the model computes the base model", flags=("--model VAR",),
         cell="none", group="adapters")
def cmd_off(ctx: Context) -> Any:
    """Switch every adapter off without removing it: the model computes exactly what
    the base model computes (same logits), e.g. to compare before / after. ``%peft on``
    switches them back on.
    """
    from ..adapter_ops.switch import adapters_off

    _no_settings(ctx)
    _, model = ctx.model()
    return adapters_off(model)


@command("on", summary="switch adapters back on after %peft off", flags=("--model VAR",), cell="none",
         group="adapters")
def cmd_on(ctx: Context) -> Any:
    """Switch adapters back on after ``%peft off``."""
    from ..adapter_ops.switch import adapters_on

    _no_settings(ctx)
    _, model = ctx.model()
    return adapters_on(model)


@command("delete", args="NAME", summary="remove adapter NAME from the model", flags=("--model VAR",),
         cell="none", group="adapters")
def cmd_delete(ctx: Context) -> Any:
    """Remove adapter NAME and its weights from the model (save it first to keep it).
    Removing the last adapter leaves the plain base model in the variable.

    Example::

        %peft delete poems
    """
    from ..adapter_ops.switch import delete_adapter

    _no_settings(ctx)
    name = _one_positional(ctx, "an adapter name", "%peft delete default (see %peft adapters)")
    var, model = ctx.model()
    result = delete_adapter(model, name)
    _rebind(ctx, var, result.model)
    return result


@command("merge", summary="merge the active adapter into the weights (the variable becomes the plain model)",
         flags=(("--dequantize", "on a 4/8-bit base: merge into full-precision weights"),
                ("--keep-4bit", "on a 4-bit base: accept rounding the merged weights to 4 bits"),
                ("--keep-8bit", "on an 8-bit base: accept rounding the merged weights to 8 bits"), "--model VAR"),
         exclusive=(("--dequantize", "--keep-4bit", "--keep-8bit"),), cell="none", group="adapters")
def cmd_merge(ctx: Context) -> Any:
    """Merge the active adapter into the base weights (peft's ``merge_and_unload``): the
    result computes the same as the model with its adapter, with no adapter overhead,
    and the variable holds that plain model. The adapters are gone afterwards — ``%peft
    save DIR`` them first to keep them.

    Methods that cannot be merged (prompt-based, bottleneck, poly, …) are refused before
    anything changes. On a 4-bit (or 8-bit) base, merging rounds the merged weights back
    to 4 bits and loses part of what the adapter learned, so you choose:
    ``--dequantize`` merges into full-precision weights (the message says how much host
    memory that takes), ``--keep-4bit`` accepts the rounding.

    Examples::

        %peft merge
        %peft merge --dequantize        # after %peft load … --4bit and %peft qlora
    """
    from ..adapter_ops.merge import merge

    _no_settings(ctx)
    if ctx.args.positionals:
        raise PeftMagicError(f"unexpected '{ctx.args.positionals[0]}'", "%peft merge merges the active adapter")
    dq = bool(ctx.args.flag("--dequantize"))
    keep = bool(ctx.args.flag("--keep-4bit") or ctx.args.flag("--keep-8bit"))
    if dq and keep:
        raise PeftMagicError("choose one of --dequantize and --keep-4bit")
    var, model = ctx.model()
    result = merge(model, dequantize=dq, keep_quantized=keep)
    _rebind(ctx, var, result.model)
    return result


@command("generate", args="PROMPT [key=value …]",
         summary="generate with the active adapter; --compare: base model and each adapter side by side",
         flags=(("--compare", "also the base model and every other adapter, same prompt, settings and seed"),
                ("--seed N", "the random seed (default: 0)"), ("--adapters A,B", "with --compare: only these"),
                ("--raw", "send the prompt as is, without the chat template"), "--model VAR", "--tokenizer VAR"),
         cell="code", aliases=("gen",), group="adapters")
def cmd_generate(ctx: Context) -> Any:
    """Generate a continuation of PROMPT with the active adapter.

    Instruct models (a tokenizer with a chat template) get the prompt as a user turn of
    the chat template; ``--raw`` sends it as is. Settings are generation settings:
    ``max_new_tokens`` (default 48), ``temperature``, ``top_p``, ``top_k``,
    ``do_sample``, ``repetition_penalty`` …; greedy unless you sample.

    ``--compare`` shows the base model (adapters disabled) and every adapter side by side
    for the same prompt, settings and seed (``--adapters a,b`` picks some). Prompt,
    prefix and p-tuning adapters generate correctly with the cache on (peft's own
    ``generate`` ignores a prefix or drifts there; peft_magic decodes them itself).

    In cell form the body is the prompt.

    Examples::

        %peft generate "Tell me a joke"
        %peft generate "Tell me a joke" --compare max_new_tokens=40
        %peft generate "Once upon a time" temperature=0.8 top_p=0.9 --seed 3

        %%peft generate --compare
        Write a haiku about autumn.
    """
    from ..inference.generate import generate

    var, model = ctx.model()
    prompt = " ".join(ctx.args.positionals)
    if ctx.cell is not None and ctx.cell.strip():
        if prompt:
            raise PeftMagicError("give the prompt either on the %%peft line or in the cell body, not both")
        prompt = ctx.cell.strip()
    seed = ctx.args.flag("--seed", 0)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise PeftMagicError(f"--seed needs a number, got '{seed}'") from None
    names = ctx.args.flag("--adapters")
    adapters = [n.strip() for n in names.split(",") if n.strip()] if names else None
    tokenizer = ctx.tokenizer(var)
    if tokenizer is None:
        raise PeftMagicError(f"no tokenizer for '{var}' in the notebook",
                             f"put it in `tokenizer` or `{var}_tokenizer`, or pass --tokenizer VAR")
    return generate(model, prompt, tokenizer=tokenizer, compare=bool(ctx.args.flag("--compare")) or bool(adapters),
                    adapters=adapters, seed=seed, chat=False if ctx.args.flag("--raw") else None, **ctx.settings)
