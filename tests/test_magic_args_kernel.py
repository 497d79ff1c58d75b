"""Magic arguments as a notebook user writes them, through a real kernel.

* ``data=`` / ``eval=`` / ``--model`` / ``--tokenizer`` take Python expressions evaluated in
  the notebook (subscripts, slices, method calls); a string or text that does not evaluate
  is a path; otherwise one line says what was tried, and nothing changes.
* Patterns reach the parser verbatim: IPython's ``{…}`` expansion is off for ``%peft``, so
  regex quantifiers (``{1}``, ``{1,2}``) survive, while ``{name}`` / ``$name`` of a variable
  still expand (``r={n}``).
"""

from __future__ import annotations

import pytest

from conftest import FINGERPRINT

pytestmark = pytest.mark.kernel

ROWS = ("rows = [{'prompt': f'Q{i}?', 'completion': f' A{i}.'} for i in range(24)]\n"
        "from datasets import Dataset, DatasetDict\n"
        "ds = DatasetDict({'train': Dataset.from_list(rows), 'validation': Dataset.from_list(rows[:4])})")


@pytest.fixture(scope="module")
def lora(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    kernel.ok(ROWS)
    return kernel


@pytest.mark.parametrize("expr,count", [
    ("rows[8:]", 16),
    ('ds["train"]', 24),
    ('ds["train"].select(range(16))', 16),
    ("rows[:{n}]", 10),
])
def test_data_is_a_python_expression(lora, expr, count):
    lora.ok("n = 10")
    res = lora.ok(f"%peft train data={expr} steps=1 batch=4 --display none")
    assert res.stderr == ""
    assert lora.eval("__import__('peft_magic.state').state.runs()[-1].data").startswith(f"{count} ")


def test_eval_and_data_expressions_in_a_cell_body(lora):
    lora.ok('%%peft train --display none\ndata=ds["train"].select(range(8))\neval=ds["validation"]\nsteps=1\nbatch=4')
    data = lora.eval("__import__('peft_magic.state').state.runs()[-1].data")
    assert data.startswith("8 ") and "eval on 4 held-out examples" in data


@pytest.mark.parametrize("expr,expected", [
    ("rows[8", "unclosed bracket in 'data=rows[8"),
    ("rows[100]", "data=rows[100]: IndexError: list index out of range; and no file by that name"),
    ('ds["trian"]', "data=ds[\"trian\"]: KeyError: trian; and no file by that name"),
    ("nothing_here", "no variable 'nothing_here' in the notebook (and no file by that name) for data="),
    ("'missing.jsonl'", "no such file: missing.jsonl (for data=)"),
])
def test_a_bad_data_expression_is_one_line_and_changes_nothing(lora, expr, expected):
    lora.ok(FINGERPRINT + "_before = (_fp(model), len(__import__('peft_magic.state').state.runs()))")
    res = lora.run(f"%peft train data={expr} steps=1")
    assert res.error is not None and res.error["ename"] == "UsageError"
    assert res.error["evalue"].startswith(expected), res.error["evalue"]
    assert "\n" not in res.error["evalue"]
    assert res.stdout == "" and res.data("text/html") == []  # no "Training" header above the error
    assert lora.eval("(_fp(model), len(__import__('peft_magic.state').state.runs())) == _before")


def test_regex_quantifiers_reach_targets_and_attach_verbatim(kernel):
    kernel.ok("%peft load tiny-llama --as base_model")
    res = kernel.ok(r"%peft targets .*layers\.[0-9]{1}\.self_attn\.q_proj --model base_model")
    assert "[0-9]{1}" in res.text and "matches 2 modules" in res.text, res.text  # {1} arrived as {1}
    res = kernel.ok(r'%peft lora r=2 target=".*layers\.\d{1}\.self_attn\.(q|v)_proj" --model base_model')
    assert "q_proj ×2, v_proj ×2" in res.text, res.text
    assert kernel.eval("base_model.peft_config['default'].target_modules") == r".*layers\.\d{1}\.self_attn\.(q|v)_proj"
    res = kernel.ok(r"%peft targets .*layers\.[01]{1,2}\.mlp\.down_proj --model base_model")
    assert "matches 2 modules" in res.text, res.text


def test_variables_expand_in_braces_and_dollar(kernel):
    kernel.ok("%peft load tiny-llama --as m2\nrank = 6")
    res = kernel.ok("%peft lora r={rank} alpha=$rank --model m2")
    assert kernel.eval("(m2.peft_config['default'].r, m2.peft_config['default'].lora_alpha)") == [6, 6]
    assert res.stderr == ""


def test_model_and_tokenizer_as_expressions(kernel):
    kernel.ok("%peft load tiny-llama --as m3\nzoo = {'small': m3}\ntoks = [m3_tokenizer]")
    res = kernel.ok("%peft lora r=2 --model zoo['small']")
    assert "attached lora adapter 'default'" in res.text
    # the wrapped model is bound where the expression points, as zoo['small'] = … would
    assert kernel.eval("type(zoo['small']).__name__") == "PeftModelForCausalLM"
    kernel.ok("texts = ['a b c d e f'] * 8")
    kernel.ok("%peft train data=texts steps=1 batch=4 --model zoo['small'] --tokenizer toks[0] --display none")
    res = kernel.run("%peft show --model zoo['smal']")
    assert res.error["evalue"] == "--model zoo['smal']: KeyError: smal"


def test_predict_takes_an_expression_or_text(kernel):
    kernel.ok("%peft load tiny-bert --labels neg,pos --as clf\nreviews = ['great', 'awful', 'fine']")
    kernel.ok("%peft lora r=2 target=query,value --model clf")
    res = kernel.ok("%peft predict reviews[:2] --model clf")
    assert kernel.eval("len(_)") == 2
    res = kernel.ok("%peft predict 'reviews[:2]' --model clf")  # quoted: the text itself
    assert kernel.eval("len(_)") == 1
    res = kernel.ok("%peft predict len --model clf")  # a bare word that is no variable: text, never a builtin
    assert kernel.eval("len(_)") == 1 and res.stderr == ""
