"""The plain-Python face: engine calls with the same displays the magics show.

``peft_magic.train(...)`` in a notebook should look like ``%peft train``: a live display
while it runs. The engine's ``training.run.train`` emits events and draws nothing; this
face puts a renderer on those events for the length of the call. (The other public
functions need no display and are the engine's own; ``peft_magic/__init__`` maps names.)
"""

from __future__ import annotations

from typing import Any

from .display.profile_html import show_profile
from .display.progress import ProgressDisplay, pick_renderer


def train(model: Any, data: Any = None, *, tokenizer: Any = None, display: Any = "auto", **settings: Any) -> Any:
    """Train with the live progress display (the ``%peft train`` of plain Python).

    Same arguments as :func:`peft_magic.training.run.train`; ``display`` is ``"auto"``
    (widgets in a notebook, a text line elsewhere), ``"widget"``, ``"text"`` or ``None``.
    With ``profile=True`` the profile is shown under the training display.
    Returns the :class:`~peft_magic.state.Run` record.
    """
    from .training.run import train as train_run

    renderer = pick_renderer(display)
    with ProgressDisplay(renderer):
        run = train_run(model, data, tokenizer=tokenizer, **settings)
    show_profile(getattr(run, "profile", None), renderer)
    return run


def profile(model: Any, data: Any = None, *, tokenizer: Any = None, display: Any = "auto", **settings: Any) -> Any:
    """Profile a few training steps (the ``%peft profile`` of plain Python) with the live
    display; the model is left as it was. Arguments as :func:`peft_magic.training.speed.profile_steps.profile`.
    Returns the :class:`~peft_magic.training.speed.profile_report.Profile` (a table in a notebook)."""
    from .training.speed.profile_steps import profile as profile_run

    with ProgressDisplay(pick_renderer(display), title="Profiling"):
        return profile_run(model, data, tokenizer=tokenizer, **settings)


def compare(model: Any, methods: Any, data: Any, *, tokenizer: Any, display: Any = "auto", **settings: Any) -> Any:
    """``%peft compare`` in plain Python: the same live table while it runs; returns the
    :class:`~peft_magic.training.compare.Comparison` (``.rows`` best first)."""
    from .display.compare import LiveCompare
    from .training.comparison import compare as compare_run

    if display in (None, "none", False):
        return compare_run(model, methods, data, tokenizer=tokenizer, **settings)
    with LiveCompare():
        return compare_run(model, methods, data, tokenizer=tokenizer, **settings)
