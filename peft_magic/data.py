"""TEMPORARY shim during the restructure: the code moved to peft_magic/training/data.py."""
from .training.data import *  # noqa: F401,F403
