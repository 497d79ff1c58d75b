"""``%peft train … --processes N / --gpus N --dry-run``: the launch, shown and not started.

What a multi-process run would do, as data with a text view: the launch command, the
environment it adds, the global batch, what the workers are handed, the ``TrainingArguments``
the strategy adds and the generated FSDP / DeepSpeed config. Nothing is written, no
process starts, no run is recorded; a strategy this machine cannot run is shown with the
reason (that is how a config for a GPU machine can be looked at from a laptop).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from ... import peft_view
from ...errors import PeftMagicError
from ...rendering import HtmlRepr
from ...state import state_for
from ..args import normalize_args
from .handoff import describe_source
from .launch import global_batch
from .strategies import LaunchSpec, request, strategy_config, trainer_overrides
from .supervisor import launch_command, worker_env

SHOWN_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM")


@dataclass
class LaunchPlan(HtmlRepr):
    """A multi-process launch as it would happen (``--dry-run``)."""

    spec: LaunchSpec
    command: list[str]
    env: dict[str, str]
    source: str
    adapter: str
    peft_type: str
    batch: int
    grad_accum: int
    global_batch: int
    overrides: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # the generated FSDP / DeepSpeed config
    problem: str | None = None

    @property
    def command_line(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(c if "<" in c else shlex.quote(c)
                                                     for c in self.command)

    def lines(self) -> list[str]:
        s = self.spec
        out = [f"Dry run (nothing started): {s.describe()}",
               f"global batch: {self.batch} per process × {s.processes} process{'es' if s.processes != 1 else ''} × "
               f"{self.grad_accum} accumulation = {self.global_batch}",
               f"launch: {self.command_line}",
               "  (PORT: a free port picked at launch; FOLDER: a temporary folder with the handoff)",
               f"model: {self.source}",
               f"adapter: '{self.adapter}' ({self.peft_type}), its current weights (safetensors) · data: tokenized "
               f"(Arrow) · settings: JSON · progress: a local socket to this kernel",
               "trainer arguments added: " + ", ".join(
                   f"{k}={v}" for k, v in self.overrides.items() if k not in ("fsdp_config", "deepspeed"))]
        if self.config is not None:
            name = "fsdp config" if s.strategy == "fsdp" else f"deepspeed config (ZeRO-{s.zero})"
            out.append(f"{name}:")
            out += ["  " + ln for ln in json.dumps(self.config, indent=2).splitlines()]
        if self.problem:
            out.append(f"this machine cannot run it: {self.problem}")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())


def dry_run(model: Any, *, adapter: str | None = None, processes: Any = None, gpus: Any = None,
            strategy: str | None = None, zero: Any = None, stall: Any = None, **settings: Any) -> LaunchPlan:
    """The launch ``train(model, …, processes=/gpus=…)`` would make, without making it."""
    from ..run import _find_peft

    pm = _find_peft(model)
    st = state_for(pm)
    spec = request(processes=processes, gpus=gpus, strategy=strategy, zero=zero, stall=stall,
                   bits=st.bits if st is not None else None, check=False)
    if spec is None:
        raise PeftMagicError("--dry-run shows a multi-process launch", "add --processes N or --gpus N|all")
    name = adapter or peft_view.active_adapter(pm)
    if name not in pm.peft_config:
        raise PeftMagicError(f"no adapter '{name}' on this model", f"adapters: {', '.join(pm.peft_config)}")
    settings.pop("data", None)
    args = normalize_args(settings)
    batch, accum, total = global_batch(args, spec)
    gc = bool(args.get("gradient_checkpointing"))
    overrides = trainer_overrides(spec, pm, gc)
    env = worker_env(spec)
    task = peft_view.task_type(pm.peft_config[name]) or "CAUSAL_LM"
    return LaunchPlan(spec, launch_command(spec, "<PORT>", "<FOLDER>"), {k: env[k] for k in SHOWN_ENV if k in env},
                      describe_source(pm, task), name, peft_view.peft_type(pm.peft_config[name]), batch, accum, total,
                      overrides, strategy_config(spec, pm, gc), spec.problem)
