"""Where a planned run would happen: a named GPU, or the device the kernel sees.

The target fixes what a plan is checked against (bytes available), the training dtype
there, and the attention kernel torch would pick (which decides how much attention
memory a step needs).
"""

from __future__ import annotations

from typing import Any

from ..fmt import fmt_bytes
from ..memory import device_of
from ..model.properties import dtype_name, main_dtype
from .gpus import gpu_spec
from .results import Target
from .trace import attention_kernel

MIB = 1024**2
#: the CUDA context and kernel images live outside torch's allocator; ~0.3–0.6 GB in practice
CUDA_CONTEXT = 512 * MIB


def _named_gpu(gpu: str, want: str, live: Any, attn: str | None) -> Target:
    spec = gpu_spec(gpu)
    d = want or (main_dtype(live) if live is not None and main_dtype(live) != "float32" else spec.dtype)
    if d == "bfloat16" and not spec.bf16:
        d = "float16"
    kernel = "eager" if attn == "eager" else ("flash" if spec.flash and d != "float32" else "efficient")
    return Target("cuda", spec.label, spec.memory, d, kernel, context=CUDA_CONTEXT, named=True,
                  device="cuda", detail="card total as the driver reports it")


def _local_cuda(dev: str | None, want: str, live: Any, attn: str | None) -> Target:
    import torch

    idx = int(dev.split(":")[1]) if dev and ":" in dev else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(idx)
    cached = torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx)
    d = want or (main_dtype(live) if live is not None else
                 ("bfloat16" if torch.cuda.is_bf16_supported() else "float16"))
    major = torch.cuda.get_device_capability(idx)[0]
    kernel = "eager" if attn == "eager" else ("flash" if major >= 8 and d != "float32" else "efficient")
    return Target("cuda", f"cuda:{idx} ({fmt_bytes(total)})", free + cached, d, kernel, device=f"cuda:{idx}",
                  detail=f"free now of {fmt_bytes(total)}")


def _mps(want: str, live: Any, attn: str | None) -> Target:
    import torch

    try:
        cap = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    except Exception:
        cap = None
    d = want or (main_dtype(live) if live is not None else "float32")
    return Target("mps", "Apple MPS", cap, d, "eager" if attn == "eager" else "math", device="mps",
                  detail="recommended maximum minus what is allocated")


def _cpu(want: str, live: Any, attn: str | None) -> Target:
    import psutil

    d = want or (main_dtype(live) if live is not None else "float32")
    return Target("cpu", "CPU RAM", int(psutil.virtual_memory().available), d, attention_kernel("cpu", None, attn),
                  device="cpu", detail="available RAM now")


def resolve_target(gpu: str | None = None, dtype: str | None = None, live: Any = None,
                   attn: str | None = None) -> Target:
    """The device a plan checks against: a named GPU, else the one the kernel (or the live
    model) uses — CUDA free memory, Apple MPS, or available RAM."""
    import torch

    want = dtype_name(dtype) if dtype else ""
    if gpu:
        return _named_gpu(gpu, want, live, attn)
    dev = device_of(live) if live is not None else None
    if (dev or "").startswith("cuda") or (dev is None and torch.cuda.is_available()):
        return _local_cuda(dev, want, live, attn)
    if (dev or "").startswith("mps") or (dev is None and getattr(torch.backends, "mps", None) is not None
                                          and torch.backends.mps.is_available()):
        return _mps(want, live, attn)
    return _cpu(want, live, attn)
