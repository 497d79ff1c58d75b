"""The small Go-template renderer that checks Ollama templates: Go's semantics, as written by hand.

Each expectation below is what Go's text/template prints for the template (trim markers,
if / else if / range / with, eq / and / or / not / len / slice, truthiness), and what
Ollama builds from a conversation with a ``.Prompt`` / ``.Response`` template.
"""

from __future__ import annotations

import pytest

from peft_magic.exporting.gotemplate import TemplateError, cut_at, ollama_prompt, parse, render


@pytest.mark.parametrize("template, data, want", [
    ("a {{ .X }} b", {"X": "1"}, "a 1 b"),
    ("a {{- .X -}} b", {"X": "1"}, "a1b"),
    ("a\n  {{- .X }}\n", {"X": "1"}, "a1\n"),
    ("{{ .X }}", {}, "<no value>"),
    ("{{ if .S }}[{{ .S }}]{{ else }}none{{ end }}", {"S": ""}, "none"),
    ("{{ if .S }}[{{ .S }}]{{ else }}none{{ end }}", {"S": "x"}, "[x]"),
    ("{{ if eq .R \"user\" }}U{{ else if eq .R \"assistant\" }}A{{ else }}?{{ end }}", {"R": "assistant"}, "A"),
    ("{{ if and .A (not .B) }}yes{{ end }}", {"A": "1", "B": ""}, "yes"),
    ("{{ if or .A .B }}yes{{ else }}no{{ end }}", {"A": "", "B": 0}, "no"),
    ("{{ range .M }}<{{ .Role }}:{{ .Content }}>{{ end }}",
     {"M": [{"Role": "user", "Content": "hi"}, {"Role": "assistant", "Content": "yo"}]}, "<user:hi><assistant:yo>"),
    ("{{ range $i, $m := .M }}{{ $i }}={{ $m.Content }}{{ if $.Sep }},{{ end }}{{ end }}",
     {"M": [{"Content": "a"}, {"Content": "b"}], "Sep": True}, "0=a,1=b,"),
    ("{{ range .M }}x{{ else }}empty{{ end }}", {"M": []}, "empty"),
    ("{{ len .M }} {{ len (slice .M 1) }}", {"M": [1, 2, 3]}, "3 2"),
    ("{{ with .S }}<{{ . }}>{{ end }}", {"S": "v"}, "<v>"),
    ("{{/* a comment */}}ok", {}, "ok"),
    ('{{ "a\\nb" }}', {}, "a\nb"),
])
def test_renders_like_go(template, data, want):
    assert render(template, data) == want


def test_unsupported_or_broken_templates_raise_instead_of_rendering_something_else():
    for bad in ("{{ if .X }}open", "{{ end }}", "{{ template \"x\" }}", "{{ .X", "{{ printf \"%s\" .X }}"):
        with pytest.raises(TemplateError):
            render(bad, {"X": "1"})


def test_cut_at_response_drops_it_and_everything_after_in_document_order():
    nodes = parse("<{{ .Prompt }}>{{ if .X }}[{{ .Response }}|after]{{ else }}else{{ end }}tail")
    assert render(cut_at(nodes), {"Prompt": "p", "X": True, "Response": "r"}) == "<p>["
    assert render(cut_at(nodes), {"Prompt": "p", "X": False}) == "<p>"


CHATML = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n"
          "{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")


def test_ollama_prompt_one_turn_with_the_modelfile_system():
    got = ollama_prompt(CHATML, [{"role": "user", "content": "Hi"}], system="Be brief.")
    assert got == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_ollama_prompt_several_turns_system_only_once_and_cut_at_the_last_response():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    assert ollama_prompt(CHATML, msgs, system="ignored: the conversation has one") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n")
