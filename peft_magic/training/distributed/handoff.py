"""The kernel → workers folder, without pickle, and the trained adapter back, all or nothing.

Each launch gets a fresh temporary folder::

    settings.json            the training settings, the model's source, the run's identity (JSON)
    adapter/                 the adapter's config (peft's JSON) and its *current* tensors (safetensors),
                             so training continues from the kernel's state
    train/  eval/            the tokenized examples (Arrow, written by ``datasets``)
    result/                  written by rank 0 at the end: the trained adapter, the same way (with
                             sharded strategies: peft's saved form, gathered by the Trainer)
    rank0.log, launcher.log  each worker's stderr and torchrun's output (for the one-line fault report)

The base model is *not* copied when the workers can load it themselves: a built-in name,
a folder or a hub id that ``%peft load`` read, with its dtype and 4-bit / 8-bit setting.
A model that exists only in the kernel (built from a config, merged with an adapter, or
loaded some other way) is written once — its base weights, without the adapter layers —
to a temporary folder that later runs of the same model reuse; the run says so and how big.

Loading the result back checks every tensor's name and shape against the kernel's adapter
first; only a complete match is copied in, so a failed or partial result leaves the
notebook's model exactly as it was before the cell.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ... import peft_view, stack
from ...errors import PeftMagicError, first_line
from ...fmt import fmt_bytes
from ...model.properties import is_checkpointing, main_dtype, quantized_bits
from ...state import state_for
from ..checkpoints import run_record

SETTINGS = "settings.json"
ADAPTER_FILE = "adapter_model.safetensors"  # peft's saved form (sharded strategies: the Trainer's save_model)
TENSORS_FILE = "adapter_tensors.safetensors"  # the adapter's module tensors, as they are in the model
TRAINED_CONFIG_FIELDS = ("rank_pattern",)  # config fields training changes (AdaLoRA's rank allocation)
_WRITTEN: dict[tuple[str, tuple[str, ...]], Path] = {}  # (model_id, merged adapters) → folder written once


# ----------------------------------------------------------------------------- the model's source


def _loadable_path(st: Any) -> str | None:
    """Where the workers can load the base model from themselves (None: only the kernel has it)."""
    if st is None or not st.path or st.merged:
        return None
    return st.path


def _trust_remote_code(config: Any) -> bool:
    return bool(getattr(config, "auto_map", None))


def _labels(base: Any, task: str) -> int | None:
    return int(getattr(base.config, "num_labels", 2)) if task == "SEQ_CLS" else None


def describe_source(peft_model: Any, task: str) -> str:
    """What the workers will load, in words (for ``--dry-run``)."""
    base = peft_model.get_base_model()
    st = state_for(peft_model)
    path = _loadable_path(st)
    bits = f", {st.bits}-bit" if st is not None and st.bits else ""
    if path is not None:
        return f"{st.source or path} ({main_dtype(base)}{bits}), loaded by each worker"
    size = sum(p.numel() * p.element_size() for p in base.parameters())
    return (f"the model exists only in this kernel: its base weights (~{fmt_bytes(size)}) are written once "
            f"to a temporary folder")


def _clean_state_dict(base: Any) -> dict[str, Any]:
    """The base model's own tensors, without adapter layers, under the names it was built with.

    peft wraps targeted layers (``q_proj`` → ``q_proj.base_layer`` + ``lora_A`` …) and
    copies saved modules (``original_module`` / ``modules_to_save``); a meta-device
    skeleton of the same class says which names the plain model has.
    """
    from ...model.skeleton import skeleton_of

    wanted = set(skeleton_of(base).state_dict())
    out = {}
    for key, value in base.state_dict().items():
        if ".modules_to_save." in key:
            continue
        clean = key.replace(".base_layer.", ".").replace(".original_module.", ".")
        if clean in wanted:
            out[clean] = value
    missing = wanted - set(out)
    if missing:
        raise PeftMagicError(f"cannot write this model for the workers: {len(missing)} weights have no plain "
                             f"name (e.g. {sorted(missing)[0]})", "load it with %peft load, then attach")
    return out


def _write_model(peft_model: Any, st: Any) -> tuple[Path, str]:
    """Write an in-memory model's base weights once (safetensors); (folder, the line saying so)."""
    base = peft_model.get_base_model()
    key = (st.model_id if st is not None else f"m{id(base):x}", tuple(st.merged) if st is not None else ())
    folder = _WRITTEN.get(key)
    if folder is not None and (folder / "config.json").exists():
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return folder, f"the model exists only in this kernel: using the copy written before to {folder} ({fmt_bytes(size)})"
    if quantized_bits(base):
        raise PeftMagicError("a quantized model that %peft load did not load cannot be handed to worker processes",
                             "load it with %peft load … --4bit, then attach the adapter")
    folder = Path(tempfile.mkdtemp(prefix="peft_magic_model_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # reused while the kernel lives, then gone
    state = _clean_state_dict(base)
    try:
        with stack.quiet():
            base.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    except Exception as e:
        raise PeftMagicError(f"could not write the model for the workers: {first_line(e)}") from None
    _WRITTEN[key] = folder
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return folder, f"the model exists only in this kernel: written once to {folder} ({fmt_bytes(size)})"


def model_source(peft_model: Any, task: str) -> tuple[dict[str, Any], str | None]:
    """How a worker loads the base model (JSON-able), and a line when it had to be written."""
    base = peft_model.get_base_model()
    st = state_for(peft_model)
    path, note = _loadable_path(st), None
    if path is None:
        folder, note = _write_model(peft_model, st)
        path = str(folder)
    return {"path": path, "bits": st.bits if st is not None else None, "dtype": main_dtype(base), "task": task,
            "labels": _labels(base, task), "trust_remote_code": _trust_remote_code(base.config),
            "kbit_prepared": bool(st is not None and st.kbit_prepared),
            "checkpointing": is_checkpointing(base)}, note


# ----------------------------------------------------------------------------- data


def write_examples(examples: Any, folder: Path) -> None:
    """Tokenized examples → an Arrow dataset folder (``datasets``' own format, no pickle)."""
    from datasets import Dataset
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # "Saving the dataset" is not the user's business
    try:
        Dataset.from_list(list(examples.rows)).save_to_disk(str(folder))
    finally:
        if was:
            ds_logging.enable_progress_bar()
    meta = {"shape": examples.shape, "n_raw": examples.n_raw, "label_names": examples.label_names}
    (folder / "peft_magic.json").write_text(json.dumps(meta))


def read_examples(folder: Path) -> Any:
    """The worker's side of :func:`write_examples`: the same ``Examples`` the kernel had."""
    from datasets import load_from_disk
    from datasets.utils import logging as ds_logging

    from ...tasks.data import Examples

    ds_logging.disable_progress_bar()
    meta = json.loads((folder / "peft_magic.json").read_text())
    rows = load_from_disk(str(folder)).to_list()
    return Examples(rows, meta["shape"], meta["n_raw"], meta["label_names"])


# ----------------------------------------------------------------------------- settings


def _json_checked(what: str, value: dict[str, Any]) -> dict[str, Any]:
    """Settings cross as JSON: a value that is not JSON is one line naming the setting."""
    for key, v in value.items():
        try:
            json.dumps(v, allow_nan=True)
        except (TypeError, ValueError):
            raise PeftMagicError(f"the {what} '{key}' ({type(v).__name__}) cannot be sent to worker processes",
                                 "give it as a number, text, list or dict") from None
    return value


def write(job: Any, folder: Path, *, launch: dict[str, Any], overrides: dict[str, Any], steps: int,
          port: int, token: str) -> list[str]:
    """Write everything the workers need into ``folder``; returns lines worth telling the user."""
    notes = []
    source, note = model_source(job.peft_model, job.task)
    if note:
        notes.append(note)
    write_adapter(job.peft_model, job.adapter, folder / "adapter")
    write_examples(job.examples, folder / "train")
    if job.eval_examples is not None:
        write_examples(job.eval_examples, folder / "eval")
    tok = job.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    run = job.run
    settings = {
        "version": 1, "port": port, "token": token, "launch": launch,
        "model": source, "adapter": {"name": job.adapter, "peft_type": job.peft_type, "task": job.task},
        "args": _json_checked("training setting", dict(job.args)), "overrides": _json_checked("setting", overrides),
        "total_steps": steps, "pad_id": int(pad), "has_eval": job.eval_examples is not None,
        "run": {"run_id": run.run_id, "model_id": run.model_id, "adapter": run.adapter, "method": run.method,
                "seconds": run.seconds, "tokens": run.tokens, "total_steps": run.total_steps},
        "output_dir": run.output_dir, "resume_from": job.resume_from,
        # autosave in the workers (rank 0 writes the marker): when, and the record it carries
        "autosave": None if job.autosave is None or not job.autosave.enabled else {
            "every_steps": job.autosave.every_steps, "every_seconds": job.autosave.every_seconds,
            "keep": job.autosave.keep, "record": run_record(run), "fingerprints": job.fingerprints},
    }
    (folder / SETTINGS).write_text(json.dumps(settings, indent=1))
    return notes


def read_settings(folder: Path) -> dict[str, Any]:
    return json.loads((folder / SETTINGS).read_text())


# ----------------------------------------------------------------------------- the adapter, both ways


def adapter_tensors(peft_model: Any, name: str) -> dict[str, Any]:
    """The module tensors of adapter ``name``, under the model's own names (live views, not copies).

    peft keys every adapter's parameters and buffers by its name (``lora_A.default.weight``,
    ``lora_E.default``, ``prompt_encoder.default.embedding.weight``,
    ``classifier.modules_to_save.default.weight``), so the name as a path segment picks
    exactly them. Raw module tensors — not peft's saved form — because peft saves some
    methods resized (AdaLoRA by its rank pattern), which would not fit back.
    """
    return {k: v for k, v in peft_model.state_dict().items() if name in k.split(".")}


def write_adapter(peft_model: Any, name: str, folder: Path) -> None:
    """The adapter's config (peft's JSON) and its current tensors (safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with stack.quiet():
        peft_model.peft_config[name].save_pretrained(str(folder))
    save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in adapter_tensors(peft_model, name).items()},
              str(folder / TENSORS_FILE))


def attach_from(base: Any, folder: Path, name: str) -> Any:
    """The worker's side: peft's own ``get_peft_model`` with the kernel's config, then its tensors."""
    from peft import PeftConfig, get_peft_model

    with stack.quiet():
        config = PeftConfig.from_pretrained(str(folder))
        config.inference_mode = False
        peft_model = get_peft_model(base, config, adapter_name=name)
    load_tensors(peft_model, name, folder / TENSORS_FILE, "the notebook's adapter")
    return peft_model


def load_tensors(peft_model: Any, name: str, path: Path, what: str = "the workers' adapter") -> int:
    """Copy a file of adapter tensors in, only if every name and shape matches; the number copied."""
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 — one line, the model untouched
        raise PeftMagicError(f"{what} cannot be read ({first_line(e)}); the model is as it was before this cell") from None
    want = adapter_tensors(peft_model, name)
    missing = sorted(k for k in want if k not in state)
    wrong = sorted(k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape))
    extra = sorted(k for k in state if k not in want)
    if missing or wrong or extra:
        example = (missing or wrong or extra)[0]
        raise PeftMagicError(f"{what} does not match ({len(missing)} missing, {len(wrong)} of another shape, "
                             f"{len(extra)} unknown, e.g. {example}); the model is as it was before this cell")
    with torch.no_grad():
        for k, target in want.items():
            target.copy_(state[k])
    return len(want)


def _peft_format_file(folder: Path, name: str) -> Path | None:
    """peft's saved weights (what the Trainer's ``save_model`` writes after gathering shards)."""
    for candidate in (folder / ADAPTER_FILE, folder / name / ADAPTER_FILE):
        if candidate.is_file():
            return candidate
    return None


def _trained_config(peft_model: Any, name: str, folder: Path) -> None:
    """What training changes in a config (AdaLoRA's rank pattern) comes back with the tensors."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    config = peft_model.peft_config[name]
    for key in TRAINED_CONFIG_FIELDS:
        if saved.get(key) is not None and hasattr(config, key):
            setattr(config, key, saved[key])


def load_result(peft_model: Any, name: str, folder: Path) -> int:
    """Copy the workers' trained adapter into the kernel's, only if every tensor matches.

    Returns the number of tensors copied; raises :class:`PeftMagicError` (model untouched)
    when nothing was written, or what was written is unreadable or does not match.
    """
    if (folder / TENSORS_FILE).is_file():
        n = load_tensors(peft_model, name, folder / TENSORS_FILE)
        _trained_config(peft_model, name, folder)
        return n
    path = _peft_format_file(folder, name)
    if path is None:
        raise PeftMagicError("the workers wrote no adapter; the model is as it was before this cell")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 — one line, the model untouched
        raise PeftMagicError(f"the workers' adapter cannot be read ({first_line(e)}); the model is as it was "
                             "before this cell") from None
    want = peft_view.saved_shapes(peft_model, name)
    missing = sorted(k for k in want if k not in state)
    wrong = sorted(k for k in want if k in state and tuple(state[k].shape) != want[k])
    if missing or wrong:
        example = (missing or wrong)[0]
        raise PeftMagicError(f"the workers' adapter does not match the notebook's ({len(missing)} missing, "
                             f"{len(wrong)} of another shape, e.g. {example}); the model is as it was before this cell")
    peft_view.set_adapter_state(peft_model, {k: state[k] for k in want}, name)
    return len(want)
