"""``%peft plan --measure``: real training steps on the live model, next to the estimate.

The steps use a plain torch forward / backward / optimizer step on random token ids of
the model's vocabulary, with a learning rate of 0 so that no weight changes, and the
random-number state restored: the model is exactly as it was afterwards. Peak memory
comes from the CUDA allocator where the model is on a GPU, and from counting live
tensor bytes on CPU.
"""

from __future__ import annotations

import time
from typing import Any

from .. import stack
from ..errors import PeftMagicError
from ..fused_loss import planned_loss
from ..memory import device_of
from ..model.properties import infer_task
from .estimate import parts_of
from .fit import is_full, live_estimate, positive
from .results import Measurement, Parts
from .sketch import resolve_optimizer, tensor_accounting
from .trace import forward_backward, grad_bytes, measure_step, step_inputs


def _optimizer_bytes(opt: Any) -> int:
    import torch

    total, seen = 0, set()
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and id(v.untyped_storage()) not in seen:
                seen.add(id(v.untyped_storage()))
                total += int(v.untyped_storage().nbytes())
    return total


def _measured_step(model: Any, inputs: dict[str, Any], dev: str, loss_fn: Any = None) -> tuple[int, int, int, str]:
    """(gradient bytes, activation bytes, step peak, how it was measured) of one step."""
    import torch

    if not dev.startswith("cuda"):
        m = measure_step(model, inputs, loss_fn)
        return m.grads, m.activations, m.peak, "live tensor bytes"
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    forward_backward(model, inputs, loss_fn)
    torch.cuda.synchronize(dev)
    grads = grad_bytes(model)
    # the allocator keeps only the joint peak: activations are what it held beyond the
    # gradients (the estimate is read the same way)
    peak = torch.cuda.max_memory_allocated(dev) - before
    return grads, max(0, peak - grads), peak, "torch.cuda peak allocated"


def _real_steps(model: Any, batch: int, seq: int, steps: int, optim: str,
                loss_fn: Any = None) -> tuple[int, int, int, str, int]:
    """Warm-up steps (they create the optimizer states), then one measured step."""
    import torch

    dev = device_of(model)
    task = infer_task(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    devices = [torch.device(dev).index or 0] if dev.startswith("cuda") else []
    opt = torch.optim.AdamW(trainable, lr=0.0) if optim.startswith("adam") else torch.optim.SGD(trainable, lr=0.0)
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            for _ in range(steps - 1):
                model.zero_grad(set_to_none=True)
                forward_backward(model, step_inputs(model, batch, seq, task, dev), loss_fn)
                opt.step()
            model.zero_grad(set_to_none=True)
            grads, activations, peak, how = _measured_step(model, step_inputs(model, batch, seq, task, dev), dev,
                                                           loss_fn)
            return grads, activations, peak, how, _optimizer_bytes(opt)
    finally:
        model.zero_grad(set_to_none=True)
        opt.state.clear()
        del opt
        model.train(was_training)


def measure(model: Any, *, batch: int = 2, seq: int = 64, optim: str = "adamw", steps: int = 2,
            target_batch: int | None = None, target_seq: int | None = None, fused: bool = False) -> Measurement:
    """Run ``steps`` real training steps on ``model`` and compare memory with the estimate
    (``fused``: both with the loss computed without the logits, ``fused_loss``)."""
    stack.ensure()
    batch, seq, steps = positive("batch", batch), positive("seq", seq), max(2, int(steps))
    if not any(p.requires_grad for p in model.parameters()):
        raise PeftMagicError("this model has nothing to train, so there is no training step to measure",
                             "attach an adapter first, e.g. %peft lora r=8")
    dev = device_of(model)
    cuda = dev.startswith("cuda")
    t0 = time.perf_counter()
    est_parts, target, est, acc = live_estimate(model, batch, seq, False, optim, fused=fused)
    loss_fn = planned_loss if est.fused else None
    grads, activations, peak, how, opt_bytes = _real_steps(model, batch, seq, steps, optim, loss_fn)
    account = tensor_accounting(model, cuda=cuda)
    full = is_full(model)
    measured = Parts(weights=account.frozen + (account.trainable if full else 0),
                     adapter=0 if full else account.trainable, gradients=grads, optimizer=opt_bytes,
                     activations=activations)
    est_parts.overhead = 0
    est_step = est.step(batch, seq)
    if cuda:
        est_parts.activations = max(0, est_step.peak - est_step.grads)
    result = Measurement(batch, seq, dev, how, measured, est_parts, measured_peak=peak, estimated_peak=est_step.peak,
                         steps=steps, seconds=time.perf_counter() - t0)
    if target_batch and target_seq and (target_batch, target_seq) != (batch, seq):
        far = parts_of(acc, est.step(target_batch, target_seq), resolve_optimizer(optim), target, full)
        ratio = measured.activations / est_parts.activations if est_parts.activations else 1.0
        far.activations = int(far.activations * ratio)
        result.extrapolated = far
        result.target_batch, result.target_seq = target_batch, target_seq
    return result
