"""``%peft panel``: the widget panel for the model in the notebook."""

from __future__ import annotations

from typing import Any

from .registry import Context, command


@command("panel", summary="the widget panel: pick a method, fill a generated form, attach, train, save",
         flags=("--model VAR",), cell="none", group="model")
def cmd_panel(ctx: Context) -> Any:
    """Open the widget panel for the model: the whole workflow as a form.

    Pick a method (every method of the installed peft, grouped: LoRA family,
    prompt-based, other), fill its settings — a form generated from the method's own
    config, common fields first, the rest under "advanced", help from peft's field
    docs — choose target layers from the model's own, and watch the trainable-parameter
    count update as you type (computed on an empty copy: your model is not touched).
    Attach / Replace, Detach, Train (data from a notebook variable) and Save are buttons.

    The panel always shows the equivalent ``%peft …`` line: paste it into a cell and you
    get exactly the same adapter. Panel and magics share one state: a ``%peft lora``
    in a cell updates an open panel, and an attach from the panel rebinds the model
    variable, so ``%peft show`` sees it at once. Errors appear in the panel as one line
    and change nothing.

    Needs a notebook front end with widgets (JupyterLab, Notebook 7, VS Code, Colab).

    Examples::

        %peft load tiny-llama
        %peft panel
        %peft panel --model clf
        panel = %peft panel            # keep a handle: panel.magic_line()
    """
    from ..panel import PeftPanel

    var, _model = ctx.model()
    return PeftPanel(ctx.ns, var=var, shell=ctx.shell)
