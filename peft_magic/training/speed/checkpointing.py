"""``checkpointing=True``: gradient checkpointing for every method that can use it, with
what it saves and what it costs.

* **Which methods.** Every method whose forward does not depend on the attention cache:
  checkpointed layers run without a cache, so a prefix kept there (prefix tuning,
  cartridges) would be dropped. Those say so in one line before anything runs (the
  ``no_checkpointing`` behaviour); every other method trains with exactly the gradients it
  gets without checkpointing (``tests/test_speed.py`` checks each one).
* **Switching it on.** ``checkpointing=True`` is ``gradient_checkpointing=True``: the
  Trainer enables transformers' non-reentrant activation checkpointing. Plain
  transformers leaves it on after the run; here the model is put back as it was, so a
  later run without ``checkpointing=`` does not silently keep paying for it.
* **What it saves** (planned): the memory plan's activations for this run's largest batch
  with and without checkpointing (meta-device traces of the live model, as ``%peft plan``:
  on CPU they match a real step's live tensor bytes).
* **What it costs** (measured): the time the checkpointed layers spend recomputing their
  forward inside the backward pass (forward hooks on those layers, counted only while
  the backward runs), as a share of the run's step time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from ...errors import PeftMagicError
from ...fmt import fmt_bytes
from ...model.properties import is_checkpointing
from ...peft_methods.behaviour import behaviour


def requested(args: dict[str, Any]) -> bool:
    return bool(args.get("gradient_checkpointing") or args.get("activation_checkpointing"))


def check(peft_type: str, method: str, settings: dict[str, Any]) -> None:
    """One line, before a run starts, for a method that cannot train with checkpointing."""
    on = any(settings.get(k) for k in ("checkpointing", "gradient_checkpointing", "activation_checkpointing"))
    reason = behaviour(peft_type).no_checkpointing
    if on and reason:
        raise PeftMagicError(f"{method} cannot train with gradient checkpointing: {reason}",
                             "train without checkpointing=True")


@dataclass
class CheckpointingCost:
    """What gradient checkpointing saved and cost in one run (``run.checkpointing``)."""

    activations_with: int | None  # planned activation bytes with checkpointing
    activations_without: int | None  # … and without
    recompute_s: float = 0.0  # measured: time spent recomputing forwards in the backward passes
    train_s: float = 0.0  # the run's step time over the same steps
    layers: int = 0  # checkpointed layers

    @property
    def saved(self) -> int | None:
        if self.activations_with is None or self.activations_without is None:
            return None
        return self.activations_without - self.activations_with

    @property
    def recompute_share(self) -> float | None:
        return self.recompute_s / self.train_s if self.train_s > 0 else None

    def __str__(self) -> str:
        parts = []
        if self.saved is not None:
            parts.append(f"activations {fmt_bytes(self.activations_without)} → {fmt_bytes(self.activations_with)} "
                         f"(−{fmt_bytes(max(0, self.saved))}, planned)")
        if self.recompute_share is not None:
            parts.append(f"recompute {self.recompute_share:.0%} of step time")
        return " · ".join(parts) or "on"


def planned_activations(peft_model: Any, batch: int, seq: int, optim: str) -> tuple[int | None, int | None]:
    """(with, without) checkpointing: the memory plan's activations for one step."""
    from ...planning.fit import live_estimate

    out: list[int | None] = []
    for ckpt in (True, False):
        try:
            parts = live_estimate(peft_model, batch, seq, ckpt, optim)[0]
            out.append(int(parts.activations))
        except Exception:  # the plan cannot trace every model; the measured cost still shows
            out.append(None)
    return out[0], out[1]


class RecomputeMeter:
    """Times the checkpointed layers' forwards that run again inside the backward pass.

    Each checkpointed layer calls its ``_gradient_checkpointing_func`` (transformers') with
    the function to checkpoint; wrapped here, that function is timed whenever it runs
    inside the backward pass — the replay. (Module hooks cannot see it: transformers ≥ 5
    checkpoints ``forward``, not ``__call__``, and torch stops a replay early by raising
    out of it once the tensors the backward needs are back.)
    """

    def __init__(self, model: Any, accelerator: Any) -> None:
        self.model = model
        self.accelerator = accelerator
        self.in_backward = False
        self.seconds = 0.0
        self.layers = 0
        self._saved: list[tuple[Any, bool, Any]] = []  # (layer, had an instance attribute, its value)
        self._had = False
        self._orig_backward: Any = None

    def install(self) -> None:
        """After the Trainer switched checkpointing on (``on_train_begin``)."""
        try:  # transformers ≥ 4.52: the repeated blocks that checkpoint themselves
            from transformers.modeling_layers import GradientCheckpointingLayer as Layer
        except ImportError:
            Layer = object
        for m in self.model.modules():
            func = getattr(m, "_gradient_checkpointing_func", None)
            if getattr(m, "gradient_checkpointing", False) is True and callable(func) and isinstance(m, Layer):
                self._saved.append((m, "_gradient_checkpointing_func" in m.__dict__,
                                    m.__dict__.get("_gradient_checkpointing_func")))
                m._gradient_checkpointing_func = self._timing(func)
                self.layers += 1
        orig = self.accelerator.backward
        meter = self

        def backward(*args: Any, **kwargs: Any) -> Any:
            meter.in_backward = True
            try:
                return orig(*args, **kwargs)
            finally:
                meter.in_backward = False

        self._had = "backward" in self.accelerator.__dict__
        self._orig_backward = self.accelerator.__dict__.get("backward")
        self.accelerator.backward = backward

    def _timing(self, checkpoint: Any) -> Any:
        meter = self

        def checkpointed(function: Any, *args: Any, **kwargs: Any) -> Any:
            def replayed(*a: Any, **k: Any) -> Any:
                if not meter.in_backward:
                    return function(*a, **k)  # the first, ordinary forward
                t0 = time.perf_counter()
                try:
                    return function(*a, **k)
                finally:
                    meter.seconds += time.perf_counter() - t0

            return checkpoint(replayed, *args, **kwargs)

        return checkpointed

    def uninstall(self) -> None:
        for m, had, value in self._saved:
            with contextlib.suppress(Exception):
                if had:
                    m._gradient_checkpointing_func = value
                else:
                    del m._gradient_checkpointing_func
        self._saved.clear()
        with contextlib.suppress(Exception):
            if self._had:
                self.accelerator.backward = self._orig_backward
            else:
                del self.accelerator.backward


class Restore:
    """Put the model's checkpointing back as it was before the run (the Trainer leaves it on)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.was = is_checkpointing(base)
        self.hooked = hasattr(base, "_require_grads_hook")

    def __call__(self) -> None:
        if self.was or not is_checkpointing(self.base):
            return
        with contextlib.suppress(Exception):
            disable = getattr(self.base, "activation_checkpointing_disable", None) or \
                self.base.gradient_checkpointing_disable
            disable()
        if not self.hooked and hasattr(self.base, "_require_grads_hook"):
            with contextlib.suppress(Exception):
                self.base.disable_input_require_grads()
