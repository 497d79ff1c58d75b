"""Linear + cross-entropy without the full logits: a library kernel where one runs, else chunks.

Given the head's input ``h`` (``[n, hidden]``, only the positions that have a target) and
the targets ``y`` (``[n]``), every kernel returns ``sum(cross_entropy(logits(h), y)) /
denominator`` — the model's own loss, with its own normalisation (``denominator`` is the
Trainer's ``num_items_in_batch`` or the count of targets) — and never holds more than a
chunk of the ``[n, vocab]`` logits.

* ``liger`` — Liger-Kernel's fused linear cross-entropy (Triton, CUDA), called on the head's
  weight. Used on CUDA when ``liger-kernel`` is installed and the head is a bare
  ``nn.Linear`` (an adapter on the head would be skipped by a kernel that takes the weight
  matrix; soft-capping is the kernel's own option).
* ``cce`` — Apple's cut-cross-entropy (Triton, CUDA), likewise, when Liger is not
  installed; its gradient filter is switched off (``filter_eps=None``) so the gradients
  are exact.
* ``chunked`` — everywhere else (CPU, MPS, a GPU without those libraries, a head with an
  adapter on it): :class:`_ChunkedLinearCE`, below. No library runs there: Liger and
  cut-cross-entropy are Triton kernels; cut-cross-entropy's pure-torch implementation
  (``impl="torch_compile"``) does run on CPU (its package cannot be imported without
  Triton, so only by loading that module alone), but it computes the full ``[n, vocab]``
  logits inside one compiled graph — measured here on 4,096 tokens × 49,152 vocabulary,
  fp32: peak 834 MB above the inputs, against 2,443 MB for the plain loss and 110–330 MB
  for this module's chunks (the same speed), and it takes a weight matrix, not a module.
"""

from __future__ import annotations

import importlib.util
from typing import Any

#: the fp32 logits of one chunk: small next to a step's activations, large enough that a
#: chunk's matmul runs at full speed (measured on CPU: 64 to 512 tokens a chunk, same time)
CHUNK_BYTES = 32 * 2**20
KERNELS = ("chunked", "liger", "cce")


def chunk_rows(vocab: int, n: int | None = None) -> int:
    """Tokens per chunk: the fp32 logits of a chunk take about :data:`CHUNK_BYTES`."""
    rows = max(16, CHUNK_BYTES // (4 * max(1, vocab)))
    return min(rows, n) if n else rows


def available(kernel: str) -> bool:
    """Whether a library kernel's package is installed (without importing it)."""
    name = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}.get(kernel)
    return name is None or importlib.util.find_spec(name) is not None


def pick(lm: Any, device: str, wanted: str | None = None) -> str:
    """Which kernel runs: the one asked for, else a library on CUDA where it can take this
    head, else ``chunked``."""
    if wanted in KERNELS:
        return wanted
    if device.startswith("cuda") and lm.plain_linear:
        if available("liger"):
            return "liger"
        if available("cce") and lm.head.bias is None:
            return "cce"
    return "chunked"


_FUNCTION: Any = None


def _function() -> Any:
    """Build the autograd function once (torch is imported on first use)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch
    import torch.nn.functional as F

    class _ChunkedLinearCE(torch.autograd.Function):
        """``sum(CE(head(h), y)) / denominator``, a chunk of tokens at a time, with the
        gradients computed during the forward pass.

        Why the gradients in the forward (as Liger does) rather than ``torch.utils.checkpoint``
        per chunk: checkpointing recomputes each chunk's logits in the backward pass — one
        more ``[chunk, hidden] × [hidden, vocab]`` matmul per chunk. Measured on CPU
        (4,096 tokens, vocabulary 49,152, hidden 576, fp32, CPU time): plain loss 7.3–7.8 s,
        checkpointed chunks 12.0–12.3 s, this 7.7–8.1 s; both chunked forms peak at ~0.33 GB
        against 2.44 GB. The per-chunk gradient of ``h`` is kept (``[n, hidden]``, as large as
        ``h`` itself) and so are the gradients of the head's trainable parameters, summed in
        fp32; the backward pass only scales them by the incoming gradient.

        The loss of each chunk is divided by the denominator *before* its gradient is taken,
        so every gradient is the one the model's own loss gives, op for op.
        """

        @staticmethod
        def forward(ctx: Any, h: Any, y: Any, denominator: Any, lm: Any, rows: int, *params: Any) -> Any:
            need_h = ctx.needs_input_grad[0]
            need_p = [i for i, p in enumerate(params) if ctx.needs_input_grad[5 + i]]
            grad = need_h or bool(need_p)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            gh = torch.empty_like(h) if need_h else None
            gp = {i: torch.zeros(params[i].shape, dtype=torch.float32, device=params[i].device) for i in need_p}
            # On the meta device (the planner) every chunk allocates and frees the same tensors as
            # the one before it, so two chunks show the step's peak; the rest would only cost time.
            stop = min(h.shape[0], 2 * rows) if h.device.type == "meta" else h.shape[0]
            for s in range(0, stop, rows):
                hc = h[s:s + rows].detach().requires_grad_(need_h)
                with torch.enable_grad() if grad else torch.no_grad():
                    logits = lm.logits(hc)
                    loss = F.cross_entropy(logits.float(), y[s:s + rows], reduction="sum") / denominator
                del logits
                if grad:
                    wrt = ([hc] if need_h else []) + [params[i] for i in need_p]
                    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
                    if need_h:
                        gh[s:s + rows] = grads[0]
                        grads = grads[1:]
                    for i, g in zip(need_p, grads):
                        if g is not None:
                            gp[i] += g
                total += loss.detach()
            ctx.need = (need_h, need_p, len(params))
            ctx.save_for_backward(*([gh] if need_h else []), *[gp[i] for i in need_p])
            ctx.dtypes = [params[i].dtype for i in need_p]
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            need_h, need_p, n_params = ctx.need
            saved = list(ctx.saved_tensors)
            gh = saved.pop(0) * grad_out if need_h else None  # a 0-d factor keeps h's dtype
            out_p: list[Any] = [None] * n_params
            for i, g, dtype in zip(need_p, saved, ctx.dtypes):
                out_p[i] = (g * grad_out).to(dtype)
            return (gh, None, None, None, None, *out_p)

    _FUNCTION = _ChunkedLinearCE
    return _ChunkedLinearCE


def chunked(lm: Any, h: Any, y: Any, denominator: Any, rows: int | None = None) -> Any:
    """The chunked linear + cross-entropy (see :class:`_ChunkedLinearCE`)."""
    rows = rows or chunk_rows(lm.vocab, h.shape[0])
    return _function().apply(h, y, denominator, lm, max(1, rows), *lm.trainable())


def liger(lm: Any, h: Any, y: Any, denominator: Any) -> Any:
    """Liger-Kernel's fused linear cross-entropy on the head's weight (CUDA)."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    if lm.pre_scale is not None:
        h = h * lm.pre_scale
    loss = liger_fused_linear_cross_entropy(h, lm.head.weight, y, bias=lm.head.bias, reduction="sum",
                                            softcap=lm.softcap)
    return loss / denominator


def cce(lm: Any, h: Any, y: Any, denominator: Any) -> Any:
    """Apple's cut-cross-entropy on the head's weight (CUDA), with exact gradients."""
    from cut_cross_entropy import linear_cross_entropy

    if lm.pre_scale is not None:
        h = h * lm.pre_scale
    loss = linear_cross_entropy(h, lm.head.weight, y, softcap=lm.softcap, reduction="sum", filter_eps=None)
    return loss / denominator


def run(kernel: str, lm: Any, h: Any, y: Any, denominator: Any) -> Any:
    """The loss of ``h`` → ``y`` with ``kernel`` (``chunked``, ``liger`` or ``cce``)."""
    return {"chunked": chunked, "liger": liger, "cce": cce}[kernel](lm, h, y, denominator)
