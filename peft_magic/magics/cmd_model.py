"""Core sub-commands: attach a method, load a model, show / targets / methods / help."""

from __future__ import annotations

from typing import Any

from .. import notebook
from ..errors import PeftMagicError
from .registry import Context, command


@command("attach", args="METHOD [key=value …]",
         summary="attach a PEFT method (any in %peft methods) to the model; re-running is safe",
         flags=("--model VAR", "--name ADAPTER", "--task TASK"), group="model")
def cmd_attach(ctx: Context) -> Any:
    """Attach a PEFT method to the model in the notebook and rebind the variable.

    METHOD is any method of the installed peft (``%peft methods`` lists them) or an alias:
    ``lora``, ``qlora`` (LoRA on a 4-bit model), ``dora``, ``rslora``, ``prefix``, ``prompt``,
    ``p-tuning``, ``ia3``, ``adalora``, ``loha``, ``lokr``, ``oft``, ``boft``, ``vera``,
    ``bottleneck`` / ``houlsby`` / ``pfeiffer`` …

    Settings are fields of the method's config (``%peft help lora`` lists them), with
    short aliases: ``alpha``→``lora_alpha``, ``dropout``→``lora_dropout``,
    ``target``→``target_modules``, ``tokens``→``num_virtual_tokens``. Values are Python
    literals; ``a,b`` is a list; ``target=all-linear`` and regexes work.

    Re-running the same cell does nothing; changing a setting replaces the adapter and
    shows what changed. ``--name`` adds a second adapter of the same method.

    Examples::

        %peft lora r=8 alpha=16 dropout=0.05
        %peft lora r=16 target=q_proj,k_proj,v_proj,o_proj --name wide
        %peft prefix tokens=20
        %peft qlora r=16 target=all-linear          # after %peft load … --4bit

        %%peft dora
        r: 8
        target_modules: [q_proj, v_proj]
    """
    from ..adapter_ops.attach import attach

    if not ctx.args.positionals:
        raise PeftMagicError("which method?", "e.g. %peft lora r=8 — see %peft methods")
    method, *extra = ctx.args.positionals
    if extra:
        raise PeftMagicError(f"unexpected '{extra[0]}' after the method name", "settings are key=value")
    var, model = ctx.model()
    result = attach(model, method, name=ctx.args.flag("--name", "default"), task=ctx.args.flag("--task"),
                    **ctx.settings)
    ctx.bind_model(var, result.model)
    return result


@command("load", args="ID_OR_PATH",
         summary="load a model and its tokenizer (built-ins: smollm2, minilm, tiny-llama, …)",
         flags=(("--4bit", "bitsandbytes 4-bit NF4 with double quantization (QLoRA)"), ("--8bit", "bitsandbytes 8-bit"),
                ("--dtype D", "auto, bf16, fp16 or fp32"), "--task TASK",
                ("--labels N|A,B,C", "the classifier's label count or names (alone: a sequence-classification head)"),
                ("--as VAR", "the variable to put the model in (default: model)"),
                ("--device DEV", "auto, cpu, cuda, cuda:1 or mps"),
                ("--trust-remote-code", "run the model repository's own code (only for sources you trust)")),
         exclusive=(("--4bit", "--8bit"),), cell="none", group="model")
def cmd_load(ctx: Context) -> Any:
    """Load a model and its tokenizer into the notebook.

    ID_OR_PATH is a built-in name, a local folder saved with ``save_pretrained``, or a
    Hugging Face Hub id. Built-ins work offline:

    ==============  ==========================================================
    ``smollm2``     SmolLM2-135M-Instruct, real weights (the default model)
    ``minilm``      all-MiniLM-L6-v2 encoder, real weights
    ``tiny-llama``  2-layer Llama, random weights, for quick experiments
    ``tiny-gpt2``   2-layer GPT-2 (Conv1D), random weights
    ``tiny-bert``   2-layer BERT, random weights
    ``tiny-t5``     2+2-layer T5 encoder-decoder, random weights (seq2seq)
    ==============  ==========================================================

    ``--4bit`` / ``--8bit`` load through bitsandbytes for QLoRA (NF4, double quantization).
    ``--task`` picks the head: causal-lm, seq-cls, seq2seq, token-cls, qa or
    feature-extraction (default: what the model's config implies). ``--labels`` gives a
    classifier its labels, as a count (``--labels 3``) or as names in id order
    (``--labels O,B-PER,I-PER``); alone it means a sequence-classification head. A model
    whose architecture has no such head is one line saying so. ``--dtype`` is auto, bf16,
    fp16 or fp32. The model goes into ``model`` (or ``--as VAR``) and the tokenizer into
    ``tokenizer`` (or ``VAR_tokenizer``).

    Examples::

        %peft load smollm2
        %peft load ./my-model --4bit
        %peft load minilm --labels 2 --as clf
        %peft load minilm --task token-cls --labels O,B-PER,I-PER,B-LOC,I-LOC
        %peft load minilm --task qa
        %peft load tiny-t5
    """
    from ..model.load import load

    if len(ctx.args.positionals) != 1:
        raise PeftMagicError("load needs one model: a built-in name, a folder or a hub id",
                             "e.g. %peft load smollm2")
    four, eight = ctx.args.flag("--4bit"), ctx.args.flag("--8bit")
    if four and eight:
        raise PeftMagicError("choose one of --4bit and --8bit")
    labels = ctx.args.flag("--labels")
    var = ctx.args.flag("--as", "model")
    if not var.isidentifier():
        raise PeftMagicError(f"--as needs a variable name, got '{var}'")
    result = load(ctx.args.positionals[0], bits=4 if four else 8 if eight else None, dtype=ctx.args.flag("--dtype"),
                  task=ctx.args.flag("--task"), labels=labels, device=ctx.args.flag("--device"),
                  trust_remote_code=bool(ctx.args.flag("--trust-remote-code")))
    ctx.bind_model(var, result.model)
    if result.tokenizer is not None:
        ctx.bind(notebook.tokenizer_var(var), result.tokenizer)
    return result


@command("show", summary="the model's PEFT state: adapters, trainable / total params, targets, device, memory",
         flags=("--model VAR",), cell="none", group="info")
def cmd_show(ctx: Context) -> Any:
    """Show the PEFT state of the model: its adapters (method, settings, trainable
    parameters, targeted modules, which is active), trainable / total parameters, device,
    dtype, quantization and memory. Returns a ``ModelSummary`` for code.
    """
    from ..adapter_ops.summary import show

    _, model = ctx.model()
    return show(model)


@command("targets", args="[PATTERN]",
         summary="the target-module explorer: layers by name, what a pattern or all-linear matches",
         flags=("--model VAR", ("--method M", "whose default targets to mark (default: lora)")), cell="none",
         group="info")
def cmd_targets(ctx: Context) -> Any:
    """List the layers an adapter can attach to, grouped by name, with counts, shapes and
    parameter counts; ★ marks peft's default targets for this architecture.

    With a PATTERN (names ``q_proj,v_proj``, a regex ``.*attn.*``, or ``all-linear``), show
    what it matches — the same matching peft uses — and warn about names that match
    nothing or only part of the layers.

    Examples::

        %peft targets
        %peft targets q_proj,v_proj,o_proj
        %peft targets ".*layers\\.(0|1)\\..*proj"
    """
    from ..adapter_ops.targets import explore
    from ..peft_methods.discovery import resolve_method
    from ..syntax.read import parse_value

    _, model = ctx.model()
    pattern: Any = None
    if ctx.args.positionals:
        raw = " ".join(ctx.args.raw_positionals)  # as typed: a regex keeps its backslashes (\d, \.)
        value = parse_value(raw)
        if isinstance(value, str) and value not in ("all-linear", "all_linear"):
            import re

            pattern = value if re.search(r"[.*+?\[\]()|^$\\]", value) else [value]
        else:
            pattern = value
    peft_type = "LORA"
    if ctx.args.flag("--method"):
        peft_type = resolve_method(ctx.args.flag("--method")).info.peft_type
    return explore(model, pattern, peft_type)


@command("methods", summary="every PEFT method available, grouped, with what each supports",
         cell="none", group="info")
def cmd_methods(ctx: Context) -> Any:
    """List every method of the installed peft (and peft_magic's own), grouped into the
    LoRA family, prompt-based methods and others, with a one-line description, whether it
    can be merged into the base weights, and whether it runs on a 4/8-bit base.
    """
    from ..peft_methods.report import list_methods

    return list_methods()
