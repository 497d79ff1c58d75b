"""The plain-Python face: engine calls with the same displays the magics show.

``peft_magic.train(...)`` in a notebook should look like ``%peft train``: a live display
while it runs. The engine's ``training.run.train`` emits events and draws nothing; this
face puts a renderer on those events for the length of the call. (The other public
functions need no display and are the engine's own; ``peft_magic/__init__`` maps names.)
"""

from __future__ import annotations

from typing import Any

from .display.profile_html import show_profile
from .display.progress import TrainingView


def _mode(display: Any) -> Any:
    """``"auto"`` is the notebook's default (``%config PeftMagic.display``)."""
    from .settings import SETTINGS

    return SETTINGS.display if display == "auto" else display


def train(model: Any, data: Any = None, *, tokenizer: Any = None, display: Any = "auto", **settings: Any) -> Any:
    """Train with the live progress display (the ``%peft train`` of plain Python).

    Same arguments as :func:`peft_magic.training.run.train`; ``display`` is ``"auto"``
    (widgets in a notebook, a text line elsewhere), ``"widget"``, ``"text"``, ``None``, or
    a :class:`~peft_magic.display.progress.TrainingView` to draw into.
    With ``profile=True`` the profile is shown under the training display.
    Returns the :class:`~peft_magic.state.Run` record.
    """
    from .training.run import train as train_run

    view = display if isinstance(display, TrainingView) else TrainingView(_mode(display))
    with view:
        run = train_run(model, data, tokenizer=tokenizer, **settings)
    show_profile(getattr(run, "profile", None), view)
    return run


def profile(model: Any, data: Any = None, *, tokenizer: Any = None, display: Any = "auto", **settings: Any) -> Any:
    """Profile a few training steps (the ``%peft profile`` of plain Python) with the live
    display; the model is left as it was. Arguments as :func:`peft_magic.training.speed.profile_steps.profile`.
    Returns the :class:`~peft_magic.training.speed.profile_report.Profile` (a table in a notebook)."""
    from .training.speed.profile_steps import profile as profile_run

    view = display if isinstance(display, TrainingView) else TrainingView(_mode(display), title="Profiling")
    if view.verb == "Training":  # a view made for training heads a profile as what it is
        view.verb = view.title = "Profiling"
    with view:
        return profile_run(model, data, tokenizer=tokenizer, **settings)


def compare(model: Any, methods: Any, data: Any, *, tokenizer: Any, display: Any = "auto", **settings: Any) -> Any:
    """``%peft compare`` in plain Python: the same live table while it runs; returns the
    :class:`~peft_magic.training.comparison.Comparison` (``.rows`` best first)."""
    from .display.compare import LiveCompare
    from .training.comparison import compare as compare_run

    display = _mode(display)
    if display in (None, "none", False):
        return compare_run(model, methods, data, tokenizer=tokenizer, **settings)
    with LiveCompare(display):
        return compare_run(model, methods, data, tokenizer=tokenizer, **settings)


def export(model: Any, format: str, path: Any, *, tokenizer: Any = None, display: Any = "auto", **options: Any) -> Any:
    """``%peft export`` in plain Python: the live progress bar while it runs; returns the
    :class:`~peft_magic.exporting.results.ExportResult`. Options as
    :func:`peft_magic.exporting.export.export` (``quant``, ``name``, ``force``, ``template``,
    ``converter``, ``free_bytes``)."""
    from .display.export_view import LiveExport
    from .exporting.export import export as export_run

    display = _mode(display)
    if display in (None, "none", False):
        return export_run(model, format, path, tokenizer=tokenizer, **options)
    with LiveExport(display):
        return export_run(model, format, path, tokenizer=tokenizer, **options)
