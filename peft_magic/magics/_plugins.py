"""The command modules beyond the core ones; each registers its sub-commands on import.

Kept as an explicit list (not a directory scan) so that a broken module is an import
error at ``%load_ext`` time, not a silently missing command.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES: list[str] = [
    "cmd_model",
    "cmd_train",
    "cmd_panel",
    "cmd_adapters",
    "cmd_plan",
]


def load_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")
