"""Meta-device sketches of a training setup, and exact byte accounting of real models.

A *sketch* is a skeleton of the model (meta device, no memory) prepared the way a real
run would be: in the training dtype, with bitsandbytes' 4-bit layers stood in for where
QLoRA would quantize, k-bit preparation and gradient checkpointing as peft and
transformers apply them, and the method attached by peft itself. From a sketch come the
parameter parts of a plan (frozen weights, adapter, gradients, optimizer states — the
same tensors a real run would create, counted the same way) and, by tracing one
forward / backward (``trace``), its activations.

Depth: every decoder layer holds the same weights and activations, so a sketch is built
at two small depths (1 and 2 layers, or one and two periods of the layer pattern) and
every figure is extended along the straight line through them — a 7B model's 32 layers
cost no more to plan than a 4-layer one. Models whose depth cannot be reduced are
sketched at full depth (slower, still no memory).

:func:`tensor_accounting` is the other side: the exact bytes of a real model's tensors
(parameters, buffers, and the quantization state bitsandbytes keeps next to a 4-bit
weight), used by ``check_fit`` for the model as it is and by the tests as ground truth.

Over 450 lines because the byte formulas (NF4 blocks, optimizer states per optimizer) and
the sketch builders must agree to the byte, and they are checked together against real
tensors; splitting them would separate each formula from the builder that relies on it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from .. import stack
from ..errors import PeftMagicError, first_line
from ..model.skeleton import attach_on_skeleton, build

CUDA_BLOCK = 512  # torch's CUDA caching allocator rounds every tensor up to 512 bytes

# ----------------------------------------------------------------------------- byte formulas


def _round(n: int, cuda: bool) -> int:
    return -(-n // CUDA_BLOCK) * CUDA_BLOCK if cuda and n else n


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as a plan sees it: state bytes per trainable tensor, and the temporary
    memory its step needs on top (foreach implementations copy every state once)."""

    name: str
    description: str
    states: int  # number of full-size states (2 for Adam, 1 for Lion / momentum SGD)
    bits: int = 32  # 8 for bitsandbytes' 8-bit optimizers
    factored: bool = False  # Adafactor
    paged: bool = False
    foreach: bool = False  # a step temporary as large as all trainable parameters (on CUDA)
    step_tensor: bool = False  # torch's Adam keeps a float32 step counter per tensor


OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in [
    Optimizer("adamw", "torch AdamW (fused on CUDA, as transformers' default adamw_torch_fused)", 2,
              step_tensor=True),
    Optimizer("adamw_torch_fused", "torch AdamW, fused kernel", 2, step_tensor=True),
    Optimizer("adamw_torch", "torch AdamW, foreach kernel (a step temporary as large as the trainable weights)",
              2, foreach=True, step_tensor=True),
    Optimizer("adamw_8bit", "bitsandbytes AdamW with 8-bit states", 2, bits=8),
    Optimizer("paged_adamw", "bitsandbytes paged AdamW (32-bit states that can spill to CPU RAM)", 2, paged=True),
    Optimizer("paged_adamw_8bit", "bitsandbytes paged AdamW with 8-bit states", 2, bits=8, paged=True),
    Optimizer("lion", "Lion (one 32-bit state)", 1),
    Optimizer("lion_8bit", "bitsandbytes Lion with 8-bit states", 1, bits=8),
    Optimizer("adafactor", "Adafactor (factored second moments, no first moment)", 0, factored=True),
    Optimizer("rmsprop", "torch RMSprop (one state)", 1, step_tensor=True),
    Optimizer("adagrad", "torch Adagrad (one state)", 1, step_tensor=True),
    Optimizer("sgd", "SGD without momentum (no state)", 0),
]}

OPTIM_ALIASES = {  # transformers' ``optim`` names included
    "adam": "adamw", "adamw_32bit": "adamw", "adamw_hf": "adamw_torch", "adamw_torch_xla": "adamw_torch",
    "adamw_apex_fused": "adamw_torch_fused", "adamw_anyprecision": "adamw", "adamw_bnb_8bit": "adamw_8bit",
    "adam8bit": "adamw_8bit", "adamw8bit": "adamw_8bit", "8bit": "adamw_8bit", "paged_adamw_32bit": "paged_adamw",
    "lion_32bit": "lion", "paged_lion_32bit": "lion", "paged_lion_8bit": "lion_8bit", "fused": "adamw_torch_fused",
    "rmsprop_bnb_32bit": "rmsprop",
}


def resolve_optimizer(name: str | None) -> Optimizer:
    """The :class:`Optimizer` called ``name`` (transformers' ``optim`` names work too)."""
    from ..errors import did_you_mean

    text = str(getattr(name, "value", name) or "adamw").strip()
    if text.startswith("OptimizerNames."):  # str() of a transformers OptimizerNames member
        try:
            from transformers.training_args import OptimizerNames

            text = OptimizerNames[text.split(".", 1)[1]].value
        except (ImportError, KeyError):
            pass
    key = text.lower().replace("-", "_")
    key = OPTIM_ALIASES.get(key, key)
    if key not in OPTIMIZERS:
        hint = did_you_mean(key, list(OPTIMIZERS) + list(OPTIM_ALIASES))
        raise PeftMagicError(f"unknown optimizer '{name}'" + (f": {hint}" if hint else ""),
                             "optim= one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[key]


def optimizer_bytes(opt: Optimizer, tensors: list[tuple[tuple[int, ...], int]], cuda: bool) -> int:
    """State bytes ``opt`` creates for trainable ``tensors`` (shape, bytes per element).

    torch's Adam keeps both moments in the parameter's dtype plus a float32 step counter
    per tensor; bitsandbytes' 8-bit optimizers keep uint8 states with a float32 absmax
    per 256 values for tensors of 4096+ elements and float32 states for smaller ones.
    """
    total = 0
    for shape, elem in tensors:
        n = math.prod(shape) if shape else 1
        if opt.factored:  # row and column second moments (or a full one for vectors) + an RMS scalar
            if len(shape) >= 2:
                rows = math.prod(shape[:-1])
                cols = math.prod(shape[:-2]) * shape[-1]
                total += _round(rows * elem, cuda) + _round(cols * elem, cuda)
            else:
                total += _round(n * elem, cuda)
            total += _round(4, cuda)
            continue
        if opt.states == 0:
            continue
        if opt.bits == 8:
            if n >= 4096:
                per = _round(n, cuda) + _round(math.ceil(n / 256) * 4, cuda)
            else:
                per = _round(n * 4, cuda)
            total += opt.states * per
        elif opt.paged or opt.name.startswith("lion"):
            total += opt.states * _round(n * 4, cuda)
        else:
            total += opt.states * _round(n * elem, cuda)
        if opt.step_tensor and (not cuda or opt.name != "adamw_torch"):
            total += _round(4, cuda)  # float32 step (on the device when fused, on CPU otherwise)
    if opt.bits == 8 and any(math.prod(s) >= 4096 for s, _ in tensors):
        total += opt.states * _round(256 * 4, cuda)  # the quantization maps, shared by the 8-bit states
    return total


def optimizer_step_temporary(opt: Optimizer, tensors: list[tuple[tuple[int, ...], int]], cuda: bool) -> int:
    """Temporary bytes during ``optimizer.step()``: foreach Adam on CUDA computes the
    denominator for every tensor at once; the single-tensor path one tensor at a time."""
    sizes = [_round((math.prod(s) if s else 1) * e, cuda) for s, e in tensors]
    if not sizes or opt.states == 0:
        return 0
    if opt.foreach and cuda:
        return sum(sizes)
    return max(sizes)


# ----------------------------------------------------------------------------- exact accounting


@dataclass
class TensorAccount:
    """Bytes of a model's tensors by role (unique storages; quantization state included)."""

    frozen: int = 0  # frozen parameters (with 4-bit quantization state) and buffers
    trainable: int = 0
    trainable_tensors: list[tuple[tuple[int, ...], int]] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    quantized_layers: int = 0

    @property
    def total(self) -> int:
        return self.frozen + self.trainable


def _quant_state_tensors(param: Any) -> list[Any]:
    qs = getattr(param, "quant_state", None)
    if qs is None:
        scb = getattr(param, "SCB", None)
        return [scb] if scb is not None else []
    out = [getattr(qs, a, None) for a in ("absmax", "code", "offset")]
    s2 = getattr(qs, "state2", None)
    if s2 is not None:
        out += [getattr(s2, "absmax", None), getattr(s2, "code", None)]
    return [t for t in out if t is not None and hasattr(t, "untyped_storage")]


def tensor_accounting(model: Any, cuda: bool = False) -> TensorAccount:
    """Exact bytes of ``model``'s parameters, buffers and quantization state, by role.

    Each storage counts once (tied weights, shared buffers). A 4-bit ``Params4bit``
    counts its packed bytes plus its quantization state and two weights per element.
    """
    acc = TensorAccount()
    seen: set[int] = set()

    def add(t: Any) -> int:
        st = t.untyped_storage()
        key = st.data_ptr() if t.device.type != "meta" else id(st)
        if key in seen and key != 0:
            return 0
        seen.add(key)
        return _round(int(st.nbytes()), cuda)

    for _, p in model.named_parameters():
        quant = p.__class__.__name__ in ("Params4bit", "Int8Params")
        numel = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        acc.total_params += numel
        nbytes = add(p) + sum(add(t) for t in _quant_state_tensors(p))
        acc.quantized_layers += int(quant)
        if p.requires_grad:
            acc.trainable += nbytes
            acc.trainable_params += numel
            acc.trainable_tensors.append((tuple(p.shape), p.element_size()))
        else:
            acc.frozen += nbytes
    for _, b in model.named_buffers():
        acc.frozen += add(b)
    return acc


# ----------------------------------------------------------------------------- building sketches


_LAYER_ATTRS = ("num_hidden_layers", "n_layer", "num_layers")


def layer_count(config: Any) -> int | None:
    for attr in _LAYER_ATTRS:
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def reduced_depths(config: Any) -> tuple[int, ...]:
    """The depths to sketch at: two small ones on a straight line, or the full depth.

    One and two layers for a uniform stack; a ``layer_types`` pattern (sliding / full
    attention) is kept whole by using one and two periods of it. Encoder-decoder models
    (two stacks) are sketched at full depth.
    """
    layers = layer_count(config)
    if layers is None or getattr(config, "is_encoder_decoder", False):
        return (layers or 0,)
    period = 1
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == layers and types:
        for p in range(1, len(types) + 1):
            if all(types[i] == types[i % p] for i in range(len(types))):
                period = p
                break
    lo, hi = period, 2 * period
    if hi >= layers or period > 8:
        return (layers,)
    return (lo, hi)


def config_at_depth(config: Any, depth: int) -> Any:
    """A copy of ``config`` with ``depth`` layers (and its layer pattern cut to match)."""
    cfg = copy.deepcopy(config)
    if layer_count(cfg) == depth:
        return cfg
    for attr in _LAYER_ATTRS:
        if isinstance(getattr(cfg, attr, None), int):
            setattr(cfg, attr, depth)
            break
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)):
        cfg.layer_types = list(types)[:depth]
    return cfg


def build_skeleton(config: Any, dtype: Any, *, model_cls: Any = None, task: str | None = None,
                   attn: str | None = None) -> Any:
    """A meta-device model from ``config`` in the training ``dtype`` (``model.skeleton.build``)."""
    return build(config, model_cls=model_cls, task=task, dtype=dtype, attn=attn)


def skip_quantization(skeleton: Any) -> list[str]:
    """Module names transformers keeps out of bitsandbytes quantization for this model."""
    skip: list[str] = []
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        skip = list(get_keys_to_not_convert(skeleton))
    except Exception:
        skip = ["lm_head"]
    skip += list(getattr(skeleton, "_keep_in_fp32_modules", None) or [])
    return skip


def _should_convert(name: str, skip: list[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return bool(should_convert_module(name, skip))
    except Exception:
        return not any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip)


def quantize_skeleton(skeleton: Any, compute_dtype: Any, names: list[str] | None = None) -> list[str]:
    """Swap the layers bitsandbytes would quantize (``nn.Linear`` and GPT-2's ``Conv1D``)
    for :class:`~peft_magic.planning.trace.Sim4bitLinear`, in place. ``names`` picks the
    layers explicitly (those of a live 4-bit model). Returns the swapped names."""
    import torch

    from .trace import sim_4bit_linear_class

    cls = sim_4bit_linear_class()
    skip = skip_quantization(skeleton) if names is None else []
    wanted = set(names) if names is not None else None
    swapped: list[str] = []
    for name, module in list(skeleton.named_modules()):
        is_conv1d = type(module).__name__ == "Conv1D"
        if not name or not (type(module) is torch.nn.Linear or is_conv1d):
            continue
        if wanted is not None and name not in wanted:
            continue
        if wanted is None and not _should_convert(name, skip):
            continue
        if is_conv1d:  # stored transposed: (in, out)
            in_f, out_f = module.weight.shape
            new = cls(in_f, out_f, bias=module.bias is not None, device="meta", dtype=module.weight.dtype)
            parent = skeleton.get_submodule(name.rsplit(".", 1)[0]) if "." in name else skeleton
            setattr(parent, name.rsplit(".", 1)[-1], new)
            module = new
        else:
            module.__class__ = cls
        module.compute_dtype = compute_dtype
        module.weight.requires_grad_(False)
        swapped.append(name)
    return swapped


def prepare_kbit(skeleton: Any) -> None:
    """What ``peft.prepare_model_for_kbit_training`` does (as ``%peft qlora`` calls it:
    gradient checkpointing, non-reentrant): freeze everything, keep 16-bit parameters that
    are not quantized in float32, make the embeddings' output require grad, checkpoint."""
    import torch

    from .trace import sim_4bit_linear_class

    sim = sim_4bit_linear_class()
    quantized = {id(m.weight) for m in skeleton.modules() if isinstance(m, sim)}
    for p in skeleton.parameters():
        p.requires_grad_(False)
        if p.dtype in (torch.float16, torch.bfloat16) and id(p) not in quantized:
            p.data = p.data.to(torch.float32)
    emb = skeleton.get_input_embeddings()
    if emb is not None:
        emb.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    enable_checkpointing(skeleton)


def enable_checkpointing(skeleton: Any) -> None:
    """Gradient checkpointing as transformers applies it (non-reentrant, like ``%peft qlora``)."""
    with stack.quiet():
        skeleton.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@dataclass
class Sketch:
    """One prepared meta model at one depth, with its parameter accounting."""

    model: Any
    depth: int
    account: TensorAccount
    quantized: list[str]
    checkpointing: bool
    kernel: str
    task: str | None


def account_sketch(model: Any, cuda: bool) -> TensorAccount:
    """Parameter accounting of a sketch: like :func:`tensor_accounting`, with the stand-in
    4-bit layers counted as bitsandbytes stores them."""
    from .trace import sim_4bit_linear_class

    sim = sim_4bit_linear_class()
    quantized = {id(m.weight) for m in model.modules() if isinstance(m, sim)}
    acc = TensorAccount()
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        acc.total_params += n
        if id(p) in quantized:
            nbytes = _round((n + 1) // 2, cuda) + sum(_round(x, cuda) for x in _nf4_parts(n))
            acc.quantized_layers += 1
        else:
            nbytes = _round(n * p.element_size(), cuda)
        if p.requires_grad:
            acc.trainable += nbytes
            acc.trainable_params += n
            acc.trainable_tensors.append((tuple(p.shape), p.element_size()))
        else:
            acc.frozen += nbytes
    seen_buf: set[int] = set()
    for _, b in model.named_buffers():
        st = b.untyped_storage()
        key = id(st) if b.device.type == "meta" else st.data_ptr()
        if key in seen_buf:
            continue
        seen_buf.add(key)
        acc.frozen += _round(int(st.nbytes()), cuda)
    return acc


def _nf4_parts(numel: int, blocksize: int = 64, double_quant: bool = True) -> list[int]:
    """The separate tensors of an NF4 state (each its own allocation): the NF4 code, then
    with double quantization the 8-bit absmax, its offset, the float32 absmax of the
    absmax and its code book; without, a float32 absmax per block."""
    blocks = math.ceil(numel / blocksize)
    if not double_quant:
        return [16 * 4, blocks * 4]
    return [16 * 4, blocks, 4, math.ceil(blocks / 256) * 4, 256 * 4]


def attach_method(skeleton: Any, peft_config: Any, name: str = "default") -> Any:
    """Attach ``peft_config`` to a skeleton with peft itself (one line on failure)."""
    try:
        return attach_on_skeleton(skeleton, peft_config, name)
    except Exception as e:
        raise PeftMagicError(f"cannot attach on the model's skeleton: {first_line(e)}") from None


def add_adapters(peft_model: Any, configs: dict[str, Any], active: Any) -> None:
    """Add further adapters (a live model's second, third …) and activate as it does."""
    with stack.quiet():
        for n, c in configs.items():
            if n not in peft_model.peft_config:
                peft_model.add_adapter(n, copy.deepcopy(c))
        if active:
            try:
                peft_model.set_adapter(active)
            except Exception:
                pass
