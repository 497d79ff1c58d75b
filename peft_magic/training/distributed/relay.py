"""Rank messages → the same ``events.emit`` calls and ``Run`` updates a single-process run makes.

The workers run the very callbacks a single-process run uses (``training.callbacks``):
each rank's ``Progress`` computes its step, loss, lr, tokens/s and memory and emits
(throttled, at the source) into that worker's event stream, which the worker forwards here
with the changes to its run record. This module turns them back into the kernel's events:

* rank 0's events are re-emitted as they are (the loss the Trainer logs is already the mean
  over ranks), so the live display, ``%peft runs`` and the status bar need nothing new;
* ``tokens_per_s`` is summed over the ranks' latest readings, ``memory`` is the most-used
  rank's reading with every rank's use in its label, and ``ranks`` lists them all;
* ``run_start`` carries ``launch`` (processes, strategy, global batch) for the title;
* the kernel's ``Run`` gets rank 0's new losses, lr, step and seconds, and the tokens of
  every rank — the same list objects the display already draws from.

It also keeps what the supervisor needs per rank: last sign of life, phase, pid, and how
the rank ended (``done`` / ``failed`` / connection closed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ... import events
from ...fmt import fmt_bytes
from ...state import Run


@dataclass
class RankState:
    """What the kernel knows about one worker."""

    rank: int
    last_seen: float  # time.monotonic() of the last message (any message is a sign of life)
    pid: int | None = None
    phase: str = "starting"
    step: int = 0
    tokens: int = 0  # real tokens this rank has seen in this launch
    tokens_per_s: float | None = None
    memory: dict[str, Any] | None = None
    done: dict[str, Any] | None = None  # the "done" message
    failed: dict[str, Any] | None = None  # the "failed" message
    closed: bool = False  # its connection to the kernel closed
    closed_at: float = 0.0  # when (time.monotonic()): the first to go is the likeliest cause
    training: bool = False  # reached the training loop

    @property
    def ended(self) -> bool:
        return self.done is not None or self.failed is not None or self.closed


@dataclass
class Relay:
    """The kernel's view of a launch, fed one message at a time by :meth:`handle`."""

    run: Run
    processes: int
    launch: dict[str, Any]  # shown in run_start: processes, strategy, global batch …
    ranks: dict[int, RankState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = time.monotonic()
        self.ranks = {r: RankState(r, now) for r in range(self.processes)}
        self.tokens_before = self.run.tokens
        self.hellos = 0

    # -- state questions the supervisor asks

    @property
    def started_training(self) -> bool:
        return any(s.training for s in self.ranks.values())

    @property
    def all_done(self) -> bool:
        return all(s.done is not None for s in self.ranks.values())

    def faults(self) -> list[RankState]:
        """Ranks that ended without finishing: failed, or gone without a word."""
        return [s for s in self.ranks.values() if s.failed is not None or (s.closed and s.done is None)]

    def quietest(self) -> RankState:
        return min(self.ranks.values(), key=lambda s: s.last_seen)

    # -- messages

    def handle(self, rank: int, msg: dict[str, Any]) -> None:
        st = self.ranks.get(rank)
        if st is None:
            return
        kind = msg.get("t")
        if kind == "closed":
            st.closed, st.closed_at = True, time.monotonic()
            return
        st.last_seen = time.monotonic()
        if kind == "hello":
            st.pid = msg.get("pid")
            self.hellos += 1
            st.phase = "connected"
        elif kind in ("phase", "alive"):
            st.phase = msg.get("phase", st.phase)
            if "step" in msg:
                st.step = int(msg["step"])
        elif kind == "event":
            self._apply_run(st, msg.get("run") or {})
            self._event(st, msg.get("kind"), dict(msg.get("data") or {}))
        elif kind == "done":
            self._apply_run(st, msg.get("run") or {})
            st.done = msg
        elif kind == "failed":
            st.failed = msg

    def _apply_run(self, st: RankState, delta: dict[str, Any]) -> None:
        if "tokens" in delta:
            st.tokens = max(0, int(delta["tokens"]) - self.tokens_before)
            self.run.tokens = self.tokens_before + sum(s.tokens for s in self.ranks.values())
        if st.rank != 0:
            return
        run = self.run
        run.losses.extend((int(s), float(v)) for s, v in delta.get("losses", []))  # the display's own list
        run.eval_losses.extend((int(s), float(v)) for s, v in delta.get("eval_losses", []))
        for key in ("steps_done", "total_steps"):
            if delta.get(key) is not None:
                setattr(run, key, int(delta[key]))
        if delta.get("seconds") is not None:
            run.seconds = float(delta["seconds"])
        if delta.get("last_lr") is not None:
            run.last_lr = float(delta["last_lr"])
        if delta.get("loss_path"):
            run.loss_path = str(delta["loss_path"])

    def _event(self, st: RankState, kind: str | None, data: dict[str, Any]) -> None:
        if kind == "run_start":
            st.training = True
            st.phase = "training"
        if kind == "progress":
            st.step = int(data.get("step") or st.step)
            st.tokens_per_s = data.get("tokens_per_s")
            st.memory = data.get("memory")
        if st.rank != 0 or kind is None:
            return
        if kind == "run_start":
            data.update(settings=dict(self.run.settings), warnings=list(self.run.warnings), launch=dict(self.launch))
        elif kind == "progress":
            data.update(self.merged_progress())
        events.emit(kind, **data)

    def merged_progress(self) -> dict[str, Any]:
        """tokens/s summed over the ranks; memory: the most-used rank, every rank in the label."""
        ranks = [s for s in self.ranks.values() if s.memory]
        out: dict[str, Any] = {"ranks": [{"rank": s.rank, "step": s.step, "tokens_per_s": s.tokens_per_s,
                                          "memory_used": (s.memory or {}).get("used"),
                                          "memory_peak": (s.memory or {}).get("peak")}
                                         for s in self.ranks.values()]}
        rates = [s.tokens_per_s for s in self.ranks.values() if s.tokens_per_s is not None]
        if rates:
            out["tokens_per_s"] = float(sum(rates))
        if ranks:
            top = max(ranks, key=lambda s: s.memory.get("used") or 0)
            mem = dict(top.memory)
            peaks = [s.memory.get("peak") for s in ranks if s.memory.get("peak") is not None]
            if peaks:
                mem["peak"] = max(peaks)
            if len(self.ranks) > 1:
                each = ", ".join(fmt_bytes(s.memory.get("used")) for s in sorted(ranks, key=lambda s: s.rank))
                unit = "GPU" if mem.get("kind") == "CUDA" else "process"
                mem["label"] = f"{mem.get('label', '')} per {unit}, max of {len(self.ranks)} ({each})".strip()
            out["memory"] = mem
        return out

    def peak(self) -> tuple[int | None, str | None]:
        """The largest per-rank peak and its kind ("RAM" / "CUDA"), from the ranks' done messages."""
        peaks = [(s.done or {}).get("peak") for s in self.ranks.values()]
        peaks = [p for p in peaks if p]
        kinds = [(s.done or {}).get("memory_kind") for s in self.ranks.values() if (s.done or {}).get("memory_kind")]
        return (max(peaks) if peaks else None), (kinds[0] if kinds else None)
