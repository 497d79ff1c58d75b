"""TEMPORARY shim during the restructure: use peft_magic.model.builtins."""
from .model.builtins import *  # noqa: F401,F403
from .model.builtins import materialize, resolve_builtin, cache_dir, BUILTINS, _train_tokenizer  # noqa: F401
