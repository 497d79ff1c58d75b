"""Session state: what peft_magic knows about each model in the kernel, and the runs.

Why one shared state: the magics, the panel, the status bar and plain Python calls must
agree on which adapters a model has, which settings each was attached with (to make
re-running a cell a no-op), and what training has happened. The state is keyed by the
*base* model object (the one ``from_pretrained`` returned, which peft modifies in place),
so passing either the base model or its ``PeftModel`` finds the same record — which is
how a model is never wrapped twice.

Records hold weak references: deleting the notebook variable frees the model.
"""

from __future__ import annotations

import itertools
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from .fmt import fmt_bytes
from .rendering import HtmlRepr


@dataclass
class AdapterRecord:
    """How an adapter was asked for: the method as typed, its explicit settings, the task."""

    name: str
    method: str  # requested name: "qlora", "lora", "prefix"
    peft_type: str  # "LORA"
    settings: dict[str, Any]  # explicit, normalised user settings (real field names)
    task: str | None

    def same_request(self, other: AdapterRecord) -> bool:
        return (self.method, self.peft_type, self.settings, self.task) == (
            other.method, other.peft_type, other.settings, other.task)


@dataclass
class ModelState:
    """peft_magic's record of one base model and its PEFT wrapper."""

    base_ref: Any  # weakref.ref to the base model
    peft_ref: Any = None  # weakref.ref to the PeftModel wrapping it, if any
    source: str | None = None  # what %peft load was given
    path: str | None = None  # where it was read from
    bits: int | None = None  # 4 / 8 when loaded through bitsandbytes
    kbit_prepared: bool = False
    adapters: dict[str, AdapterRecord] = field(default_factory=dict)
    variable: str | None = None  # notebook variable name last bound to it
    adapters_off: bool = False  # adapters switched off (%peft off)
    merged: list[str] = field(default_factory=list)  # adapters merged into the weights (%peft merge)

    @property
    def base(self) -> Any:
        return self.base_ref() if self.base_ref is not None else None

    @property
    def peft_model(self) -> Any:
        return self.peft_ref() if self.peft_ref is not None else None

    def set_peft(self, peft_model: Any) -> None:
        """Record the PeftModel wrapping the base (``None``: no wrapper any more).

        The base model holds its wrapper strongly: peft injects its layers into the base
        in place, so a base whose wrapper was dropped (``pm.attach(model, …)`` with the
        result ignored) still carries adapters, and the next attach, train or save must
        find the wrapper that owns them rather than wrap the layers a second time. The
        record itself holds only weak references, so models still die with their last
        user reference (the base ↔ wrapper cycle is collected with them)."""
        old = self.peft_model
        if old is not None and old is not peft_model:  # unwrapped, merged or replaced: never again ours
            old.__dict__[_DETACHED] = True
        if peft_model is not None:
            peft_model.__dict__.pop(_DETACHED, None)
        self.peft_ref = weakref.ref(peft_model) if peft_model is not None else None
        base = self.base
        if base is not None:
            if peft_model is None:
                base.__dict__.pop(_WRAPPER, None)
            else:
                base.__dict__[_WRAPPER] = peft_model

    @property
    def model_id(self) -> str:
        return f"m{id(self.base):x}"


_WRAPPER = "_peft_magic_wrapper"  # the attribute by which a base model keeps its PeftModel alive
_DETACHED = "_peft_magic_detached"  # set on a wrapper whose layers were taken off the base
_states: dict[int, ModelState] = {}
_lock = threading.RLock()


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (checked without importing peft)."""
    peft = sys.modules.get("peft")
    if peft is None:
        return False
    classes = tuple(c for c in (getattr(peft, "PeftModel", None), getattr(peft, "PeftMixedModel", None)) if c)
    return isinstance(model, classes)


def unwrap(model: Any) -> Any:
    """The base model under a PeftModel (the object peft modified in place)."""
    if is_peft_model(model):
        try:
            return model.get_base_model()
        except Exception:
            return model
    return model


def state_for(model: Any, create: bool = False) -> ModelState | None:
    """The record for ``model`` (base or PeftModel); created on demand when ``create``."""
    base = unwrap(model)
    key = id(base)
    with _lock:
        st = _states.get(key)
        if st is not None and st.base is not base:  # id reused after garbage collection
            st = None
            _states.pop(key, None)
        if st is None and create:
            st = ModelState(base_ref=weakref.ref(base, lambda _r, k=key: _states.pop(k, None)))
            _states[key] = st
        if (st is not None and base is not model and is_peft_model(model) and st.peft_model is not model
                and not model.__dict__.get(_DETACHED)):
            st.set_peft(model)
        return st


def peft_model_for(model: Any) -> Any:
    """The PeftModel wrapping ``model``: itself if it is one, or the one we made around it."""
    if is_peft_model(model):
        return model
    st = state_for(model)
    return st.peft_model if st is not None else None


def all_states() -> list[ModelState]:
    with _lock:
        return [s for s in _states.values() if s.base is not None]


# ----------------------------------------------------------------------------- runs


@dataclass
class Run(HtmlRepr):
    """One training run in this kernel (filled in by ``training``; read by ``%peft runs``,
    model cards and the status bar)."""

    run_id: int
    model_id: str
    adapter: str
    method: str
    settings: dict[str, Any]  # training settings as given (steps, lr, batch, …)
    total_steps: int
    status: str = "running"  # running | completed | interrupted | oom | error
    steps_done: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) as logged
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    final_loss: float | None = None
    peak_memory: int | None = None  # bytes, on the device the model trained on
    memory_kind: str | None = None  # "CUDA" | "MPS" | "RAM"
    memory_at_start: int | None = None  # the reading when the run started (its peak's baseline)
    seconds: float = 0.0
    tokens: int = 0  # real (non-padding) tokens seen
    started_at: float = 0.0  # time.time()
    message: str | None = None  # why it stopped, for interrupted / oom / error
    saved_to: list[str] = field(default_factory=list)  # folders the adapter was saved to after this run
    output_dir: str | None = None  # this run's checkpoint folder (training/checkpoints.py; --resume)
    saved_step: int | None = None  # the step of the last checkpoint written
    saved_at: float | None = None  # when it was written (time.time())
    last_lr: float | None = None
    learning_rate: float | None = None  # the rate the run trained at (the user's, or the method's default)
    warnings: list[str] = field(default_factory=list)  # e.g. "will not fit" from the memory plan
    task: str = "CAUSAL_LM"  # peft task type of the model trained
    data: str = ""  # what the data was: "120 examples · prompt → completion · 3 cut to max_len"
    eval_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, the task's metrics)
    # preference tuning (training/preference.py): the objective, and TRL's logged readouts per step
    objective: str | None = None  # "dpo" | "ipo" | "orpo" | "simpo" | "kto"; None for a supervised run
    rewards: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, chosen/rejected/margin/accuracy)
    # speed (training/speed.py): the profile (--profile), compile=True's cost, checkpointing's
    profile: Any = None  # training.profiling.Profile
    steady_tokens_per_s: float | None = None  # after the first step, without compiling steps
    compile_seconds: float | None = None  # compile=True: time the compiling steps took beyond the steady pace
    compile_steps: int = 0
    checkpointing: Any = None  # training.checkpointing.CheckpointingCost with checkpointing=True
    step_times: Any = None  # training.compiling.StepTimes: each step's seconds, tokens, whether it compiled
    loss_path: str | None = None  # which loss ran (training/loss_path.py): "fused (chunked, 25 chunks)", "standard"

    def __repr__(self) -> str:
        first = self.losses[0][1] if self.losses else None
        loss = f"loss {first:.4f} → {self.final_loss:.4f}" if first is not None and self.final_loss is not None else "no loss"
        peak = f" · peak {fmt_bytes(self.peak_memory)} {self.memory_kind or ''}".rstrip() if self.peak_memory else ""
        msg = f" — {self.message}" if self.message and self.status != "completed" else ""
        return (f"Run {self.run_id} · {self.method} '{self.adapter}'{self.objective_text()} · {self.status} "
                f"{self.steps_done}/{self.total_steps} steps · {loss} · {self.seconds:.1f} s{peak}{self.speed_text()}{msg}")

    def objective_text(self) -> str:
        """`` · DPO (margin 3.50, accuracy 100%)`` for a preference run, else empty."""
        if not self.objective:
            return ""
        last = self.rewards[-1][1] if self.rewards else {}
        parts = [f"margin {last['margin']:.2f}" if "margin" in last else "",
                 f"accuracy {last['accuracy']:.0%}" if "accuracy" in last else ""]
        shown = ", ".join(p for p in parts if p)
        return f" · {self.objective.upper()}" + (f" ({shown})" if shown else "")

    def speed_text(self) -> str:
        """`` · compiled in 41.2 s, steady 1,234 tokens/s · checkpointing: …`` (empty for a plain run)."""
        out = ""
        if self.compile_seconds is not None:
            rate = f", steady {self.steady_tokens_per_s:,.0f} tokens/s" if self.steady_tokens_per_s else ""
            out += f" · compiled in {self.compile_seconds:.1f} s{rate}"
        if self.checkpointing is not None:
            out += f" · checkpointing: {self.checkpointing}"
        return out


_runs: list[Run] = []
_run_ids = itertools.count(1)
_resume: dict[int, Any] = {}  # run_id → what ``--resume`` needs (set by training for interrupted runs)


def next_run_id() -> int:
    """A new run number, unique in this kernel."""
    with _lock:
        return next(_run_ids)


def set_resume(run_id: int, record: Any | None) -> None:
    """Remember (or, with ``None``, forget) how to resume run ``run_id``."""
    with _lock:
        if record is None:
            _resume.pop(run_id, None)
        else:
            _resume[run_id] = record


def resume_record(run_id: int) -> Any | None:
    with _lock:
        return _resume.get(run_id)


def add_run(run: Run) -> None:
    with _lock:
        _runs.append(run)


def runs() -> list[Run]:
    with _lock:
        return list(_runs)
