"""The command modules; each registers its sub-commands when imported.

Imported by name (not by a directory scan) so that a broken module is an import error
at ``%load_ext`` time, not a silently missing command — and so the architecture test
sees every edge.
"""

from __future__ import annotations


def load_all() -> None:
    """Import every command module (idempotent: Python imports each once)."""
    from . import (  # noqa: F401
        cmd_adapters,
        cmd_compare,
        cmd_evaluate,
        cmd_export,
        cmd_model,
        cmd_panel,
        cmd_plan,
        cmd_speed,
        cmd_train,
        help,  # noqa: F401
    )
