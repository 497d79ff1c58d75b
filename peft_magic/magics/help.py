"""Help for ``%peft``: the overview (``%peft?``), one command, one method's settings.

Usage lines are generated from each command's declared flags (``registry.Command``), so
the help shows every flag the parser accepts; a command's docstring is its long help,
as in IPython's own magics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PeftMagicError, did_you_mean
from ..notebook import VALUE_RULE
from ..peft_methods.aliases import KEY_ALIASES
from ..peft_methods.discovery import resolve_method
from .registry import COMMANDS, GROUPS, Context, command, lookup


def help_text() -> str:
    lines = [
        "PEFT fine-tuning from notebook cells: attach any PEFT method, train, save, compare.",
        "",
        "Usage (line form, or cell form with settings in the body):",
    ]
    for group in GROUPS:
        for cmd in COMMANDS.values():
            if cmd.group == group:
                lines.append(f"  {cmd.usage}")
                lines.append(f"      {cmd.summary}")
    lines += [
        "",
        "Examples::",
        "",
        "  %load_ext peft_magic",
        "  %peft load smollm2                      # model + tokenizer into the namespace",
        "  %peft lora r=8 alpha=16 dropout=0.05    # attach LoRA to `model`",
        "  %peft targets q_proj,v_proj             # what a target pattern matches",
        "  %peft train data=texts steps=100        # train with live progress",
        "",
        "  %%peft lora",
        "  r: 16",
        "  target_modules: [q_proj, k_proj, v_proj, o_proj]",
        "",
        "METHOD is any method of the installed peft (see %peft methods), case-insensitive, or",
        "an alias: lora, qlora, dora, prefix, prompt, p-tuning, ia3, adalora, bottleneck, ...",
        "Values are Python literals; a,b is a list. %peft help NAME explains one command or",
        "one method's settings.",
        "",
        "Data and models (data=, eval=, --model, --tokenizer, predict's input): "
        + VALUE_RULE + ".",
        "  %peft train data=ds['train'].select(range(500)) eval=rows[-40:] steps=50",
        "",
        "Python values in the line: {expr} is replaced by its value when it evaluates in the",
        "notebook, and $name by a variable's value (r={n}, steps=$steps); a regex quantifier",
        "({1}, {1,2}, {2,}) and anything that does not evaluate stay as written, so patterns",
        r"reach peft verbatim: target=layers\.\d{1}\.(q|v)_proj. {{ }} $$ are literal { } $.",
        "A %%peft cell body is read as written.",
    ]
    return "\n".join(lines)


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
    return HelpText(help_text())


def method_help(name: str) -> HelpText:
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
    aliases = [f"{a}→{c}" for a, cands in KEY_ALIASES.items() for c in cands[:1] if c in fields]
    if aliases:
        lines.append("key aliases: " + ", ".join(aliases))
    return HelpText("\n".join(lines))


@command("help", args="[COMMAND | METHOD | config]",
         summary="this overview, one command's help, one method's settings, or the notebook-wide defaults",
         cell="none", group="info")
def cmd_help(ctx: Context) -> Any:
    """``%peft help`` is the overview; ``%peft help train`` explains a command;
    ``%peft help lora`` lists a method's settings with their defaults and meaning;
    ``%peft help config`` lists the notebook-wide defaults (``%config PeftMagic.X = …``).
    """
    if not ctx.args.positionals:
        return help_overview()
    name = ctx.args.positionals[0]
    if name.lower() == "config":
        from .config import config_help

        return HelpText(config_help())
    cmd = lookup(name)
    if cmd is not None and cmd.name != "attach":
        return HelpText(cmd.help())
    try:
        return method_help(name)
    except PeftMagicError:
        hint = did_you_mean(name, [c for c in COMMANDS if c != "attach"])
        if hint:
            raise PeftMagicError(f"no command or method called '{name}': {hint}") from None
        raise
