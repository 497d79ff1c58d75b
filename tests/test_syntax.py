"""The ``%peft`` line grammar (``syntax/read.py``): what a user types → flags, settings,
positionals; and the lines the panel writes read back to the same values."""

from __future__ import annotations

import pytest

from peft_magic.errors import PeftMagicError
from peft_magic.syntax.read import parse_line


@pytest.mark.parametrize(("line", "settings"), [
    ('name="a,b" r=8', {"name": "a,b", "r": 8}),            # a quoted comma is one string, not a list
    ("prompt='Hello, world'", {"prompt": "Hello, world"}),
    ("target_modules=q_proj,v_proj", {"target_modules": ["q_proj", "v_proj"]}),
    ('k=a,"b,c"', {"k": ["a", "b,c"]}),                       # a list whose second item has a comma
    ("k=[a, 'b c']", {"k": ["a", "b c"]}),                    # spaces inside brackets stay in one value
    ('k={"a": 1}', {"k": {"a": 1}}),
    ('r="8"', {"r": 8}),                                       # quotes group; the text is still a literal
    ("""name="'8'" """, {"name": "8"}),                        # a Python string inside shell quotes
    ("k=['a,b', 'c']", {"k": ["a,b", "c"]}),                   # a Python list keeps its own quotes
    ('k=my" "name', {"k": "my name"}),                         # a partly quoted word, as a shell reads it
    (r"data=C:\d\x.jsonl", {"data": r"C:\d\x.jsonl"}),         # backslashes in a value are kept
    ("lr=2e-4 bias=none flag=TRUE", {"lr": 2e-4, "bias": None, "flag": True}),
])
def test_settings_read_as_a_user_means_them(line, settings):
    assert parse_line(line).settings == settings


def test_flags_and_positionals_are_unquoted_like_a_shell():
    args = parse_line('tiny llama --trace "/tmp/my traces" --fast', {"--trace"}, {"--fast"})
    assert args.positionals == ["tiny", "llama"]
    assert args.flags == {"--trace": "/tmp/my traces", "--fast": True}


@pytest.mark.parametrize(("line", "message"), [
    ('k="abc', "No closing quotation"),
    ("k=[a, b", "unclosed bracket in 'k=[a, b'"),
    ("--trac x", "unknown option --trac"),
    ("r=4 r=8", "'r' is given twice"),
])
def test_bad_lines_get_one_line_naming_the_problem(line, message):
    with pytest.raises(PeftMagicError) as e:
        parse_line(line, {"--trace"})
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["a,b", "Hello, world", "it's", 'say "hi"', "x y", "[not a list]", "8"])
def test_written_strings_read_back_as_the_same_string(value):
    from peft_magic.syntax.write import command_line

    line = command_line("train", [], {"k": value})
    assert parse_line(line.split(" ", 2)[2]).settings == {"k": value}, line
