"""Static HTML for the adapter lifecycle: results, the adapters table, generations side by side."""

from __future__ import annotations

from typing import Any

from ..fmt import fmt_bytes
from .html import Raw, escape, table, wrap


def lifecycle_html(r: Any) -> str:
    kind = "pm-dim" if "nothing changed" in r.message else "pm-ok"
    parts = [f"<div class='pm-head {kind}'>{escape(r.message)}</div>"]
    if r.files:
        parts.append("<div class='pm-dim'>" + ", ".join(f"<code>{escape(n)}</code> ({fmt_bytes(s)})"
                                                       for n, s in r.files) + "</div>")
    for n in r.notes:
        parts.append(f"<div class='pm-warn'>note: {escape(n)}</div>")
    return wrap("".join(parts))


def adapters_html(t: Any) -> str:
    if not t.rows:
        return wrap(f"<div class='pm-dim'>{escape(t.model_class)}: no adapters — attach one with "
                    "<code>%peft lora</code> or <code>%peft load-adapter DIR</code></div>")
    head = f"<div class='pm-head'>{escape(t.model_class)}: {len(t.rows)} adapter(s)"
    if t.adapters_off:
        head += " <span class='pm-warn'>— all switched off (%peft on)</span>"
    rows = []
    for r in t.rows:
        active = "yes" if r.active and not t.adapters_off else ("off" if r.active else "")
        rows.append([Raw(f"<b>{escape(r.name)}</b>") if r.active else r.name, r.method,
                     f"{r.trainable:,}" if not r.merged else "–",
                     "yes" if r.requires_grad else "", active, "yes" if r.merged else ""])
    return wrap(head + "</div>" + table(["name", "method", "params", "trainable", "active", "merged"], rows, {2}))


def generation_html(g: Any) -> str:
    cols = []
    for out in g.outputs:
        label = escape(out.label)
        cols.append(
            "<div style='flex:1 1 0;min-width:220px;border:1px solid var(--jp-border-color2,#ddd);"
            "border-radius:4px;padding:6px 8px'>"
            f"<div class='pm-head'>{label}</div>"
            f"<div style='white-space:pre-wrap'>{escape(out.text)}</div>"
            f"<div class='pm-dim' style='margin-top:4px'>{out.new_tokens} tokens · {out.seconds:.2f} s</div></div>")
    settings = ", ".join(f"{k}={v!r}" for k, v in g.settings.items())
    head = (f"<div class='pm-dim'>prompt{' (chat template)' if g.chat else ''}: "
            f"<code>{escape(g.prompt)}</code> · seed {g.seed}" + (f" · {escape(settings)}" if settings else "")
            + "</div>")
    notes = "".join(f"<div class='pm-warn'>note: {escape(n)}</div>" for n in g.notes)
    return wrap(head + "<div style='display:flex;gap:8px;flex-wrap:wrap;margin-top:4px'>" + "".join(cols)
                + "</div>" + notes)
