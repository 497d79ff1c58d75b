"""peft_magic: PEFT fine-tuning from inside a Jupyter notebook.

``%load_ext peft_magic`` registers the ``%peft`` magics; ``%peft?`` shows what there is.
Everything the magics do is also a plain Python API::

    import peft_magic as pm
    loaded = pm.load("smollm2")
    result = pm.attach(loaded.model, "lora", r=8)
    model = result.model

Importing this package is instant: torch, transformers and peft are imported on the
first call that needs them (the API below is resolved lazily).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name → "module:attribute"; resolved on first access so that the import stays light
_API = {
    "load": "model.load:load",
    "attach": "adapter_ops.attach:attach",
    "detach": "adapter_ops.attach:detach",
    "preview": "adapter_ops.preview:preview",
    "train": "api:train",
    "profile": "api:profile",
    "runs": "training.report:runs_report",
    "show": "adapter_ops.summary:show",
    "targets": "adapter_ops.targets:explore",
    "methods": "peft_methods.report:list_methods",
    "resolve_method": "peft_methods.discovery:resolve_method",
    "PeftMagicError": "errors:PeftMagicError",
    "subscribe": "events:subscribe",
    "memory_reading": "memory:reading",
    "plan": "planning.plan:plan",
    "check_fit": "planning.plan:check_fit",
    "save": "adapter_ops.save:save",
    "load_adapter": "adapter_ops.load:load_adapter",
    "adapters": "adapter_ops.listing:adapters",
    "use_adapter": "adapter_ops.switch:use_adapter",
    "adapters_off": "adapter_ops.switch:adapters_off",
    "adapters_on": "adapter_ops.switch:adapters_on",
    "delete_adapter": "adapter_ops.switch:delete_adapter",
    "merge": "adapter_ops.merge:merge",
    "generate": "inference.generate:generate",
    "evaluate": "inference.evaluate:evaluate",
    "predict": "inference.predict:predict",
    "compare": "api:compare",
    "export": "api:export",
}

__all__ = sorted(_API) + ["load_ipython_extension", "unload_ipython_extension", "__version__"]

# Light (imports nothing heavy): registers the bottleneck adapter method with peft now if
# peft is loaded, else right after `import peft`, so that peft's own
# PeftModel.from_pretrained loads saved bottleneck adapters once peft_magic is imported.
from . import bottleneck as _bottleneck  # noqa: E402,F401

# Light (renderers load on first use): HTML for the engine's result objects in notebooks.
from .display import formatters as _formatters  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'peft_magic' has no attribute '{name}'")
    import importlib

    module, attr = target.split(":")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext peft_magic``: register ``%peft`` (imports nothing heavy)."""
    from .magics import install

    install(ipython)
    from . import comm as _comm

    _comm.start(ipython)  # the JupyterLab status bar's comm; silent where no frontend attaches


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext peft_magic``."""
    from . import comm as _comm

    _comm.stop()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt status-bar extension lives (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "peft-magic"}]
