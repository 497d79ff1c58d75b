"""What a multi-process run asks for, whether this machine can run it, and the configs.

A request is ``--processes N`` (CPU processes, gloo) or ``--gpus N|all`` (one process per
GPU, nccl), with ``--strategy ddp|fsdp|deepspeed`` (ddp by default) and ``--zero 2|3`` for
DeepSpeed. Anything this machine cannot run — FSDP or DeepSpeed without CUDA, DeepSpeed
not installed, more GPUs than exist, a 4-bit model under a sharding strategy — is refused
here, in one line, before a process starts or a run is recorded: never a silent fall back
to something else (the Trainer on CPU would quietly train FSDP in one process).

The configs are data (``fsdp_arguments``, ``deepspeed_config``), generated from the model
and shown by ``--dry-run``:

* **fsdp** — FULL_SHARD (FSDP2's ``reshard_after_forward``), wrapped per transformer block
  (the model's ``_no_split_modules``, i.e. the decoder layer class), full state dict on save
  so rank 0 can write the adapter;
* **deepspeed** — ZeRO-2 (optimizer states and gradients sharded) or ZeRO-3 (weights too,
  gathered in 16 bit on save), every batch / precision / clipping value ``"auto"`` so the
  Trainer fills it from the same settings a single-process run uses.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import PeftMagicError, did_you_mean

STRATEGIES = ("ddp", "fsdp", "deepspeed")
ZERO_STAGES = (2, 3)
#: seconds without a step (or, before training, without any sign of life) before a worker counts as stalled
DEFAULT_STALL_S = 600.0


@dataclass
class LaunchSpec:
    """How many worker processes, on what, with which strategy."""

    processes: int
    device: str  # "cpu" | "cuda"
    strategy: str = "ddp"
    zero: int | None = None  # DeepSpeed ZeRO stage
    stall_s: float = DEFAULT_STALL_S
    gpu_ids: list[int] = field(default_factory=list)  # CUDA device indices, one per process
    problem: str | None = None  # why this machine cannot run it (only kept for --dry-run)

    @property
    def backend(self) -> str:
        return "gloo" if self.device == "cpu" else "nccl"

    def describe(self) -> str:
        """``2 processes on CPU (gloo), ddp`` / ``4 GPUs (nccl), deepspeed ZeRO-3``."""
        where = (f"{self.processes} process{'es' if self.processes != 1 else ''} on CPU" if self.device == "cpu"
                 else f"{self.processes} GPU{'s' if self.processes != 1 else ''} ({', '.join(f'cuda:{i}' for i in self.gpu_ids)})")
        strat = f"deepspeed ZeRO-{self.zero}" if self.strategy == "deepspeed" else self.strategy
        return f"{where}, {self.backend}, {strat}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("problem")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LaunchSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def same_shape(self, other: LaunchSpec) -> bool:
        return (self.processes, self.device, self.strategy, self.zero) == (
            other.processes, other.device, other.strategy, other.zero)


def _positive_int(flag: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise PeftMagicError(f"{flag} must be a whole number, got {value!r}") from None
    if n < 1 or (isinstance(value, float) and value != n):
        raise PeftMagicError(f"{flag} must be a whole number ≥ 1, got {value!r}")
    return n


def cuda_count() -> int:
    """CUDA devices this process can see (0 without CUDA; never initialises a context)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _visible_ids(n: int) -> list[int]:
    """Device indices for ``n`` processes: the first ``n`` the kernel can see."""
    return list(range(n))


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def machine_problem(spec: LaunchSpec, bits: int | None = None) -> str | None:
    """Why this machine (or this model) cannot run ``spec``; ``None`` when it can."""
    if os.name != "posix":
        return "multi-process training runs on Linux and macOS (process groups, torchrun's gloo / nccl)"
    if spec.strategy == "deepspeed" and not deepspeed_installed():
        return ("--strategy deepspeed: deepspeed is not installed (pip install deepspeed); nothing else is "
                "used in its place")
    if spec.device == "cpu" and spec.strategy != "ddp":
        return (f"--strategy {spec.strategy} needs CUDA GPUs (--gpus N): on CPU the Trainer would silently train "
                f"it in one process; use --strategy ddp with --processes")
    if spec.device == "cuda":
        have = cuda_count()
        if have == 0:
            return "--gpus: this machine has no CUDA GPU; --processes N trains on CPU processes (gloo)"
        if spec.processes > have:
            return f"--gpus {spec.processes}: this machine has {have} GPU{'s' if have != 1 else ''}"
    if bits and spec.strategy != "ddp":
        return f"a {bits}-bit model trains with --strategy ddp here (FSDP / ZeRO cannot shard bitsandbytes layers)"
    return None


def request(*, processes: Any = None, gpus: Any = None, strategy: str | None = None, zero: Any = None,
            stall: Any = None, bits: int | None = None, check: bool = True) -> LaunchSpec | None:
    """The launch a ``%peft train`` asks for (``None``: train in this process).

    ``check`` refuses what this machine cannot run (the normal case); ``--dry-run`` passes
    ``False`` and gets the reason in ``spec.problem`` instead, so a config for a GPU machine
    can be looked at from a laptop.
    """
    if processes is None and gpus is None:
        if strategy is not None or zero is not None or stall is not None:
            flag = "--strategy" if strategy is not None else "--zero" if zero is not None else "--stall"
            raise PeftMagicError(f"{flag} is for multi-process training", "add --processes N (CPU) or --gpus N|all")
        return None
    if processes is not None and gpus is not None:
        raise PeftMagicError("give --processes N (CPU processes) or --gpus N (one process per GPU), not both")
    strat = (strategy or "ddp").lower()
    if strat not in STRATEGIES:
        hint = did_you_mean(strat, STRATEGIES)
        raise PeftMagicError(f"unknown strategy '{strategy}'" + (f": {hint}" if hint else ""),
                             "--strategy ddp, fsdp or deepspeed")
    stage = None
    if zero is not None:
        if strat != "deepspeed":
            raise PeftMagicError("--zero is DeepSpeed's stage", "use it with --strategy deepspeed")
        stage = _positive_int("--zero", zero)
        if stage not in ZERO_STAGES:
            raise PeftMagicError(f"--zero {stage}: ZeRO stage 2 or 3")
    elif strat == "deepspeed":
        stage = 2
    stall_s = DEFAULT_STALL_S
    if stall is not None:
        try:
            stall_s = float(stall)
        except (TypeError, ValueError):
            raise PeftMagicError(f"--stall must be seconds, got {stall!r}") from None
        if not stall_s > 0:
            raise PeftMagicError(f"--stall must be > 0 seconds, got {stall!r}")
    if processes is not None:
        spec = LaunchSpec(_positive_int("--processes", processes), "cpu", strat, stage, stall_s)
    else:
        if isinstance(gpus, str) and gpus.lower() == "all":
            n = cuda_count()
            if n == 0 and check:
                raise PeftMagicError("--gpus all: this machine has no CUDA GPU",
                                     "--processes N trains on CPU processes (gloo)")
            n = max(n, 1)
        else:
            n = _positive_int("--gpus", gpus)
        spec = LaunchSpec(n, "cuda", strat, stage, stall_s, _visible_ids(n))
    spec.problem = machine_problem(spec, bits)
    if check and spec.problem:
        raise PeftMagicError(spec.problem)
    return spec


# ----------------------------------------------------------------------------- configs


def block_class(model: Any) -> str:
    """The transformer block's class name: FSDP's wrap unit.

    transformers names it in ``_no_split_modules`` (the unit ``device_map`` never splits);
    failing that, the class of the repeated layers (the longest ``ModuleList``).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    present = {type(m).__name__ for m in base.modules()}
    for name in getattr(base, "_no_split_modules", None) or []:
        if name in present:
            return name
    lists = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise PeftMagicError(f"cannot find the repeated blocks of {type(base).__name__} to shard with FSDP",
                             "use --strategy ddp or deepspeed")
    return type(max(lists, key=len)[0]).__name__


def fsdp_arguments(block: str, checkpointing: bool = False) -> dict[str, Any]:
    """``TrainingArguments`` fields for FSDP: FULL_SHARD, one unit per transformer block."""
    return {"fsdp": True, "fsdp_config": {
        "version": 2,
        "reshard_after_forward": True,  # FULL_SHARD: parameters re-sharded after each block's forward
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": [block],
        "state_dict_type": "FULL_STATE_DICT",  # rank 0 writes the whole adapter on save
        "cpu_ram_efficient_loading": False,
        "activation_checkpointing": bool(checkpointing),
    }}


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed ZeRO config whose sizes the Trainer fills in (``"auto"``)."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_scatter": True, "reduce_bucket_size": "auto"}
    if stage == 2:
        zero["allgather_bucket_size"] = 5e8
    else:
        zero.update(stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                    stage3_max_live_parameters=1e9, stage3_max_reuse_distance=1e9,
                    stage3_gather_16bit_weights_on_model_save=True)
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto", "steps_per_print": 1_000_000, "wall_clock_breakdown": False}


def strategy_config(spec: LaunchSpec, model: Any, checkpointing: bool = False) -> dict[str, Any] | None:
    """The generated config of a sharding strategy (``None`` for ddp), as data."""
    if spec.strategy == "fsdp":
        return fsdp_arguments(block_class(model), checkpointing)["fsdp_config"]
    if spec.strategy == "deepspeed":
        return deepspeed_config(spec.zero or 2)
    return None


def trainer_overrides(spec: LaunchSpec, model: Any, checkpointing: bool = False) -> dict[str, Any]:
    """The ``TrainingArguments`` a worker adds for ``spec`` (the user's own settings win)."""
    out: dict[str, Any] = {"ddp_backend": spec.backend, "ddp_timeout": 1800}
    if spec.strategy == "ddp":
        # adapters use every trainable parameter in forward; looking for unused ones costs a graph walk a step
        out["ddp_find_unused_parameters"] = False
    elif spec.strategy == "fsdp":
        out.update(fsdp_arguments(block_class(model), checkpointing))
    else:
        out["deepspeed"] = deepspeed_config(spec.zero or 2)
    return out


def threads_per_process(spec: LaunchSpec) -> int:
    """CPU threads each worker may use: the machine's cores shared out (at least one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // spec.processes)
