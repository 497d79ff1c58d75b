"""Static HTML renderers for the engine's data objects.

Why static HTML (and not only widgets): a saved notebook shown on GitHub, nbviewer or
nbconvert renders ``text/html`` but no widget state; every summary must survive there.
Styles are inline and scoped under ``.peft-magic`` so they look right in JupyterLab,
Notebook 7, VS Code and Colab (light and dark themes: colours come from the front
end's own CSS variables where it defines them, with neutral fallbacks).
"""

from __future__ import annotations

import html
from typing import Any

from ..fmt import fmt_bytes, fmt_targets

STYLE = """<style>
.peft-magic{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.45;
  color:var(--jp-ui-font-color1,inherit)}
.peft-magic .pm-head{font-weight:600;margin:2px 0 4px}
.peft-magic .pm-dim{color:var(--jp-ui-font-color2,#666)}
.peft-magic table{border-collapse:collapse;margin:4px 0;font-size:12px}
.peft-magic th,.peft-magic td{padding:2px 10px 2px 0;text-align:left;border:none;vertical-align:top}
.peft-magic th{font-weight:600;border-bottom:1px solid var(--jp-border-color2,#ddd)}
.peft-magic td.num{text-align:right;font-variant-numeric:tabular-nums}
.peft-magic .pm-warn{color:var(--jp-warn-color0,#b45309)}
.peft-magic .pm-ok{color:var(--jp-success-color0,#15803d)}
.peft-magic .pm-err{color:var(--jp-error-color0,#b91c1c)}
.peft-magic .pm-bar{display:inline-block;height:8px;background:var(--jp-brand-color1,#3b82f6);border-radius:2px}
.peft-magic code{font-size:12px}
</style>"""


def escape(value: Any) -> str:
    return html.escape(str(value))


def wrap(inner: str) -> str:
    return f"{STYLE}<div class='peft-magic'>{inner}</div>"


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = ""
    for row in rows:
        cells = ""
        for i, cell in enumerate(row):
            cls = " class='num'" if i in numeric else ""
            cells += f"<td{cls}>{cell if isinstance(cell, Raw) else escape(cell)}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """A cell value that is already HTML."""


def summary_html(s: Any) -> str:
    quant = f", {s.quantization}" if s.quantization else ""
    parts = [f"<div class='pm-head'>{escape(s.model_class)} <span class='pm-dim'>({escape(s.model_type)}{quant}, "
             f"{escape(s.dtype)}, {escape(s.device)}, weights {fmt_bytes(s.footprint)})</span></div>",
             f"<div>trainable params: <b>{s.trainable:,}</b> / {s.total:,} ({s.percent:.4f}%)</div>"]
    if s.adapters:
        rows = []
        for a in s.adapters:
            state = "off" if s.adapters_off else ("active" if a.active else "")
            settings = ", ".join(f"{k}={v!r}" for k, v in a.settings.items())
            rows.append([a.name, a.method, settings, f"{a.trainable:,}",
                         f"{len(a.targets)}: {a.targets_grouped}" if a.targets else "—", state])
        parts.append(table(["adapter", "method", "settings", "params", "targeted modules", "state"], rows, {3}))
    else:
        parts.append("<div class='pm-dim'>no adapters — attach one with <code>%peft lora</code></div>")
    parts.append(f"<div class='pm-dim'>memory: {escape(s.memory.short())}</div>")
    return wrap("".join(parts))


def attach_html(r: Any) -> str:
    cls = "pm-dim" if r.status == "unchanged" else "pm-ok"
    parts = [f"<div class='pm-head {cls}'>{escape(r.headline)}</div>"]
    if r.summary is not None and r.status != "unchanged":
        s = r.summary
        pct = max(0.5, min(100.0, s.percent))
        parts.append(f"<div>trainable params: <b>{s.trainable:,}</b> / {s.total:,} ({s.percent:.4f}%) "
                     f"<span class='pm-bar' style='width:{pct:.1f}px'></span></div>")
        for a in s.adapters:
            if a.name == r.adapter:
                if a.targets:
                    parts.append(f"<div>targeted {len(a.targets)} modules: <code>{escape(a.targets_grouped)}</code></div>")
                else:
                    parts.append("<div class='pm-dim'>no modules replaced (virtual tokens / prompt encoder)</div>")
    for n in r.notes:
        parts.append(f"<div class='pm-warn'>note: {escape(n)}</div>")
    return wrap("".join(parts))


def targets_html(rep: Any) -> str:
    parts = [f"<div class='pm-head'>Adaptable layers of {escape(rep.model_type)} "
             f"<span class='pm-dim'>(peft default: {escape(fmt_targets(rep.default_targets))})</span></div>"]
    headers = ["name", "kind", "count", "shape", "params"] + (["matched"] if rep.pattern is not None else [])
    rows = []
    for g in rep.groups:
        name = Raw(f"<b>{escape(g.name)}</b> ★") if g.default else g.name
        row = [name, g.kind, g.count, g.shape, f"{g.params:,}"]
        if rep.pattern is not None:
            row.append(f"{g.matched}/{g.count}")
        rows.append(row)
    parts.append(table(headers, rows, {2, 4}))
    parts.append("<div class='pm-dim'>★ peft's default target for this architecture</div>")
    if rep.pattern is not None:
        parts.append(f"<div>pattern <code>{escape(fmt_targets(rep.pattern))}</code> matches "
                     f"<b>{len(rep.matched)}</b> modules</div>")
    for w in rep.warnings:
        parts.append(f"<div class='pm-warn'>warning: {escape(w)}</div>")
    return wrap("".join(parts))


def methods_html(rep: Any) -> str:
    parts = [f"<div class='pm-head'>{len(rep.methods)} PEFT methods "
             f"<span class='pm-dim'>(peft {escape(rep.peft_version)})</span></div>"]
    for family in rep.families():
        rows = []
        for m in rep.methods:
            if m.family != family:
                continue
            rows.append([Raw(f"<code>{escape(m.name)}</code>"), ", ".join(m.aliases), m.description,
                         "yes" if m.can_merge else "no", "yes" if m.supports_quantized else "no"])
        parts.append(f"<div class='pm-head' style='margin-top:8px'>{escape(family)}</div>")
        parts.append(table(["method", "aliases", "what it does", "merge", "4/8-bit base"], rows))
    return wrap("".join(parts))


