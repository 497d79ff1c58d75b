"""``%peft export FORMAT PATH``: the model with its adapter merged, out of the notebook.

Formats (``FORMATS``): ``merged`` (a transformers folder, loads without peft), ``gguf``
(llama.cpp's file, converted by llama.cpp's own converter) and ``ollama`` (that GGUF with
a Modelfile carrying the chat template as Ollama's ``TEMPLATE``).

Everything that can refuse is checked before a byte is written — an adapter that cannot
be merged, a missing tokenizer or converter, an architecture the converter does not
know, a chat template Ollama cannot express, an existing PATH without ``force``, a disk
without room — each as one line. Then the folder is written the way ``%peft save``
writes one (``adapter_ops.files.write_atomically``): into a temporary folder beside
PATH, renamed into place when complete, so a converter error or Ctrl-C leaves nothing
half-written at PATH (and the previous export, with ``force``, untouched). The GGUF
formats convert from a merged folder inside that temporary folder, deleted before the
rename. Progress goes out as ``export`` events (``events.py``): the live display and the
status bar draw them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from .. import stack, events
from ..adapter_ops import card, files
from ..errors import PeftMagicError, did_you_mean
from . import disk, gguf, merged, ollama
from .converter import require as require_converter
from .results import ExportResult

FORMATS = {
    "merged": "a transformers folder: safetensors, tokenizer and chat template, generation config",
    "gguf": "one GGUF file for llama.cpp, LM Studio, GPT4All … (llama.cpp's converter)",
    "ollama": "the GGUF file and a Modelfile with the chat template, for `ollama create`",
}
_ALIASES = {"hf": "merged", "transformers": "merged", "safetensors": "merged", "llama.cpp": "gguf",
            "llamacpp": "gguf"}
_MERGE_SHARE = 0.3  # of the progress bar, for the merge before a conversion


def check_format(fmt: str) -> str:
    key = str(fmt).lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        hint = did_you_mean(str(fmt), FORMATS)
        raise PeftMagicError(f"unknown export format '{fmt}'" + (f": {hint}" if hint else ""),
                             "use one of: " + ", ".join(FORMATS))
    return key


class _Progress:
    """``export`` events for one export: stages unthrottled, the converter's fraction throttled once."""

    def __init__(self, fmt: str, quant: str | None, path: Path, model_id: str | None) -> None:
        self.base = {"format": fmt, "quant": quant, "path": str(path), "model_id": model_id}
        self.throttle = events.Throttle()
        self.start = time.monotonic()

    def stage(self, stage: str, fraction: float, **more: Any) -> None:
        self.throttle.flush()
        events.emit("export", stage=stage, fraction=fraction, elapsed_s=time.monotonic() - self.start,
                    **self.base, **more)

    def converting(self, frac: float) -> None:
        self.throttle.offer("export", stage="converting", fraction=_MERGE_SHARE + (1 - _MERGE_SHARE) * frac,
                            elapsed_s=time.monotonic() - self.start, **self.base)


def _use_lines(fmt: str, gguf_name: str | None, name: str) -> list[str] | None:
    if fmt == "gguf":
        return ["```sh", f"llama-cli -m {gguf_name} -cnv", "```", "",
                f"or with transformers: `AutoModelForCausalLM.from_pretrained('PATH', gguf_file='{gguf_name}')`."]
    if fmt == "ollama":
        return ["```sh", f"ollama create {name} -f Modelfile   # in this folder", f"ollama run {name}", "```"]
    return None


def _card(src: merged.MergeSource, fmt: str, quant: str | None, conv: Any, gguf_name: str | None,
          name: str) -> tuple[str, str | None]:
    from .. import peft_view

    rows = [("exported as", {"merged": "merged transformers folder (safetensors)", "gguf": f"GGUF, {quant}",
                             "ollama": f"GGUF, {quant}, with an Ollama Modelfile"}[fmt])]
    if src.bits:
        rows.append(("quantization", f"{src.bits}-bit base (bitsandbytes), dequantized before merging: "
                                     "the exported weights are full precision"))
    if conv is not None:
        rows.append(("converter", f"llama.cpp convert_hf_to_gguf.py ({conv.origin})"))
    if src.merged_before:
        rows.append(("merged earlier", ", ".join(src.merged_before)))
    svg = card.loss_svg(src.runs)
    trainable = peft_view.adapter_params(src.peft_model, src.adapter)[0] if src.peft_model is not None else None
    text = card.model_card(
        adapter=src.adapter or (", ".join(src.merged_before) or "no adapter"), method=src.method or "merged",
        peft_type=src.peft_type or "–", base_model=src.base_name, base_class=type(src.base).__name__,
        bits=src.bits, settings=src.settings, runs=src.runs, trainable=trainable, has_curve=bool(svg), merged=True,
        model_type=getattr(getattr(src.base, "config", None), "model_type", None), extra_rows=rows,
        use=_use_lines(fmt, gguf_name, name), library="gguf" if fmt != "merged" else None)
    return text, svg


def estimate(model: Any, format: str, path: str | Path, *, quant: str | None = None, name: str | None = None,
             free_bytes: int | None = None, tokenizer: Any = None) -> disk.DiskNeeds:
    """What exporting ``model`` to ``path`` would take on disk and what is free there,
    without writing anything (the panel shows it before its button is pressed).
    Raises the one-line refusal when the adapter cannot be exported."""
    fmt = check_format(format)
    q = gguf.check_quant(quant) if fmt != "merged" else None
    src = merged.source(model, name)
    return disk.needs(fmt, src.full_bytes, src.weights, q, Path(path).expanduser(), free_bytes, tokenizer)


def export(model: Any, format: str, path: str | Path, *, tokenizer: Any = None, quant: str | None = None,
           name: str | None = None, force: bool = False, template: str = "auto", converter: str | Path | None = None,
           free_bytes: int | None = None) -> ExportResult:
    """Export ``model`` with its adapter ``name`` (default: the active one) merged, to folder ``path``.

    ``format``: ``merged``, ``gguf`` or ``ollama``; ``quant``: the GGUF type (``f16``
    default, ``bf16``, ``q8_0``, ``f32``); ``tokenizer``: the model's (its chat template
    goes with the export); ``force``: replace an existing export at ``path``;
    ``template``: ``plain`` writes a bare ``{{ .Prompt }}`` Modelfile template when the
    chat template cannot be translated; ``converter``: a llama.cpp folder to convert with
    (default: ``$PEFT_MAGIC_LLAMA_CPP``, else the fetched pinned copy); ``free_bytes``:
    check the size against this many free bytes instead of reading the disk (dry runs,
    tests). The notebook's model is not changed.
    """
    stack.ensure()
    fmt = check_format(format)
    if fmt == "merged" and quant is not None:
        raise PeftMagicError("quant= is for gguf and ollama exports", "a merged export keeps the model's dtype")
    q = gguf.check_quant(quant) if fmt != "merged" else None
    target = Path(path).expanduser()
    src = merged.source(model, name)
    if tokenizer is None:
        raise PeftMagicError("the export needs the model's tokenizer (it goes with the model, with its chat template)",
                             "pass tokenizer=… (the magic finds `tokenizer` or VAR_tokenizer; --tokenizer VAR)")
    conv = None
    tr = None
    if fmt != "merged":
        conv = require_converter(converter)
        gguf.check_requirements()
        gguf.check_architecture(conv, src.architecture)
    if fmt == "ollama":
        tr = ollama.translate(tokenizer, template)
    elif template != "auto":
        raise PeftMagicError("template= is for ollama exports")
    if target.exists() and not force:
        raise PeftMagicError(f"{target} already exists: nothing was written", "pass --force (force=True) to replace it")
    what = fmt if fmt == "merged" else f"{fmt} {q}"
    need = disk.needs(fmt, src.full_bytes, src.weights, q, target, free_bytes, tokenizer)
    disk.check(need, what)

    gguf_name = f"model-{q}.gguf" if q else None
    oname = ollama.ollama_name(target.name)
    progress = _Progress(fmt, q, target, _model_id(model))
    notes: list[str] = []
    checks: list[str] = []
    start = time.monotonic()

    def fill(tmp: Path) -> None:
        progress.stage("merging", 0.0, adapter=src.adapter, bytes=need.final)
        if fmt == "merged":
            notes.extend(merged.write(src, tmp, tokenizer))
            progress.stage("writing", 0.95)
        else:
            work = tmp / ".merged"
            notes.extend(merged.write(src, work, tokenizer))
            progress.stage("converting", _MERGE_SHARE)
            log = gguf.convert(conv, work, tmp / gguf_name, q, model_name=target.name, on_progress=progress.converting)
            shutil.rmtree(work)
            checks.extend(_what_it_wrote(log, tokenizer))
            if tr is not None:
                about = f"{src.adapter or 'model'} ({src.method or 'merged'}) on {src.base_name}, exported by peft_magic"
                (tmp / "Modelfile").write_text(ollama.modelfile(gguf_name, tr, about=about, name=oname))
                notes.extend(tr.notes)
                checks.append(f"Modelfile TEMPLATE ({tr.family}) renders the chat template's exact text"
                              if tr.family not in ("plain", "none") else "Modelfile TEMPLATE is {{ .Prompt }}")
        text, svg = _card(src, fmt, q, conv, gguf_name, oname)
        (tmp / card.CARD_NAME).write_text(text)
        if svg:
            (tmp / card.CURVE_NAME).write_text(svg)

    checks.append(f"room on disk: {need.line()}")
    progress.stage("start", 0.0, adapter=src.adapter, disk=need.line())
    try:
        files.write_atomically(target, fill, force=force)
    except KeyboardInterrupt:
        progress.stage("interrupted", 0.0, message="interrupted: nothing was written")
        raise
    except PeftMagicError as e:
        progress.stage("failed", 0.0, message=str(e))
        raise
    except Exception as e:
        progress.stage("failed", 0.0, message=str(e))
        raise PeftMagicError(f"the export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                             "nothing was written") from e
    seconds = time.monotonic() - start
    written = sorted((str(p.relative_to(target)), p.stat().st_size) for p in files.iter_files(target))
    progress.stage("done", 1.0, bytes=sum(s for _, s in written), seconds=seconds)
    next_step = None
    if fmt == "ollama":
        next_step = f"cd {target} && ollama create {oname} -f Modelfile && ollama run {oname}"
    elif fmt == "gguf":
        next_step = f"llama-cli -m {target / gguf_name} -cnv"
    return ExportResult(model, fmt, str(target), q, seconds, written, notes, checks, next_step)


def _model_id(model: Any) -> str | None:
    from ..state import state_for

    st = state_for(model)
    return st.model_id if st is not None else None


def _what_it_wrote(log: gguf.ConvertLog, tokenizer: Any) -> list[str]:
    """What the converter reports having put in the GGUF metadata (from its log)."""
    out = []
    if log.chat_template:
        out.append("the GGUF holds the chat template")
    elif getattr(tokenizer, "chat_template", None):
        out.append("warning: the converter did not write the chat template into the GGUF")
    ids = {k: v for k, v in log.special.items() if k in ("bos", "eos", "pad")}
    if ids:
        names = ", ".join(f"{k} {tokenizer.convert_ids_to_tokens(v)}" for k, v in ids.items())
        out.append(f"special tokens in the GGUF: {names}")
    return out
