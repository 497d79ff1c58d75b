"""Adapter folders on disk: atomic writes and safe reading (the card is in ``card.py``).

Why atomic: an adapter is several files (config, weights, card) that only make sense
together. A save that dies halfway (kernel killed, disk full, Ctrl-C during a long
write) must leave either the previous adapter or the new one at the target path,
never a mix of both and never a half-written weights file. So everything is written
into a temporary folder *beside* the target (same file system, so a rename is atomic),
every file is fsync'ed, and only then is the folder renamed into place. Replacing an
existing folder (``--force``) swaps the two folders in one step with Linux'
``renameat2(RENAME_EXCHANGE)``; where that call does not exist, the old folder is first
renamed aside and put back by the next save or load if the process died in between.

Why careful reading: an adapter folder may come from anywhere. Only safetensors weights
are read by default (a pickle ``.bin`` file can run arbitrary code when loaded), and
nothing in the folder is imported or executed; the config is plain JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import PeftMagicError
from .card import card_metadata

TMP_TAG = ".peft-tmp-"
OLD_TAG = ".peft-old-"
CONFIG_NAME = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"


# ----------------------------------------------------------------------------- atomic folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_pid(name: str, tag: str) -> int | None:
    try:
        return int(name.split(tag, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def recover(target: Path) -> None:
    """Tidy what an interrupted save left beside ``target``.

    A temporary folder of a process that no longer runs is deleted (it never became the
    adapter). An aside-renamed old folder (the fallback swap) is put back if the target
    is missing, else deleted.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    prefix_tmp = f".{target.name}{TMP_TAG}"
    prefix_old = f".{target.name}{OLD_TAG}"
    for entry in parent.iterdir():
        if entry.name.startswith(prefix_tmp):
            pid = _tmp_pid(entry.name, TMP_TAG)
            if pid is None or (pid != os.getpid() and not _pid_alive(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(prefix_old):
            pid = _tmp_pid(entry.name, OLD_TAG)
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                continue
            if not target.exists():
                with contextlib.suppress(OSError):
                    os.rename(entry, target)
                    continue
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk (the rename must not outrun the data)."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_atomically(target: Path, fill: Callable[[Path], None], *, force: bool) -> None:
    """Create folder ``target`` with what ``fill(tmp_folder)`` writes, atomically.

    ``fill`` writes into a fresh temporary folder beside ``target``; the folder is
    fsync'ed and renamed into place only when ``fill`` returned. With ``force`` an
    existing ``target`` is swapped out in one step and then deleted; without it an
    existing target is an error (checked before anything is written).
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    if target.exists() and not force:
        raise PeftMagicError(f"{target} already exists", "pass --force (force=True) to replace it")
    if target.exists() and not target.is_dir():
        raise PeftMagicError(f"{target} is a file, not an adapter folder", "choose another path")
    if target.exists():
        _check_replaceable(target)
    tmp = parent / f".{target.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if not target.exists():
            try:
                os.rename(tmp, target)  # atomic; fails on a non-empty folder that appeared meanwhile
            except OSError:
                if not force:
                    raise PeftMagicError(f"{target} already exists", "pass --force to replace it") from None
                _swap_in(tmp, target)
        else:
            _swap_in(tmp, target)
        _fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(target: Path) -> None:
    """``--force`` replaces a saved adapter or model (or a GGUF / Ollama export: a folder with
    peft_magic's card), never an arbitrary folder (a typo'd ``%peft save . --force`` must not
    delete the notebook's directory)."""
    names = {p.name for p in target.iterdir()}
    if not names or CONFIG_NAME in names or "config.json" in names:
        return
    if "peft_magic" in (card_metadata(target).get("tags") or []):
        return
    raise PeftMagicError(f"{target} is not an adapter or model folder (no {CONFIG_NAME}); refusing to replace it",
                         "choose a new folder, or an adapter folder saved before")


def _swap_in(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target`` and delete the old ``target``; never a moment without one."""
    if _exchange(tmp, target):
        _fsync_dir(target.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old adapter
        return
    old = target.parent / f".{target.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, old)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- reading


def find_weights(folder: Path, allow_pickle: bool) -> Path:
    """The adapter's weights file; a pickle file only with ``allow_pickle``."""
    safe = folder / SAFE_WEIGHTS
    if safe.is_file():
        return safe
    pickle = folder / PICKLE_WEIGHTS
    if pickle.is_file():
        if not allow_pickle:
            raise PeftMagicError(
                f"{folder} holds a pickle-based {PICKLE_WEIGHTS}, and loading a pickle can run arbitrary code; "
                "refused", "load it only if you trust where it came from: --allow-pickle (allow_pickle=True)")
        return pickle
    raise PeftMagicError(f"no adapter weights in {folder} (expected {SAFE_WEIGHTS})",
                         "give the folder that %peft save (or save_pretrained) wrote")


def read_config(folder: Path) -> dict[str, Any]:
    """The adapter config as plain JSON (nothing executed)."""
    if not folder.exists():
        raise PeftMagicError(f"no such folder: {folder}", "give a folder written by %peft save or save_pretrained")
    if not folder.is_dir():
        raise PeftMagicError(f"{folder} is a file, not an adapter folder")
    path = folder / CONFIG_NAME
    if not path.is_file():
        subs = sorted(p.name for p in folder.iterdir() if (p / CONFIG_NAME).is_file())
        if subs:
            raise PeftMagicError(f"{folder} holds adapters in sub-folders: {', '.join(subs)}",
                                 f"load one of them, e.g. {folder / subs[0]}")
        raise PeftMagicError(f"{folder} has no {CONFIG_NAME}: not a peft adapter folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PeftMagicError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or "peft_type" not in data:
        raise PeftMagicError(f"{path} is not a peft adapter config (no peft_type)")
    return data


def tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a weights file, without loading them.

    Safetensors: read from the header. A pickle file (only reached with --allow-pickle)
    is read with ``weights_only=True``.
    """
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise PeftMagicError(f"{weights} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    import torch

    sd = torch.load(str(weights), map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in sd.items()}


def iter_files(folder: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            yield Path(dirpath) / f
