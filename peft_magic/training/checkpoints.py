"""Autosave and resume: checkpoints that a new kernel can continue from.

Why: a run that lives only in the kernel's memory is lost when Colab disconnects, the
kernel is killed for memory or the laptop sleeps. Every run therefore writes a checkpoint
every ``save_every`` steps and, by default, every ``%config PeftMagic.autosave_minutes``
of training and at the end, into ``save_to`` (default ``checkpoints/`` beside the notebook,
one folder per adapter and run). A new kernel re-runs its cells and adds ``--resume``.

What a checkpoint holds is the Trainer's own (the adapter's trainable tensors with
``modules_to_save``, optimizer, scheduler, RNG states and ``trainer_state.json``, whose
``global_step`` is the position in the data order — the Trainer skips the batches already
seen), plus our marker, ``peft_magic_checkpoint.json``: the run record (settings, the loss
curve so far, eval metrics) and fingerprints of the data, the base model, the method's
settings and the training settings. Everything is loaded back with ``weights_only``
(no pickled code).

Atomic: the marker is written last, by rename; a checkpoint folder without it (a kill
during the write) is ignored, so the previous checkpoint stays the one to resume from.
Old checkpoints are removed by us only after the new one is complete (``keep``). Before
each write the free disk is checked; when it cannot fit, the run goes on and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import events
from ..errors import PeftMagicError
from ..fmt import fmt_bytes
from ..settings import SETTINGS

MARKER = "peft_magic_checkpoint.json"
VERSION = 1
#: settings that are ours to read here, popped before the rest reach TrainingArguments
OWN_KEYS = ("save_every", "save_to", "keep")
#: training settings whose change makes a resumed run a different run (steps may grow)
_TRAINING_KEYS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "seed",
                  "weight_decay", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "optim", "max_len",
                  "num_train_epochs", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "stride")


@dataclass
class Autosave:
    """When and where one run writes its checkpoints."""

    folder: Path  # this run's folder: checkpoint-N/ inside
    every_steps: int | None = None
    every_seconds: float | None = None
    keep: int = 2
    enabled: bool = True
    last_step: int = 0
    last_time: float = field(default_factory=time.monotonic)

    def due(self, step: int, total: int) -> bool:
        """A checkpoint now: every N steps, every so many seconds of training, and at the end."""
        if not self.enabled or step <= self.last_step:
            return False
        if step >= total:
            return True
        if self.every_steps and step - self.last_step >= self.every_steps:
            return True
        return bool(self.every_seconds) and time.monotonic() - self.last_time >= self.every_seconds


def plan(args: dict[str, Any], adapter: str, autosave: bool = True, folder: str | Path | None = None) -> Autosave:
    """Take ``save_every`` / ``save_to`` / ``keep`` out of ``args`` and plan the run's saving.

    ``folder``: the run's folder when it continues an earlier one (a resume writes on in it)."""
    every = args.pop("save_every", None)
    save_to = args.pop("save_to", None) or SETTINGS.checkpoint_dir
    keep = args.pop("keep", None) or SETTINGS.keep_checkpoints
    for key, value, low in (("save_every", every, 1), ("keep", keep, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise PeftMagicError(f"{key} must be a whole number ≥ {low}, got {value!r}")
    name = f"{adapter}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder:
        run_folder = Path(folder)
    elif autosave:
        run_folder = Path(save_to).expanduser() / name
    else:  # saves nothing unless stopped (the in-kernel resume's checkpoint): out of the user's folder
        from ..model.builtins import cache_dir

        run_folder = cache_dir().parent / "runs" / name
    # absolute: worker processes and a later kernel may start elsewhere
    run_folder = run_folder.absolute()
    minutes = float(SETTINGS.autosave_minutes or 0)
    return Autosave(run_folder, every, minutes * 60 if minutes > 0 else None, int(keep), autosave)


# ----------------------------------------------------------------------------- fingerprints


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def data_fingerprint(examples: Any, eval_examples: Any = None) -> str:
    """The tokenized rows themselves (ids and labels): the same text, tokenizer, template and
    max_len give the same fingerprint in any kernel, wherever the data came from."""
    from array import array

    h = hashlib.blake2b(digest_size=16)
    for rows in (examples, eval_examples):
        for r in rows or ():
            for key in sorted(r):
                v = r[key]
                h.update(key.encode())
                if isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v):
                    h.update(array("q", v).tobytes())
                else:
                    h.update(json.dumps(v, sort_keys=True, default=str).encode())
        h.update(b"\x01")
    return h.hexdigest()


def base_fingerprint(peft_model: Any) -> str:
    """The frozen base: its config (without where it was loaded from) and a digest of every
    frozen weight (a float64 sum and abs-sum per tensor: cheap, and any change shows)."""
    import torch

    base = peft_model.get_base_model()
    cfg = base.config.to_dict() if hasattr(base, "config") else {}
    for volatile in ("_name_or_path", "transformers_version", "use_cache", "torch_dtype", "dtype"):
        cfg.pop(volatile, None)
    sums = []
    with torch.no_grad():
        for name, p in base.named_parameters():
            if p.requires_grad or p.numel() == 0:
                continue
            t = p.detach()
            t = t.to(torch.float64) if t.dtype.is_floating_point else t.to(torch.int64)
            sums.append((name, round(float(t.sum()), 6), round(float(t.abs().sum()), 6)))
    return _digest(type(base).__name__, cfg, sums)


def _plain(v: Any) -> Any:
    """JSON-ready and the same in every kernel: sets sorted (their order follows the
    process's hash seed), enums and other objects as text."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (set, frozenset)):
        return sorted(_plain(x) for x in v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def method_settings(config: Any) -> dict[str, Any]:
    """The adapter's peft config as a plain dict, without what says where it was made."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    for volatile in ("base_model_name_or_path", "revision", "inference_mode", "runtime_config"):
        d.pop(volatile, None)
    return _plain(d)


def training_settings(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in _TRAINING_KEYS if k in args}


def fingerprints(peft_model: Any, adapter: str, examples: Any, eval_examples: Any,
                 args: dict[str, Any]) -> dict[str, Any]:
    """What a resume must find unchanged, each part named for the message that refuses it."""
    return {"data": data_fingerprint(examples, eval_examples), "base_model": base_fingerprint(peft_model),
            "method": method_settings(peft_model.peft_config[adapter]), "training": training_settings(args)}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diff = [f"{k}: {old.get(k, '–')} → {new.get(k, '–')}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diff[:4]) + (" …" if len(diff) > 4 else "")


def check(marker: dict[str, Any], now: dict[str, Any], method: str, folder: Path) -> None:
    """Refuse, in one line that names what differs, to resume a checkpoint of another run."""
    was = marker.get("fingerprints") or {}
    where = f"(checkpoint {folder})"
    if was.get("base_model") != now["base_model"]:
        raise PeftMagicError(f"cannot resume: the base model differs from the one the checkpoint trained {where}",
                             "load the same model (and --4bit / --dtype) as before, or train without --resume")
    if was.get("method") != now["method"]:
        raise PeftMagicError(f"cannot resume: {method}'s settings differ ({_changes(was.get('method', {}), now['method'])})"
                             f" {where}", "attach the adapter with the settings it had, or train without --resume")
    if was.get("data") != now["data"]:
        raise PeftMagicError(f"cannot resume: the data differs from the checkpoint's {where}",
                             "use the same data (and max_len) as the interrupted run, or train without --resume")
    if was.get("training") != now["training"]:
        raise PeftMagicError(f"cannot resume: the training settings differ "
                             f"({_changes(was.get('training', {}), now['training'])}) {where}",
                             "give the settings of the interrupted run (steps may grow), or train without --resume")


# ----------------------------------------------------------------------------- on disk


def _step(folder: Path) -> int:
    try:
        return int(folder.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def complete(run_folder: Path) -> list[Path]:
    """The run's checkpoints whose marker was written (oldest first)."""
    if not run_folder.is_dir():
        return []
    found = [p for p in run_folder.glob("checkpoint-*") if p.is_dir() and (p / MARKER).is_file() and _step(p) >= 0]
    return sorted(found, key=_step)


def read_marker(checkpoint: Path) -> dict[str, Any]:
    try:
        data = json.loads((checkpoint / MARKER).read_text())
    except (OSError, ValueError) as e:
        raise PeftMagicError(f"cannot read the checkpoint {checkpoint}: {e}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise PeftMagicError(f"{checkpoint} was written by another version of peft_magic")
    return data


def find(where: str | Path | None, adapter: str) -> Path:
    """The newest complete checkpoint to resume: ``where`` is a checkpoint, a run folder or a
    folder of runs (default: ``%config PeftMagic.checkpoint_dir``); of adapter ``adapter``."""
    root = Path(where).expanduser() if where else Path(SETTINGS.checkpoint_dir).expanduser()
    if (root / MARKER).is_file():
        return root
    candidates = complete(root) or [c for run in _run_folders(root) for c in complete(run)]
    mine = [c for c in candidates if _marker_adapter(c) == adapter]
    if not mine:
        others = sorted({a for a in (_marker_adapter(c) for c in candidates) if a})
        hint = (f"checkpoints there are of {', '.join(repr(a) for a in others)}: pass --adapter NAME"
                if others else "train without --resume to start a new run")
        raise PeftMagicError(f"no checkpoint of adapter '{adapter}' to resume in {root}", hint)
    return max(mine, key=lambda c: (c.stat().st_mtime, _step(c)))


def _run_folders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def _marker_adapter(checkpoint: Path) -> str | None:
    try:
        return json.loads((checkpoint / MARKER).read_text()).get("run", {}).get("adapter")
    except (OSError, ValueError):
        return None


def discard_incomplete(run_folder: Path) -> None:
    """Remove checkpoint folders a kill left without a marker (they would be written over)."""
    for p in run_folder.glob("checkpoint-*") if run_folder.is_dir() else ():
        if p.is_dir() and not (p / MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)


@dataclass
class DiskRun:
    """A run found on disk (``%peft runs``): perhaps of a kernel that is gone."""

    folder: str
    adapter: str
    method: str
    step: int
    total_steps: int
    status: str
    written_at: float
    resumable: bool


def on_disk(roots: list[str | Path]) -> list[DiskRun]:
    """Every run folder under ``roots`` with its newest complete checkpoint."""
    out, seen = [], set()
    for root in roots:
        for run in _run_folders(Path(root).expanduser()):
            if run.resolve() in seen:
                continue
            seen.add(run.resolve())
            done = complete(run)
            if not done:
                continue
            try:
                m = read_marker(done[-1])
            except PeftMagicError:
                continue
            r = m.get("run", {})
            out.append(DiskRun(str(run), r.get("adapter", "?"), r.get("method", "?"), int(m.get("step", 0)),
                               int(r.get("total_steps", 0)), r.get("status", "?"), float(m.get("written_at", 0)),
                               resumable=True))
    return sorted(out, key=lambda d: d.written_at)


# ----------------------------------------------------------------------------- writing


_RUN_FIELDS = ("run_id", "adapter", "method", "settings", "total_steps", "steps_done", "losses", "eval_losses",
               "eval_metrics", "seconds", "tokens", "started_at", "task", "data", "status", "warnings", "rewards")


def run_record(run: Any) -> dict[str, Any]:
    rec = {k: getattr(run, k) for k in _RUN_FIELDS}
    return json.loads(json.dumps(rec, default=str))


def restore(run: Any, marker: dict[str, Any]) -> None:
    """Put the interrupted run's history (loss curve, eval metrics, time, tokens) on ``run``."""
    rec = marker.get("run", {})
    run.losses[:] = [tuple(x) for x in rec.get("losses", [])]
    run.eval_losses[:] = [tuple(x) for x in rec.get("eval_losses", [])]
    run.eval_metrics[:] = [(s, dict(m)) for s, m in rec.get("eval_metrics", [])]
    run.rewards[:] = [(s, dict(r)) for s, r in rec.get("rewards", [])]  # a preference run's (TRL's logs)
    run.seconds = float(rec.get("seconds", 0.0))
    run.tokens = int(rec.get("tokens", 0))
    run.steps_done = int(marker.get("step", 0))
    run.saved_step, run.saved_at = run.steps_done, float(marker.get("written_at", 0.0)) or None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``path`` appears whole or not at all (a temporary file, fsynced, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def expected_bytes(peft_model: Any) -> int:
    """About what one checkpoint takes: the trainable tensors, AdamW's two moments, slack."""
    trainable = sum(p.numel() * p.element_size() for p in peft_model.parameters() if p.requires_grad)
    return int(trainable * 3.2) + (1 << 20)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def make_callback(run: Any, save: Autosave, fps: dict[str, Any], peft_model: Any, processes: int = 1) -> Any:
    """The Trainer callback that writes the autosave checkpoints and their markers."""
    from transformers import TrainerCallback

    class AutosaveCheckpoints(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            save.last_step, save.last_time = state.global_step, time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if control.should_save or not save.due(state.global_step, run.total_steps):
                return control
            need, free = expected_bytes(peft_model), _free_bytes(save.folder)
            if free is not None and free < need:
                note = (f"no checkpoint at step {state.global_step}: it needs about {fmt_bytes(need)} and "
                        f"{save.folder} has {fmt_bytes(free)} free — training goes on without it")
                run.warnings.append(note)
                events.emit("checkpoint", run_id=run.run_id, step=state.global_step, skipped=note)
                save.last_step, save.last_time = state.global_step, time.monotonic()
                return control
            control.should_save = True
            return control

        def on_save(self, args, state, control, **kw):
            save.last_step, save.last_time = state.global_step, time.monotonic()
            if not state.is_world_process_zero:
                return control
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not folder.is_dir():
                return control
            run.steps_done = state.global_step
            now = time.time()
            record = run_record(run)
            record["status"] = "completed" if state.global_step >= run.total_steps else (
                "interrupted" if run.status == "interrupted" else "stopped")  # "stopped": the kernel may be gone
            _write_json(folder / MARKER, {"version": VERSION, "step": state.global_step, "written_at": now,
                                          "processes": processes, "run": record, "fingerprints": fps})
            for old in complete(folder.parent)[:-save.keep]:
                shutil.rmtree(old, ignore_errors=True)
            run.saved_step, run.saved_at = state.global_step, now
            events.emit("checkpoint", run_id=run.run_id, step=state.global_step, path=str(folder), at=now,
                        bytes=folder_bytes(folder))
            return control

    return AutosaveCheckpoints()


def _free_bytes(folder: Path) -> int | None:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
