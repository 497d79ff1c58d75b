"""Engine → faces event stream, with the one throttle that every display shares.

Data flows one way: the engine emits events (training progress, memory, adapter
changes); renderers (widgets, HTML, text) and the JupyterLab comm subscribe. Throttling
lives here, where events are emitted, not in each renderer: a training loop may report
every step, but subscribers see at most ``rate`` updates a second plus every event that
matters (start, end, error), so a display never costs the loop anything measurable.

Event kinds (``Event.kind``) and their ``data`` keys:

``run_start``   run_id, model_id, adapter, method, total_steps, settings, resumed_from, warnings, task,
                data (what the data is: count, shape, cuts)
``progress``    run_id, model_id, adapter, step, total_steps, epoch, loss, loss_smooth, lr,
                tokens_per_s, elapsed_s, eta_s, memory (a ``memory.MemoryReading.as_dict()``)
``eval``        run_id, step, eval_loss, metrics (the task's: loss, perplexity, accuracy, f1, …)
``speed``       run_id and any of: compile ("compiling" | "compiled"), compile_seconds,
                compile_steps, steady_tokens_per_s; checkpointing (activations_with,
                activations_without, recompute_share, text) — ``training/speed.py``
``run_end``     run_id, model_id, adapter, status ("completed" | "interrupted" | "oom" |
                "error"), step, total_steps, loss, elapsed_s, peak_memory, message
``adapter``     model_id, adapter, method, action ("attached" | "replaced" | "deleted" |
                "activated" | "loaded" | "merged" | "off" | "on"), trainable, total
``memory``      model_id, memory, live (readings during / after a ``%%peft watch`` cell; ``live``
                while it runs, throttled like progress)
``export``      format, quant, path, model_id, stage ("start" | "merging" | "converting" | "writing" |
                "done" | "failed" | "interrupted"), fraction (0–1; the converter's part throttled like
                progress), elapsed_s, and adapter / bytes / seconds / message where they apply

Subscribers are called synchronously and must be quick; an exception in one is logged
and swallowed so that a broken display can never break training.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One thing that happened in the engine."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Subscriber = Callable[[Event], None]

_subscribers: list[Subscriber] = []
_lock = threading.Lock()


def subscribe(fn: Subscriber) -> Callable[[], None]:
    """Call ``fn(event)`` for every emitted event; returns a function that unsubscribes."""
    with _lock:
        _subscribers.append(fn)

    def unsubscribe() -> None:
        with _lock:
            if fn in _subscribers:
                _subscribers.remove(fn)

    return unsubscribe


def emit(kind: str, **data: Any) -> Event:
    """Send an event to every subscriber now (unthrottled; see :class:`Throttle`)."""
    event = Event(kind, data)
    with _lock:
        subs = list(_subscribers)
    for fn in subs:
        try:
            fn(event)
        except Exception:  # a display must never break the engine
            log.debug("event subscriber %r failed", fn, exc_info=True)
    return event


class Throttle:
    """Let through at most ``rate`` events a second, always the latest one.

    ``offer(kind, **data)`` emits immediately if enough time has passed since the last
    emission, otherwise it keeps the event as pending; ``flush()`` emits the pending one
    (call it at the end so the final state is never lost). The clock check is one
    ``time.monotonic()`` call, so offering every step is free.
    """

    def __init__(self, rate: float = 4.0) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._last = 0.0
        self._pending: tuple[str, dict[str, Any]] | None = None
        self.emitted = 0

    def due(self) -> bool:
        """Whether an offer now would be emitted: lets a caller skip *building* the event
        (reading memory, formatting) on the steps where it would be dropped anyway."""
        return time.monotonic() - self._last >= self.interval

    def offer(self, kind: str, **data: Any) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._pending = None
            self.emitted += 1
            emit(kind, **data)
            return True
        self._pending = (kind, data)
        return False

    def flush(self) -> None:
        if self._pending is not None:
            kind, data = self._pending
            self._pending = None
            self._last = time.monotonic()
            self.emitted += 1
            emit(kind, **data)
