"""``%peft export``: the model with its adapter merged, as a transformers folder, GGUF or Ollama."""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError, did_you_mean
from .registry import Context, command

SETTINGS = ("quant", "template", "converter")


@command("export", args="merged|gguf|ollama PATH [quant=f16|bf16|q8_0|f32] [template=plain] [converter=DIR]",
         summary="export the model with its adapter merged: a transformers folder, a GGUF file or an Ollama model",
         flags=(("--force", "replace an existing export at PATH"), "--name A", "--model VAR", "--tokenizer VAR",
                ("--display MODE", "auto, widget, text or none")),
         cell="none", group="adapters")
def cmd_export(ctx: Context) -> Any:
    """Export the model with its adapter merged into the weights, to folder PATH.

    Formats:

    * ``merged`` — a transformers folder: ``model.safetensors``, ``config.json``, the
      tokenizer with its chat template, ``generation_config.json`` (eos / pad ids).
      Loads with ``AutoModelForCausalLM.from_pretrained(PATH)``, no peft needed.
    * ``gguf`` — ``model-QUANT.gguf`` for llama.cpp (and LM Studio, GPT4All, …), made by
      llama.cpp's own converter; the chat template, bos / eos and the tokenizer are in
      its metadata.
    * ``ollama`` — that GGUF file and a ``Modelfile`` whose ``TEMPLATE`` reproduces the
      model's chat template (checked by rendering both), with its ``SYSTEM`` default and
      ``stop`` tokens; the line printed at the end is the ``ollama create`` to run.

    ``quant=`` (gguf, ollama): ``f16`` (default, no loss), ``bf16``, ``q8_0`` (half the
    size, nearly lossless) or ``f32``. ``template=plain`` (ollama) writes a bare
    ``{{ .Prompt }}`` template when the chat template cannot be expressed in Ollama's
    form (which is otherwise refused). ``converter=DIR`` converts with a llama.cpp
    checkout (default: ``$PEFT_MAGIC_LLAMA_CPP``, else the pinned copy that
    ``python -m peft_magic.exporting.converter`` fetches once).

    Before writing, the size the export takes and the free disk are compared (a GGUF
    export holds the merged weights too while converting); an export that does not fit
    is refused. The folder is written atomically, like ``%peft save``: a converter
    error or Ctrl-C leaves nothing at PATH. An existing PATH is replaced only with
    ``--force``. A 4/8-bit (QLoRA) base is dequantized before the merge, on a copy:
    the notebook's model is never changed. The README.md card records the base model,
    the adapter, its method and settings, its training runs and the quantization.

    Examples::

        %peft export merged exports/jokes
        %peft export gguf exports/jokes-gguf quant=q8_0
        %peft export ollama exports/jokes-ollama quant=q8_0 --force
    """
    from ..api import export

    pos = ctx.args.positionals
    if len(pos) != 2:
        example = "%peft export gguf exports/my-model quant=q8_0"
        if not pos:
            raise PeftMagicError("%peft export needs a format and a folder", f"e.g. {example}")
        if len(pos) == 1:
            raise PeftMagicError(f"%peft export {pos[0]} needs a folder to write to", f"e.g. {example}")
        raise PeftMagicError(f"unexpected '{pos[2]}' after {pos[0]} {pos[1]}", f"e.g. {example}")
    for key in ctx.settings:
        if key not in SETTINGS:
            hint = did_you_mean(key, SETTINGS)
            raise PeftMagicError(f"unknown export setting '{key}'" + (f": {hint}" if hint else ""),
                                 "the settings are quant=, template= and converter=")
    var, model = ctx.model()
    options = {k: str(v) for k, v in ctx.settings.items()}
    return export(model, pos[0], pos[1], tokenizer=ctx.tokenizer(var), name=ctx.args.flag("--name"),
                  force=bool(ctx.args.flag("--force")), display=ctx.args.flag("--display", "auto"), **options)
