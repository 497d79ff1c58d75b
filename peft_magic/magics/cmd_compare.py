"""``%peft compare``: train several methods for the same budget and compare them."""

from __future__ import annotations

from typing import Any

from ..errors import PeftMagicError
from .registry import Context, command


def _body_candidates(body: str) -> list[tuple[str, dict[str, Any]]]:
    """One candidate per line of a ``%%peft compare`` body: ``METHOD [key=value …]``."""
    from ..syntax.read import parse_line

    out = []
    for raw in body.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        args = parse_line(line, frozenset(), frozenset(), command="compare")
        if len(args.positionals) != 1:
            raise PeftMagicError(f"'{line}' is not one method with its settings", "one per line, e.g. lora r=16")
        out.append((args.positionals[0], dict(args.settings)))
    return out


@command("compare", args="METHOD,METHOD,… data=EXPR|PATH steps=N [eval=EXPR|PATH|0.1] [lr=auto|default|X] "
                          "[repeats=K] [batch=] [objective=dpo|…] [any training setting]",
         summary="train each method for the same budget on the same data: one table, curves overlaid, a verdict",
         flags=(("--keep", "keep each trained candidate as an adapter named after its method"), "--model VAR",
                "--tokenizer VAR"),
         cell="code", group="training")
def cmd_compare(ctx: Context) -> Any:
    """Which method learns this task best in this budget? Each candidate is attached to the
    same base, trained on the same data in the same order for the same number of steps,
    evaluated with the task's own metrics when ``eval=`` is given (as ``%peft evaluate``
    would), and taken off again. One live table shows a row per method (status, learning
    rate, trainable params, step, loss, tokens/s, peak memory, time) with the loss curves
    overlaid; at the end the table is sorted by the task's metric (or the final loss), the
    best per column marked, with a one-line reading.

    Learning rates decide a short run, so each method gets its own: ``lr=auto`` (the
    default) walks a log-spaced grid around the method's default (⅓× … 30×; from 10×, up
    while the held-out loss improves, else down: 2 to 5 rates), trains each rate tried for a
    third of the steps, and trains the full run at the best — 1.7× to 2.7× the steps of a
    fixed-rate comparison; the chosen rate is a column and every probe is listed under the
    table. ``lr=default`` uses each method's default,
    ``lr=1e-3`` one rate for all. ``repeats=3`` trains each candidate three times (other
    seeds: data order, adapter init) and shows mean ± spread; the reading names a winner
    only when the gap is larger than the spreads. A candidate whose loss hardly moved is
    marked under-trained, with the reason.

    On preference data (or with ``objective=dpo``, ``ipo``, … and ``beta=``) each
    candidate is preference-tuned with that objective, and with ``eval=`` the table is
    sorted by the held-out reward margin TRL logs.

    Your model is left exactly as it was (its adapters, weights and active adapter);
    ``--keep`` keeps each trained candidate as an adapter named after its method (where
    peft allows them together; all are also saved under ``adapters/compare/``). A candidate
    that cannot attach, runs out of memory or diverges gets its row marked and the others
    go on; the stop button ends the comparison with the finished rows kept.

    Examples::

        %peft compare lora,dora,ia3,prefix,prompt,houlsby data=train steps=200 eval=dev
        %peft compare lora,ia3 data=train steps=50 eval=dev repeats=3 lr=default

        %%peft compare data=train steps=100 eval=0.1
        lora r=16
        lora r=4
        ia3
        prefix tokens=10
    """
    from ..api import compare

    settings = dict(ctx.settings)
    methods: list[Any] = []
    for word in ctx.args.positionals:
        methods += [m for m in word.split(",") if m]
    if ctx.cell is not None and ctx.cell.strip():
        methods += _body_candidates(ctx.cell)
    if "data" not in settings:
        raise PeftMagicError("which data?", "e.g. %peft compare lora,ia3 data=texts steps=50")
    ctx.settings = settings
    data = ctx.value("data")
    if "eval" in settings:
        settings["eval"] = ctx.value("eval")
    steps = settings.pop("steps", 100)
    var, model = ctx.model()
    result = compare(model, methods, data, tokenizer=ctx.tokenizer(var), steps=steps,
                     keep=bool(ctx.args.flag("--keep")), **settings)
    if result.model is not model:
        ctx.bind_model(var, result.model)
    return result
