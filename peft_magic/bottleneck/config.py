"""``BottleneckConfig``: the settings of a bottleneck adapter, as a peft config dataclass.

Why a real ``PeftConfig`` subclass with ``metadata={"help": ...}`` on every field: peft
saves it as ``adapter_config.json`` and rebuilds it on load, and peft_magic's method
registry reads the dataclass fields to build ``%peft help bottleneck``, the panel's form
and the key / value checks — no list of settings is kept anywhere else.

Heavy module by design: it subclasses peft's ``PeftConfig``, so it imports peft at module
level; only ``peft_magic.bottleneck.register`` imports it, after peft is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType

#: the non-linearities between the down- and up-projection
NON_LINEARITIES = ("relu", "gelu", "silu", "tanh")
#: used when neither ``bottleneck_size`` nor ``reduction_factor`` is given
DEFAULT_REDUCTION_FACTOR = 16


@dataclass
class BottleneckConfig(PeftConfig):
    """Configuration of a bottleneck (Houlsby / Pfeiffer) adapter.

    Each adapter is a small network ``h → h + scaling · up(act(down(dropout(h))))``
    applied to the *output* of the layers it targets: ``down`` projects the layer's
    output width ``d`` to ``bottleneck_size`` (``d·s + s`` parameters), ``up`` projects
    back (``s·d + d``). ``up`` starts at zero, so a new adapter is an exact no-op.
    Because it is non-linear, it can never be merged into the frozen weights.
    """

    bottleneck_size: Optional[int] = field(
        default=None,
        metadata={"help": "Width s of the bottleneck (down: d→s, up: s→d). Unset: d / reduction_factor."},
    )
    reduction_factor: Optional[Union[int, float]] = field(
        default=None,
        metadata={"help": f"Bottleneck width as the layer width divided by this (default "
                          f"{DEFAULT_REDUCTION_FACTOR}); set this or bottleneck_size, not both."},
    )
    placement: Literal["houlsby", "pfeiffer"] = field(
        default="houlsby",
        metadata={"help": "houlsby: after attention and MLP outputs; pfeiffer: after MLP outputs only "
                          "(target_modules overrides)."},
    )
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = field(
        default="relu",
        metadata={"help": "Activation between the down- and the up-projection: relu, gelu, silu or tanh."},
    )
    adapter_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout probability on the adapter's input (0 = none)."},
    )
    scaling: float = field(
        default=1.0,
        metadata={"help": "Factor on the adapter's output before it is added to the layer's output."},
    )
    residual: bool = field(
        default=True,
        metadata={"help": "Add the adapter's output to the layer output (True, the standard adapter); "
                          "False replaces it."},
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Layers whose output gets an adapter: names (suffix match) or a regex; "
                          "unset: chosen by placement."},
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Layers never to adapt: names (suffix match) or a regex."},
    )
    init_weights: bool = field(
        default=True,
        metadata={"help": "Zero the up-projection so the adapter starts as an exact no-op (False: random)."},
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None,
        metadata={"help": "Only these layer indices (e.g. [0, 1]); unset: every layer."},
    )
    layers_pattern: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Name of the layer list (e.g. 'layers', 'h') when layers_to_transform is set "
                          "and guessing fails."},
    )
    modules_to_save: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Other modules to train fully and save, e.g. a new classifier head; "
                          "seq-cls adds its head itself."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.BOTTLENECK
        if self.bottleneck_size is not None:
            if isinstance(self.bottleneck_size, bool) or not isinstance(self.bottleneck_size, int) \
                    or self.bottleneck_size < 1:
                raise ValueError(f"bottleneck_size must be a positive integer, got {self.bottleneck_size!r}")
            if self.reduction_factor is not None:
                raise ValueError("set bottleneck_size or reduction_factor, not both")
        if self.reduction_factor is not None and (isinstance(self.reduction_factor, bool)
                                                  or not isinstance(self.reduction_factor, (int, float))
                                                  or not self.reduction_factor > 0):
            raise ValueError(f"reduction_factor must be a positive number, got {self.reduction_factor!r}")
        if self.placement not in ("houlsby", "pfeiffer"):
            raise ValueError(f"placement must be 'houlsby' or 'pfeiffer', got {self.placement!r} "
                             "(use target_modules for other layers)")
        if self.non_linearity not in NON_LINEARITIES:
            raise ValueError(f"non_linearity must be one of {', '.join(NON_LINEARITIES)}, got {self.non_linearity!r}")
        if not 0.0 <= float(self.adapter_dropout) < 1.0:
            raise ValueError(f"adapter_dropout must be in [0, 1), got {self.adapter_dropout!r}")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, set(value))
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern only applies together with layers_to_transform")

    def size_for(self, width: int) -> int:
        """The bottleneck width for a layer whose output has ``width`` features."""
        if self.bottleneck_size is not None:
            return int(self.bottleneck_size)
        factor = self.reduction_factor if self.reduction_factor is not None else DEFAULT_REDUCTION_FACTOR
        return max(1, int(round(width / factor)))
