"""The model's chat template as an Ollama Modelfile: ``TEMPLATE``, ``SYSTEM``, ``stop``.

Why derived and checked, not looked up by model name: a fine-tuned model carries the
chat template it was trained with, and a Modelfile whose template differs from it by a
newline or a missing turn marker is the most common reason a model that answered well
in the notebook writes gibberish (or never stops) in Ollama. So the template is
*rendered* with marker strings (``apply_chat_template`` on a few small conversations)
and its structure read off the output: what comes before the first user message with
and without a system message, between a user message and the answer (the generation
prompt), and between an answer and the next user message. That covers the ChatML
(``<|im_start|>``), Llama 3 (``<|start_header_id|>``), ``[INST]`` (Mistral), Gemma
(``<start_of_turn>``) and Phi-3 (``<|user|>``) families and any template of the same
shape, whatever the model is called.

The result is written in Ollama's ``.System`` / ``.Prompt`` / ``.Response`` form and
then *checked*: rendered the way Ollama renders it (``gotemplate.ollama_prompt``) for a
one-turn and a multi-turn conversation, with and without a system message, it must give
exactly the chat template's text (a leading BOS token aside: llama.cpp adds it itself,
so it is left out of the template when the tokenizer adds one). A template that does
not pass — one with logic these structures cannot express — is refused in one line;
``template="plain"`` writes a bare ``{{ .Prompt }}`` instead, on purpose.

A model without a chat template (a base model) gets ``{{ .Prompt }}``: its prompts go
to the model as they are, which is right for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeftMagicError, first_line
from .gotemplate import TemplateError, ollama_prompt

PLAIN = "{{ .Prompt }}"
_S, _U1, _A1, _U2 = "PMSYSTEMTEXT", "PMUSERONE", "PMREPLYONE", "PMUSERTWO"
#: real-looking turns for the check (the markers above find the structure)
_CHECK = [("You answer in one short sentence.", "What is the capital of France?", "Paris.", "And of Italy?")]
FAMILIES = (("<|im_start|>", "ChatML"), ("<|start_header_id|>", "Llama 3"), ("[INST]", "[INST] (Mistral / Llama 2)"),
            ("<start_of_turn>", "Gemma"), ("<|user|>", "Phi-3 / Zephyr"))


@dataclass
class Translation:
    """A Modelfile's template part: TEMPLATE, SYSTEM, stop strings, and what to tell the user."""

    template: str
    system: str | None = None
    stops: list[str] = field(default_factory=list)
    family: str = "none"
    notes: list[str] = field(default_factory=list)


def _render(tokenizer: Any, messages: list[dict[str, str]], gen: bool = True) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _special_tokens(tokenizer: Any) -> list[str]:
    names = set(getattr(tokenizer, "all_special_tokens", []) or [])
    try:
        names |= set(tokenizer.get_added_vocab())
    except Exception:
        pass
    return sorted((t for t in names if t), key=len, reverse=True)


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    try:
        ids = tokenizer("x").input_ids
    except Exception:
        return False
    return bool(ids) and ids[0] == bos_id


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def _split(text: str, *markers: str) -> list[str]:
    """``text`` cut at each marker in turn; raises when a marker is missing or out of order."""
    parts, rest = [], text
    for m in markers:
        i = rest.find(m)
        if i < 0:
            raise ValueError(f"the chat template does not show the marker {m}")
        parts.append(rest[:i])
        rest = rest[i + len(m):]
    return parts + [rest]


def _turn_end(between: str, specials: list[str]) -> tuple[str, str]:
    """Split what separates an answer from the next user message into (end of the answer,
    start of the next user turn): the end is up to the first special token, plus newlines."""
    first = None
    for tok in specials:
        i = between.find(tok)
        if i >= 0 and (first is None or i < first[0]):
            first = (i, tok)
    if first is None:
        return "", between
    end = first[0] + len(first[1])
    while end < len(between) and between[end] in "\r\n":
        end += 1
    return between[:end], between[end:]


def _stops(tokenizer: Any, end: str, user_prefix: str, specials: list[str]) -> list[str]:
    out: list[str] = []
    for tok in specials:
        if tok in end:
            out.append(tok)
    for tok in specials:
        if user_prefix.strip().startswith(tok):
            out.append(tok)
            break
    eos = getattr(tokenizer, "eos_token", None)
    if eos:
        out.append(eos)
    seen: list[str] = []
    for s in out:
        if s.strip() and s not in seen:
            seen.append(s)
    return seen


def _structure(tokenizer: Any) -> Translation:
    """Read the template's pieces off renders with markers, and write the Go template."""
    bos = getattr(tokenizer, "bos_token", None) if _adds_bos(tokenizer) else None
    specials = _special_tokens(tokenizer)
    one = _strip_bos(_render(tokenizer, [{"role": "user", "content": _U1}]), bos)
    three = _strip_bos(_render(tokenizer, [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
                                           {"role": "user", "content": _U2}]), bos)
    first_prefix, gen = _split(one, _U1)
    p3, gen3, between, gen3b = _split(three, _U1, _A1, _U2)
    if p3 != first_prefix or gen3 != gen or gen3b != gen:
        raise ValueError("its turns are not written the same way each time")
    end, user_prefix = _turn_end(between, specials)
    stops = _stops(tokenizer, end, user_prefix, specials)
    try:
        sys_render = _strip_bos(_render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U1}]),
                                bos)
    except Exception:  # templates without a system role raise on one
        sys_render = None
    notes: list[str] = []
    system = None
    if sys_render is None or _S not in sys_render:
        if first_prefix != user_prefix:
            raise ValueError("its first turn differs from the others in a way the Modelfile cannot express")
        head = ""
        notes.append("the chat template has no system role: a SYSTEM prompt set in Ollama is not used")
    else:
        sys_before, sys_after, gen1 = _split(sys_render, _S, _U1)
        if gen1 != gen:
            raise ValueError("a system message changes how the answer starts")
        if first_prefix != user_prefix:  # without a system message the template writes a default one
            if first_prefix.startswith(sys_before) and first_prefix.endswith(sys_after) and \
                    len(first_prefix) >= len(sys_before) + len(sys_after):
                system = first_prefix[len(sys_before):len(first_prefix) - len(sys_after)]
            if not system:
                raise ValueError("its first turn differs from the others in a way the Modelfile cannot express")
        if sys_after.endswith(user_prefix):
            head = "{{ if .System }}" + sys_before + "{{ .System }}" + sys_after[:len(sys_after) - len(user_prefix)] \
                + "{{ end }}"
        else:
            head = "{{ if .System }}" + sys_before + "{{ .System }}" + sys_after + "{{ else }}" + user_prefix \
                + "{{ end }}"
            user_prefix = ""
    template = head + user_prefix + "{{ .Prompt }}" + gen + "{{ .Response }}" + end
    if bos:
        notes.append(f"the BOS token {bos} is left out of the template: llama.cpp adds it")
    family = next((name for marker, name in FAMILIES if marker in one), "custom")
    return Translation(template, system, stops, family, notes)


def check(tokenizer: Any, tr: Translation) -> None:
    """Render ``tr`` as Ollama would and compare with the chat template; ValueError on a difference."""
    bos = getattr(tokenizer, "bos_token", None) if _adds_bos(tokenizer) else None
    for system, u1, a1, u2 in _CHECK:
        convs = [[{"role": "user", "content": u1}],
                 [{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
                  {"role": "user", "content": u2}]]
        if "{{ .System }}" in tr.template:
            convs += [[{"role": "system", "content": system}] + c for c in convs]
        for conv in convs:
            want = _strip_bos(_render(tokenizer, conv), bos)
            got = _strip_bos(ollama_prompt(tr.template, conv, tr.system), bos)
            if got != want:
                raise ValueError(f"the Ollama template gives {got[:60]!r}… where the chat template gives "
                                 f"{want[:60]!r}…")


def translate(tokenizer: Any, template: str = "auto") -> Translation:
    """The Modelfile template for ``tokenizer``'s chat template, checked (see the module doc)."""
    eos = getattr(tokenizer, "eos_token", None)
    if template == "plain":
        return Translation(PLAIN, stops=[eos] if eos else [], family="plain",
                           notes=["template=plain: prompts go to the model as they are, without its chat format"])
    if template != "auto":
        raise PeftMagicError(f"unknown template setting '{template}'", "use template=auto (default) or template=plain")
    chat = getattr(tokenizer, "chat_template", None)
    if isinstance(chat, dict):
        chat = chat.get("default")
    if not chat:
        return Translation(PLAIN, stops=[eos] if eos else [], family="none",
                           notes=["the tokenizer has no chat template: prompts go to the model as they are"])
    try:
        tr = _structure(tokenizer)
        check(tokenizer, tr)
    except (ValueError, TemplateError) as e:
        raise PeftMagicError(f"the chat template cannot be written as an Ollama template ({first_line(e)}): "
                             "nothing was written",
                             "export gguf and write the Modelfile TEMPLATE yourself, or pass template=plain "
                             "for a bare {{ .Prompt }} template") from None
    except Exception as e:  # the tokenizer's template itself failed to render
        raise PeftMagicError(f"the chat template does not render ({first_line(e)}): nothing was written",
                             "fix tokenizer.chat_template, or pass template=plain") from None
    if '"""' in tr.template or (tr.system and '"""' in tr.system):
        raise PeftMagicError('the chat template contains """, which a Modelfile cannot quote: nothing was written',
                             "pass template=plain and write the TEMPLATE yourself")
    return tr


def ollama_name(folder_name: str) -> str:
    """A model name Ollama accepts, from the export folder's name."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in folder_name.lower()).strip("-._")
    return name or "peft-model"


def modelfile(gguf_name: str, tr: Translation, *, about: str, name: str) -> str:
    """The Modelfile's text (``FROM`` the GGUF file beside it)."""
    lines = [f"# {about}", "# Import into Ollama (from this folder):", f"#   ollama create {name} -f Modelfile",
             f"FROM ./{gguf_name}", f'TEMPLATE """{tr.template}"""']
    if tr.system:
        lines.append(f'SYSTEM """{tr.system}"""')
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in tr.stops]
    return "\n".join(lines) + "\n"
