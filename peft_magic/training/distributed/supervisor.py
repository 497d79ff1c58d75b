"""The processes of one launch: torchrun in its own process group, watched until it ends.

``Supervisor.supervise`` starts ``torchrun`` (``python -m torch.distributed.run``, static
rendezvous on a port picked free for this launch; again on a new port when that one was
taken in between, which torchrun reports at once with EADDRINUSE) in a process group of its
own — so the notebook's stop button, which signals the kernel's group, never reaches the
workers directly, and the whole tree ends with one ``killpg`` — then relays the workers'
messages (``relay``) while it watches for the ways a launch ends: every rank ``done``, the
stop button (``stop`` to every worker; a second press ends them at once), a rank that
fails or vanishes (``diagnose``: one line with the rank, its exit code from torchrun's
report and the end of its stderr), a rank without a sign of life for ``stall_s``.
``reap`` ends whatever is left: SIGTERM to the group (stopped processes continued), then
SIGKILL, then a last look for any process run from the launch's folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...state import Run
from ..callbacks import InterruptToStop
from .channel import Listener
from .relay import Relay
from .strategies import DEFAULT_STALL_S, LaunchSpec, threads_per_process

WORKER_MODULE = "peft_magic.training.distributed.worker"
POLL_S = 0.1
PORT_TRIES = 3
FAULT_GRACE_S = 10.0  # after a fault, how long torchrun gets to stop the others and write its report
DONE_EXIT_S = 60.0  # after every rank is done, how long the processes get to exit by themselves
TERM_GRACE_S = 3.0  # SIGTERM → SIGKILL
STDERR_LINES = 3
_LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS")


@dataclass
class Outcome:
    """How a launch ended, before the kernel's model and run record are updated."""

    status: str  # completed | interrupted | oom | error | port_busy
    message: str | None = None
    checkpoint: str | None = None
    load_back: bool = False  # the workers wrote an adapter to load into the notebook's model


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(spec: LaunchSpec, port: int | str, folder: Path | str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={spec.processes}",
            "--master-addr=127.0.0.1", f"--master-port={port}", "--max-restarts=0", "-m", WORKER_MODULE, str(folder)]


def worker_env(spec: LaunchSpec) -> dict[str, str]:
    """The kernel's environment for the workers: this peft_magic first on the path, the
    cores shared out, CPU workers kept off any GPU, no stale torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    root = str(Path(__file__).resolve().parents[3])  # the folder that holds this peft_magic
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = str(threads_per_process(spec))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    if spec.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _tail(path: Path, lines: int = STDERR_LINES) -> str:
    """The last non-empty lines of a log, joined into one line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("W1", "I1"))]
    return " | ".join(kept[-lines:])


_ROOT = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
_FAILURE = re.compile(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)")


def root_cause(launcher_log: str) -> tuple[int | None, int | None]:
    """(rank, exit code) of the first failure torchrun observed, from its report."""
    m = _ROOT.search(launcher_log)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def exit_codes(launcher_log: str) -> dict[int, int]:
    """Every failed rank's exit code in torchrun's report."""
    return {int(r): int(c) for r, c in _FAILURE.findall(launcher_log)}


def _code_text(code: int) -> str:
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def diagnose(relay: Relay, launcher_log: str, folder: Path, run: Run) -> Outcome:
    """The one line for a launch that ended with a failed or vanished rank.

    The cause, most telling first: a rank out of memory; a rank that vanished without a word
    (killed, crashed — the first to go; the others then only report a broken connection);
    torchrun's own root cause; else the first failure.
    """
    root, _ = root_cause(launcher_log)
    codes = exit_codes(launcher_log)
    faults = relay.faults()
    ooms = [s for s in faults if (s.failed or {}).get("status") == "oom"]
    silent = sorted((s for s in faults if s.failed is None), key=lambda s: (s.closed_at, s.rank != root))
    if ooms or silent:
        chosen = (ooms or silent)[0]
    elif root is not None and root in relay.ranks:
        chosen = relay.ranks[root]
    else:
        chosen = faults[0] if faults else relay.quietest()
    others = relay.processes - 1
    stopped = f"the other {others} worker{'s were' if others != 1 else ' was'} stopped" if others else ""
    if chosen.failed is not None:
        status = chosen.failed.get("status") or "error"
        text = f"rank {chosen.rank}: {chosen.failed.get('message')}"
        return Outcome(status, "; ".join(x for x in (text, stopped) if x) +
                       ("" if status == "oom" else "; the model is as it was before this cell"))
    err = _tail(folder / f"rank{chosen.rank}.log")
    where = (f"at step {max(chosen.step, run.steps_done)}/{run.total_steps}" if chosen.training
             else f"while {chosen.phase}")
    code = codes.get(chosen.rank)
    exited = f"exited with code {_code_text(code)}" if code is not None else "exited (exit code unknown)"
    text = (f"rank {chosen.rank} {exited} {where}"
            + (f"; its stderr ended: {err}" if err else "; nothing on its stderr"))
    return Outcome("error", "; ".join(x for x in (text, stopped) if x) + "; the model is as it was before this cell")


class Supervisor:
    """One launch: the torchrun process group, the socket, and the loop that watches them."""

    def __init__(self, spec: LaunchSpec, run: Run, folder: Path, listener: Listener, launch: dict[str, Any],
                 interrupt: InterruptToStop, port: int | None = None) -> None:
        self.spec, self.run, self.folder, self.listener = spec, run, folder, listener
        self.launch, self.interrupt, self.first_port = launch, interrupt, port
        self.proc: subprocess.Popen | None = None
        self.relay = Relay(run, spec.processes, launch)
        self.notes: list[str] = []
        self.spawned_at: float | None = None  # time.monotonic()

    # -- processes

    def spawn(self, port: int) -> None:
        log = open(self.folder / "launcher.log", "ab")  # noqa: SIM115 — handed to the child
        try:
            self.proc = subprocess.Popen(launch_command(self.spec, port, self.folder), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=worker_env(self.spec),
                                         cwd=str(self.folder), start_new_session=True)
        finally:
            log.close()
        self.spawned_at = time.monotonic()

    def _group(self) -> list[Any]:
        """Every live process of this launch: torchrun's group, and anything run from our folder."""
        import psutil

        out = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid == os.getpid():
                    continue
                in_group = self.proc is not None and os.getpgid(p.pid) == self.proc.pid
                ours = str(self.folder) in " ".join(p.info["cmdline"] or [])
                if (in_group or ours) and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.Error, OSError):
                continue
        return out

    def reap(self) -> None:
        """End the launch's processes, whatever state they are in; leave none behind."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
            if not self._group() and self.proc.poll() is not None:
                break
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if sig == signal.SIGTERM:
                for p in self._group():  # a stopped process only acts on SIGTERM once continued
                    try:
                        p.resume()
                    except Exception:  # noqa: BLE001
                        pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self._group() or self.proc.poll() is None):
                time.sleep(0.05)
        for p in self._group():  # outside the group (it should not happen): by name of our folder
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    # -- the watch loop

    def supervise(self) -> Outcome:
        for attempt in range(PORT_TRIES):
            port = self.first_port if (attempt == 0 and self.first_port) else free_port()
            self.spawn(port)
            outcome = self._watch()
            if outcome.status != "port_busy":
                return outcome
            self.reap()
            self.notes.append(f"the rendezvous port {port} was taken; launched again on another")
            self.relay = Relay(self.run, self.spec.processes, self.launch)
        return Outcome("error", f"no free rendezvous port after {PORT_TRIES} tries")

    def _drain(self, timeout: float) -> None:
        for rank, msg in self.listener.poll(timeout):
            self.relay.handle(rank, msg)

    def _watch(self) -> Outcome:
        relay, stop_sent = self.relay, False
        try:
            while True:
                self._drain(POLL_S)
                if self.interrupt.requested and not stop_sent:
                    stop_sent = True
                    if not relay.started_training:
                        return Outcome("interrupted", "stopped before the first step: nothing was learned; the model "
                                                      "is as it was before this cell")
                    self.listener.broadcast({"t": "stop"})
                if relay.faults():
                    return self._fault()
                if relay.all_done:
                    return self._finished()
                code = self.proc.poll()
                if code is not None:
                    self._drain(0.5)
                    if relay.all_done:
                        return self._finished()
                    log = (self.folder / "launcher.log").read_text(errors="replace")
                    if relay.hellos == 0 and ("EADDRINUSE" in log or "address already in use" in log.lower()):
                        return Outcome("port_busy")
                    if relay.faults() or root_cause(log)[0] is not None:
                        return self._fault()
                    return Outcome("error", f"the launcher exited with code {code} before the workers finished: "
                                            f"{_tail(self.folder / 'launcher.log') or 'no output'}")
                stalled = self._stalled()
                if stalled is not None:
                    return stalled
        except KeyboardInterrupt:
            return Outcome("interrupted", f"stopped immediately at step {self.run.steps_done}/{self.run.total_steps} "
                                          "(second interrupt); the model is as it was before this cell")

    def _finished(self) -> Outcome:
        deadline = time.monotonic() + DONE_EXIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._drain(POLL_S)
        done = self.relay.ranks[0].done or {}
        status = done.get("status") or "completed"
        message = done.get("message") if status != "completed" else None
        return Outcome(status, message, checkpoint=done.get("checkpoint"), load_back=True)

    def _fault(self) -> Outcome:
        """A rank failed or vanished: let torchrun stop the rest and name the root cause, then say it in one line."""
        deadline = time.monotonic() + FAULT_GRACE_S
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                self._drain(POLL_S)
        except KeyboardInterrupt:
            pass
        log = (self.folder / "launcher.log").read_text(errors="replace")
        return diagnose(self.relay, log, self.folder, self.run)

    def _stalled(self) -> Outcome | None:
        """A rank with no sign of life for ``stall_s`` in training; before training (importing,
        loading the model) each phase may take up to the default limit, whatever ``--stall`` says."""
        now = time.monotonic()
        limit = {s.rank: self.spec.stall_s if s.training else max(self.spec.stall_s, DEFAULT_STALL_S)
                 for s in self.relay.ranks.values()}
        quiet = [s for s in self.relay.ranks.values() if not s.ended and now - s.last_seen > limit[s.rank]]
        if not quiet:
            return None
        import psutil

        states = []
        for s in quiet:
            try:
                st = psutil.Process(s.pid).status() if s.pid else None
            except psutil.Error:
                st = None
            states.append(f"rank {s.rank}" + (f" (process {st})" if st in ("stopped", "tracing-stop", "zombie",
                                                                              "disk-sleep") else ""))
        s0 = quiet[0]
        where = (f"after step {max(s.step for s in quiet)}/{self.run.total_steps}" if s0.training
                 else f"while {s0.phase}")
        return Outcome("error", f"no progress for {limit[s0.rank]:g} s from {', '.join(states)} {where}: "
                                f"stalled, so every worker was stopped; the model is as it was before this cell")
