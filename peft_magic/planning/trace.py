"""Live tensor bytes of one training step: measured on a real model, simulated on the meta device.

Why both sides use the same counter: ``%peft plan`` promises that its activation estimate
matches what a real training step holds, so the estimate and the measurement must mean
the same thing. :func:`live_bytes` is a ``TorchDispatchMode`` that sees every tensor an
ATen op creates and notices (through a weak reference on the tensor's storage) the
moment the last reference to it goes away: the running sum of those storages is the
"live tensor bytes" of the block, and its maximum is the peak.

* On a **real** model (CPU, or any device) it measures: that is the CPU side of
  ``%peft plan --measure`` and of the tests (CUDA runs use the allocator's own peak).
* On a **meta-device skeleton** the very same forward / backward runs without memory and
  in milliseconds (every op only computes shapes), so the counter reports exactly what
  the real step would hold — for the installed transformers / peft code, whatever the
  architecture, with and without gradient checkpointing. Two pieces of a real run have
  no faithful meta counterpart and are simulated here: the fused attention kernel the
  target device would pick (:func:`simulated_attention`), and bitsandbytes' 4-bit
  matmul (:class:`Sim4bitLinear`).

Nothing here imports torch at module level (``%load_ext`` must stay instant): the mode
class is built on first use.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

# ----------------------------------------------------------------------------- the counter


@dataclass
class StepMemory:
    """What one traced or measured training step held, in bytes.

    ``peak`` is the highest sum of live storages created inside the step (activations,
    temporaries and gradients together; not the weights or optimizer states that existed
    before). ``grads`` is the bytes of the trainable parameters' gradients the step
    produced. ``activations`` is the highest sum of everything *but* the gradients: the
    forward / backward working set. The two peaks happen at different moments (the
    activations are freed while the gradients appear), so ``activations + grads`` can
    exceed ``peak``; a plan adds them, which errs on the safe side by at most ``overlap``.
    """

    peak: int
    grads: int
    activations: int = 0
    ops: int = 0
    device: str = "meta"

    @property
    def overlap(self) -> int:
        """How much ``activations + grads`` overstates the joint peak."""
        return max(0, self.activations + self.grads - self.peak)


_MODE_CLS: Any = None


def _mode_class() -> Any:
    """Build the dispatch-mode class once (needs torch, so not at import time)."""
    global _MODE_CLS
    if _MODE_CLS is not None:
        return _MODE_CLS
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        """Running sum and peak of the bytes of storages created inside the block.

        A storage is counted once, when an op first returns a tensor on it, and released
        when its Python object is finalised (torch keeps one Python object per storage
        for as long as the storage lives, so the weak reference fires on the real free).
        """

        def __init__(self) -> None:
            super().__init__()
            self.current = 0
            self.peak = 0
            self.ops = 0
            self._refs: dict[int, tuple[Any, int, int]] = {}
            self._events: list[tuple[int, int]] = []  # (storage number, +bytes / -bytes)
            self._count = 0
            self.debug = False
            self.device_type: str | None = None  # count only tensors on this device type
            self.origin: dict[int, tuple[str, tuple[int, ...], str, int]] = {}

        def _release(self, key: int, nbytes: int) -> None:
            known = self._refs.pop(key, None)
            if known is not None:
                self.current -= nbytes
                self._events.append((known[2], -nbytes))
                self.origin.pop(key, None)

        def number_of(self, tensor: Any) -> int | None:
            """The number this counter gave ``tensor``'s storage, if it counted it."""
            st = tensor.untyped_storage()
            known = self._refs.get(id(st))
            return known[2] if known is not None and known[0]() is st else None

        def peak_without(self, numbers: set[int]) -> int:
            """The peak of everything except the storages ``numbers`` (e.g. the gradients)."""
            cur = peak = 0
            for num, delta in self._events:
                if num in numbers:
                    continue
                cur += delta
                peak = max(peak, cur)
            return peak

        def live(self) -> list[tuple[str, tuple[int, ...], str, int]]:
            """What is alive now (with ``debug`` on): op, shape, dtype, bytes of each storage."""
            return [self.origin[k] for k in self._refs if k in self.origin]

        def track(self, tensor: Any, func: Any = None) -> None:
            st = tensor.untyped_storage()
            key = id(st)
            known = self._refs.get(key)
            if known is not None and known[0]() is st:
                return
            n = int(st.nbytes())
            ref = weakref.ref(st, lambda _r, key=key, n=n, mode=weakref.ref(self): (
                mode() is not None and mode()._release(key, n)))
            self._count += 1
            self._refs[key] = (ref, n, self._count)
            self._events.append((self._count, n))
            self.current += n
            if self.debug:
                self.origin[key] = (str(func), tuple(tensor.shape), str(tensor.dtype), n)

        def is_tracked(self, tensor: Any) -> bool:
            st = tensor.untyped_storage()
            known = self._refs.get(id(st))
            return known is not None and known[0]() is st

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.ops.aten._local_scalar_dense.default and args and args[0].device.type == "meta" \
                    and args[0].dtype == torch.bool:
                # A data-dependent check on the meta device (``if mask.all():``). The inputs
                # a plan traces are unpadded, unpacked sequences, for which such checks
                # ("is the mask all ones?", "is each row one sequence?") hold.
                return True
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            inputs = None
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor) or self.is_tracked(t):
                    continue
                if self.device_type is not None and t.device.type != self.device_type:
                    continue
                if inputs is None:  # views and in-place results share an input's storage: not new memory
                    inputs = {id(a.untyped_storage()) for a in tree_flatten((args, kwargs))[0]
                              if isinstance(a, torch.Tensor)}
                if id(t.untyped_storage()) not in inputs:
                    self.track(t, func)
            if self.current > self.peak:
                self.peak = self.current
            return out

    _MODE_CLS = LiveBytes
    return LiveBytes


def live_bytes(device_type: str | None = None) -> Any:
    """A fresh counter; use as ``with live_bytes() as m: ...`` then read ``m.peak``.

    ``device_type`` ("cpu", "cuda", "meta") counts only tensors on that kind of device
    (a meta trace also makes a few small host tensors that a real run makes once).
    """
    mode = _mode_class()()
    mode.device_type = device_type
    return mode


# ----------------------------------------------------------------------------- inputs and one step


def step_inputs(model: Any, batch: int, seq: int, task: str | None, device: Any) -> dict[str, Any]:
    """Inputs for one training step: random token ids of the model's vocabulary and labels.

    No attention mask: a mask of ones is what unpadded data means, and a mask would make
    some kernels (and meta tracing) take another path. Labels follow the task's head.
    """
    import torch

    cfg = getattr(model, "config", None)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0) or 2
    meta = str(device) == "meta"

    def ids(*shape: int, high: int = vocab) -> Any:
        if meta:
            return torch.zeros(*shape, dtype=torch.long, device="meta")
        return torch.randint(0, max(1, high), shape, device=device)

    x = ids(batch, seq)
    task = task or "CAUSAL_LM"
    if task == "CAUSAL_LM":
        return {"input_ids": x, "labels": x}
    if task == "SEQ_2_SEQ_LM":  # decoder inputs as the model would derive them from the labels
        return {"input_ids": x, "labels": ids(batch, seq), "decoder_input_ids": ids(batch, seq)}
    if task == "SEQ_CLS":
        labels = int(getattr(cfg, "num_labels", 2) or 2)
        return {"input_ids": x, "labels": ids(batch, high=labels)}
    if task == "TOKEN_CLS":
        labels = int(getattr(cfg, "num_labels", 2) or 2)
        return {"input_ids": x, "labels": ids(batch, seq, high=labels)}
    if task == "QUESTION_ANS":
        return {"input_ids": x, "start_positions": ids(batch, high=seq), "end_positions": ids(batch, high=seq)}
    return {"input_ids": x}


def step_loss(output: Any) -> Any:
    """The loss of a forward pass; heads without one (feature extraction) train on a proxy."""
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    return hidden.float().pow(2).mean()


def forward_backward(model: Any, inputs: dict[str, Any], loss_fn: Any = None) -> None:
    """One forward and backward pass (no optimizer step: that is accounted separately);
    ``loss_fn(model, inputs)`` computes the loss instead of the model (the fused loss)."""
    loss = loss_fn(model, inputs) if loss_fn is not None else step_loss(model(**inputs))
    loss.backward()


def grad_bytes(model: Any) -> int:
    """Bytes of the gradients of the trainable parameters (unique storages)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        st = g.untyped_storage()
        if id(st) in seen:
            continue
        seen.add(id(st))
        total += int(st.nbytes())
    return total


def _result(model: Any, counter: Any, device: str) -> StepMemory:
    grads = {counter.number_of(p.grad) for p in model.parameters() if p.grad is not None}
    return StepMemory(peak=counter.peak, grads=grad_bytes(model), activations=counter.peak_without(grads - {None}),
                      ops=counter.ops, device=device)


def measure_step(model: Any, inputs: dict[str, Any], loss_fn: Any = None) -> StepMemory:
    """Forward + backward under the counter; gradients are cleared before and kept after."""
    model.zero_grad(set_to_none=True)
    device = next(iter(inputs.values())).device
    with live_bytes(device.type) as counter:
        forward_backward(model, inputs, loss_fn)
    return _result(model, counter, str(device))


# ----------------------------------------------------------------------------- simulating kernels on meta


def attention_kernel(device_type: str, dtype: Any, impl: str | None) -> str:
    """Which attention kernel a real run would use: what decides whether attention keeps
    a batch × heads × seq × seq matrix for backward (eager, math) or only a log-sum-exp
    per row (the fused kernels).

    ``eager`` attention always materialises the matrix; ``sdpa`` and flash-attention on a
    CUDA GPU use flash (16-bit) or memory-efficient (32-bit) kernels; on CPU torch's
    flash kernel for CPU.
    """
    import torch

    if impl == "eager":
        return "eager"
    if device_type == "cpu":
        return "flash_cpu"
    if device_type in ("cuda", "gpu"):
        return "flash" if dtype in (torch.float16, torch.bfloat16) else "efficient"
    return "math"


@contextlib.contextmanager
def simulated_attention(kernel: str):
    """Route ``F.scaled_dot_product_attention`` to the fused kernel ``kernel`` while tracing.

    On the meta device torch picks the math kernel (which stores the seq × seq matrix);
    a real GPU or CPU run picks a fused one. Calling that kernel's ATen op directly gives
    its exact outputs (and the tensors autograd saves) on meta.
    """
    import torch
    import torch.nn.functional as F

    if kernel in ("eager", "math"):
        yield
        return
    original = F.scaled_dot_product_attention
    aten = torch.ops.aten

    def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
             is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
        gqa = key.shape[1] != query.shape[1]
        use = kernel
        if use == "flash" and attn_mask is not None:
            use = "efficient"  # flash takes no mask
        if use == "efficient" and gqa:
            use = "math"  # the memory-efficient kernel has no grouped-query support: torch falls back
        if use == "flash_cpu" and dropout_p > 0:
            use = "math"  # torch's CPU flash kernel has no dropout
        if attn_mask is not None and attn_mask.requires_grad:
            use = "math"  # a learned bias (T5's positions) needs its gradient: only the math kernel gives it
        if query.device.type != "meta" or use == "math":
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        if use == "flash_cpu":  # grouped-query attention natively, like CUDA's flash kernel
            return aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
        if use == "flash":
            return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                            scale=scale)[0]
        return aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, True, dropout_p,
                                                            is_causal, scale=scale)[0]

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


_SIM4: Any = None


def sim_4bit_linear_class() -> Any:
    """``Sim4bitLinear``: a meta stand-in for bitsandbytes' ``Linear4bit`` in a skeleton.

    It behaves like the real layer for memory: the input is cast to the compute dtype,
    the matmul saves nothing for backward (bitsandbytes keeps only the packed weight,
    which is not new memory), the backward dequantizes the weight into a temporary of
    the compute dtype and multiplies, and the output is cast back to the input's dtype.
    Being an ``nn.Linear`` subclass, peft wraps it like any linear layer.
    """
    global _SIM4
    if _SIM4 is not None:
        return _SIM4
    import torch

    class _Matmul4bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, compute: Any) -> Any:
            ctx.shape = tuple(weight.shape)
            ctx.compute = compute
            dequantized = torch.empty(ctx.shape, dtype=compute, device=x.device)
            return torch.nn.functional.linear(x, dequantized)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            dequantized = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)
            return torch.matmul(grad, dequantized), None, None

    class Sim4bitLinear(torch.nn.Linear):
        compute_dtype: Any = None

        def forward(self, x: Any) -> Any:
            inp_dtype = x.dtype
            compute = self.compute_dtype or x.dtype
            x = x.to(compute)
            out = _Matmul4bit.apply(x, self.weight, compute)
            if self.bias is not None:
                out = out + self.bias.to(compute)
            return out.to(inp_dtype)

    _SIM4 = Sim4bitLinear
    return Sim4bitLinear


def trace_step(model: Any, batch: int, seq: int, task: str | None, kernel: str, loss_fn: Any = None) -> StepMemory:
    """Forward + backward of a meta-device ``model`` under the counter (milliseconds)."""
    from .. import stack

    inputs = step_inputs(model, batch, seq, task, "meta")
    for p in model.parameters():
        p.grad = None
    with stack.quiet(), simulated_attention(kernel), live_bytes("meta") as counter:
        forward_backward(model, inputs, loss_fn)
    result = _result(model, counter, "meta")
    for p in model.parameters():
        p.grad = None
    return result


def trace_logits(model: Any, batch: int, seq: int, task: str | None) -> tuple[int, int]:
    """Peak bytes of the loss alone — the head, the cross-entropy and their backward, from
    the hidden states on — the model's own way and fused (``fused_loss``), on meta: what
    ``%peft plan`` shows as "logits X → fused Y"."""
    import torch

    from .. import fused_loss

    lm = fused_loss.locate(model)
    weight = getattr(lm.head, "weight", None)
    dtype = weight.dtype if weight is not None else torch.float32
    labels = step_inputs(model, batch, seq, task, "meta")["labels"]
    peaks = []
    for fused in (False, True):
        hidden = torch.empty(batch, labels.shape[-1], lm.hidden, dtype=dtype, device="meta", requires_grad=True)
        with live_bytes("meta") as counter:
            if fused:
                h, y = lm.flat(hidden, labels)
                loss = fused_loss.run("chunked", lm, h, y, y.shape[0])
            else:  # transformers' causal-LM loss: the logits, their fp32 upcast, a mean cross-entropy
                logits = lm.logits(hidden).float()
                y = lm.targets(labels, hidden.shape[1])
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                del logits
            loss.backward()
        peaks.append(counter.peak)
        for p in model.parameters():
            p.grad = None
    return peaks[0], peaks[1]
