"""Chat template → Ollama Modelfile TEMPLATE, per template family, on real tokenizers.

The tokenizers are tiny-llama's with each family's special tokens, BOS behaviour and
chat template (Jinja, as the model families ship them). For each, the TEMPLATE that
``ollama.translate`` writes is rendered the way Ollama renders it (one execution per
turn, cut at ``{{ .Response }}``) and must equal ``apply_chat_template``'s text for new
conversations (multi-line and non-ASCII content), a leading BOS aside where the
tokenizer adds BOS itself.
"""

from __future__ import annotations

import pytest
from tokenizers.processors import TemplateProcessing

from peft_magic.errors import PeftMagicError
from peft_magic.exporting import ollama
from peft_magic.exporting.gotemplate import ollama_prompt

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else "
         "message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
PHI3 = ("{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
INST = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '[INST] ' + "
        "message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{% if loop.index0 == 0 or "
        "messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}{% endif %}{{ message['content'] + "
        "' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
LLAMA2 = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
          "message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
          "message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

FAMILIES = {  # name: (template, bos, eos, extra special tokens, family word, stops)
    "chatml": (CHATML, None, "<|im_end|>", ["<|im_start|>"], "ChatML", ["<|im_end|>", "<|im_start|>"]),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"], "Llama 3",
               ["<|eot_id|>", "<|start_header_id|>"]),
    "gemma": (GEMMA, "<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"], "Gemma",
              ["<end_of_turn>", "<start_of_turn>", "<eos>"]),
    "phi3": (PHI3, None, "<|endoftext|>", ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"], "Phi-3 / Zephyr",
             ["<|end|>", "<|user|>", "<|endoftext|>"]),
    "inst": (INST, "<s>", "</s>", [], "[INST] (Mistral / Llama 2)", ["</s>"]),
}

CONVERSATIONS = [
    [{"role": "user", "content": "Write a haiku\nabout the sea."}],
    [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Bonjour ?"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "and 3+3?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
]


def _tokenizer(path: str, template: str | None, bos: str | None = None, eos: str | None = None,
               extra: list[str] | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    special: dict = {"additional_special_tokens": list(extra or [])}
    if eos:
        special["eos_token"] = eos
    if bos:
        special["bos_token"] = bos
    tok.add_special_tokens(special)
    if bos:  # like the real tokenizers of these families: BOS added to every encoding
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    tok.chat_template = template
    return tok


def _strip(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_template_renders_the_chat_templates_own_text(tiny_llama_path, family):
    template, bos, eos, extra, word, stops = FAMILIES[family]
    tok = _tokenizer(tiny_llama_path, template, bos, eos, extra)
    tr = ollama.translate(tok)
    assert tr.family == word
    assert tr.stops == stops
    assert "{{ .Prompt }}" in tr.template and "{{ .Response }}" in tr.template
    if bos:
        assert bos not in tr.template  # llama.cpp adds it (add_bos_token)
    for conv in CONVERSATIONS:
        if family == "gemma" and conv[0]["role"] == "system":
            continue  # Gemma's template refuses a system message itself
        want = _strip(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True), bos)
        assert ollama_prompt(tr.template, conv, tr.system) == want, conv


def test_chatml_translation_is_ollamas_own_chatml_form_with_the_default_system(tiny_llama_path):
    tok = _tokenizer(tiny_llama_path, CHATML, None, "<|im_end|>", ["<|im_start|>"])
    tr = ollama.translate(tok)
    assert tr.system == "You are a helpful assistant."
    assert tr.template == ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n"
                           "{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")
    text = ollama.modelfile("model-q8_0.gguf", tr, about="test", name="demo")
    assert "FROM ./model-q8_0.gguf\n" in text and 'SYSTEM """You are a helpful assistant."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "ollama create demo -f Modelfile" in text


def test_a_template_ollama_cannot_express_is_refused_in_one_line_and_plain_is_explicit(tiny_llama_path):
    tok = _tokenizer(tiny_llama_path, LLAMA2, "<s>", "</s>")
    with pytest.raises(PeftMagicError) as err:
        ollama.translate(tok)
    msg = str(err.value)
    assert "cannot be written as an Ollama template" in msg and "template=plain" in msg and "\n" not in msg
    tr = ollama.translate(tok, "plain")
    assert tr.template == "{{ .Prompt }}" and tr.notes and "template=plain" in tr.notes[0]
    with pytest.raises(PeftMagicError, match="unknown template setting 'fancy'"):
        ollama.translate(tok, "fancy")


def test_a_base_model_without_chat_template_gets_the_prompt_as_it_is(tiny_llama_path):
    tok = _tokenizer(tiny_llama_path, None)
    tr = ollama.translate(tok)
    assert tr.template == "{{ .Prompt }}" and "no chat template" in tr.notes[0]
    assert ollama_prompt(tr.template, [{"role": "user", "content": "Once upon"}]) == "Once upon"
