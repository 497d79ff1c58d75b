"""Core sub-commands: attach a method, load a model, show / targets / methods / help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PeftMagicError, did_you_mean
from .registry import COMMANDS, Context, command, lookup


@command("attach", usage="%peft METHOD [key=value …] [--model VAR] [--name ADAPTER] [--task TASK]",
         summary="attach a PEFT method (any in %peft methods) to the model; re-running is safe",
         value_flags=("--model", "--name", "--task"), group="model")
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


@command("load", usage="%peft load ID_OR_PATH [--4bit|--8bit] [--dtype D] [--task T] [--labels N] [--as VAR]",
         summary="load a model and its tokenizer (built-ins: smollm2, minilm, tiny-llama, …)",
         value_flags=("--dtype", "--task", "--labels", "--as", "--device"),
         switch_flags=("--4bit", "--8bit", "--trust-remote-code"), cell="none", group="model")
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
    ==============  ==========================================================

    ``--4bit`` / ``--8bit`` load through bitsandbytes for QLoRA (NF4, double quantization).
    ``--labels N`` loads a sequence-classification head; ``--task`` picks another head
    (causal-lm, seq-cls, seq2seq, token-cls, qa, feature-extraction). ``--dtype`` is
    auto, bf16, fp16 or fp32. The model goes into ``model`` (or ``--as VAR``) and the
    tokenizer into ``tokenizer`` (or ``VAR_tokenizer``).

    Examples::

        %peft load smollm2
        %peft load ./my-model --4bit
        %peft load minilm --labels 2 --as clf
    """
    from ..model.load import load

    if len(ctx.args.positionals) != 1:
        raise PeftMagicError("load needs one model: a built-in name, a folder or a hub id",
                             "e.g. %peft load smollm2")
    four, eight = ctx.args.flag("--4bit"), ctx.args.flag("--8bit")
    if four and eight:
        raise PeftMagicError("choose one of --4bit and --8bit")
    labels = ctx.args.flag("--labels")
    if labels is not None:
        try:
            labels = int(labels)
        except ValueError:
            raise PeftMagicError(f"--labels needs a number, got '{labels}'") from None
    var = ctx.args.flag("--as", "model")
    if not var.isidentifier():
        raise PeftMagicError(f"--as needs a variable name, got '{var}'")
    result = load(ctx.args.positionals[0], bits=4 if four else 8 if eight else None, dtype=ctx.args.flag("--dtype"),
                  task=ctx.args.flag("--task"), labels=labels, device=ctx.args.flag("--device"),
                  trust_remote_code=bool(ctx.args.flag("--trust-remote-code")))
    ctx.bind_model(var, result.model)
    tok_var = "tokenizer" if var == "model" else f"{var}_tokenizer"
    if result.tokenizer is not None:
        ctx.bind(tok_var, result.tokenizer)
    return result


@command("show", usage="%peft show [--model VAR]",
         summary="the model's PEFT state: adapters, trainable / total params, targets, device, memory",
         value_flags=("--model",), cell="none", group="info")
def cmd_show(ctx: Context) -> Any:
    """Show the PEFT state of the model: its adapters (method, settings, trainable
    parameters, targeted modules, which is active), trainable / total parameters, device,
    dtype, quantization and memory. Returns a ``ModelSummary`` for code.
    """
    from ..adapter_ops.summary import summarize

    _, model = ctx.model()
    return summarize(model)


@command("targets", usage="%peft targets [PATTERN] [--model VAR] [--method M]",
         summary="the target-module explorer: layers by name, what a pattern or all-linear matches",
         value_flags=("--model", "--method"), cell="none", group="info")
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
    from ..peft_methods.discovery import resolve_method
    from ..adapter_ops.targets import explore
    from ..syntax.read import parse_value

    _, model = ctx.model()
    pattern: Any = None
    if ctx.args.positionals:
        raw = " ".join(ctx.args.positionals)
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


@command("methods", usage="%peft methods",
         summary="every PEFT method available, grouped, with what each supports",
         cell="none", group="info")
def cmd_methods(ctx: Context) -> Any:
    """List every method of the installed peft (and peft_magic's own), grouped into the
    LoRA family, prompt-based methods and others, with a one-line description, whether it
    can be merged into the base weights, and whether it runs on a 4/8-bit base.
    """
    from ..peft_methods.discovery import list_methods

    return list_methods()


@dataclass
class HelpText:
    """Help as an object: plain text in a terminal, preformatted HTML in a notebook."""

    text: str

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        from ..display.html import escape, wrap

        return wrap(f"<pre style='white-space:pre-wrap'>{escape(self.text)}</pre>")


def help_overview() -> HelpText:
    from .core import _help_text

    return HelpText(_help_text())


def method_help(name: str) -> HelpText:
    from ..peft_methods.discovery import resolve_method

    spec = resolve_method(name)
    info = spec.info
    lines = [f"{spec.requested}: {info.description}"]
    if spec.preset:
        lines.append("  implies: " + ", ".join(f"{k}={v!r}" for k, v in spec.preset.items()))
    if spec.needs_quantized:
        lines.append("  needs a model loaded with --4bit (or --8bit)")
    lines.append(f"  family: {info.family} · merge: {'yes' if info.can_merge else 'no'} · "
                 f"4/8-bit base: {'yes' if info.supports_quantized else 'no'}")
    fields = info.fields
    common = [f for f in fields.values() if f.common]
    rest = [f for f in fields.values() if not f.common]
    for title, group in (("settings", common), ("advanced", rest)):
        if not group:
            continue
        lines.append(f"{title}:")
        for f in group:
            default = repr(f.default)
            if len(default) > 30:
                default = default[:27] + "..."
            help_ = f.help if len(f.help) <= 110 else f.help[:107] + "..."
            lines.append(f"  {f.name} = {default}  — {help_}")
    from ..peft_methods.discovery import KEY_ALIASES

    aliases = [f"{a}→{c}" for a, cands in KEY_ALIASES.items() for c in cands[:1] if c in fields]
    if aliases:
        lines.append("key aliases: " + ", ".join(aliases))
    return HelpText("\n".join(lines))


@command("help", usage="%peft help [COMMAND | METHOD]",
         summary="this overview, one command's help, or one method's settings",
         cell="none", group="info")
def cmd_help(ctx: Context) -> Any:
    """``%peft help`` is the overview; ``%peft help train`` explains a command;
    ``%peft help lora`` lists a method's settings with their defaults and meaning.
    """
    if not ctx.args.positionals:
        return help_overview()
    name = ctx.args.positionals[0]
    cmd = lookup(name)
    if cmd is not None and cmd.name != "attach":
        return HelpText(f"{cmd.usage}\n\n{cmd.doc}")
    try:
        return method_help(name)
    except PeftMagicError:
        hint = did_you_mean(name, [c for c in COMMANDS if c != "attach"])
        if hint:
            raise PeftMagicError(f"no command or method called '{name}': {hint}") from None
        raise
