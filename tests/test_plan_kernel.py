"""``%peft plan`` in a real kernel: a table with bars in the notebook, plain text, the data
object in the namespace, ``--measure`` on the live model (left exactly as it was), and
one-line errors."""

from __future__ import annotations

import pytest

from conftest import FINGERPRINT

pytestmark = pytest.mark.kernel


def test_plan_without_a_model_says_how(tmp_path):
    from kernel import Kernel

    fresh = Kernel(cwd=tmp_path)  # no model anywhere: the module's shared kernel may hold one by now
    try:
        fresh.ok("%load_ext peft_magic")
        message = fresh.run("%peft plan").one_line_error()
        assert "which model?" in message and "%peft plan smollm2" in message
    finally:
        fresh.shutdown()


def test_plan_by_name_shows_table_bars_and_returns_the_plan(kernel):
    res = kernel.ok("p = %peft plan tiny-llama lora qlora prompt r=4 batch=2 seq=32 --gpu T4\np")
    text, html = res.text, res.html
    assert "Memory plan for tiny-llama" in text and "on T4 (15.0 GB)" in text
    for label in ("LoRA r=4 (fp16)", "QLoRA r=4 (4-bit NF4)", "prompt tuning (20 tokens, fp16)", "recommended:"):
        assert label in text, label
    assert "memory by part" in html and "✓ fits" in html and "border-left:2px dashed" in html
    assert html.count("title='weights:") == 3  # one bar per method
    assert kernel.eval("type(p).__name__") == "Plan"
    assert kernel.eval("p['qlora'].checkpointing and p['qlora'].parts.weights < p['lora'].parts.weights * 2")
    assert kernel.eval("p.recommendation.method") in ("lora", "qlora")
    assert kernel.eval("'torch' in __import__('sys').modules")  # the plan imported the stack lazily


def test_plan_of_the_model_in_the_notebook_with_measure(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    kernel.ok(FINGERPRINT)
    before = kernel.eval("_fp(model)")
    res = kernel.ok("%peft plan --measure batch=2 seq=32")
    assert "as attached now: lora 'default' (r=4)" in res.text
    assert "measured (live tensor bytes, 2 real steps at batch 2 × seq 32" in res.text
    assert kernel.eval("_fp(model)") == before  # two real steps, and not one weight moved

    res = kernel.ok("%peft plan lora --checkpointing batch=2 seq=32")
    assert "gradient checkpointing" in res.text and "as attached now" in res.text


def test_plan_errors_are_one_line(kernel):
    for line, expect in (("%peft plan tiny-llama lora rr=4", "did you mean 'r'?"),
                         ("%peft plan tiny-llama --gpu T5", "unknown GPU 'T5'"),
                         ("%peft plan tiny-llama batch=-1", "batch must be a whole number"),
                         ("%peft plan tiny-llama lora frobnicate", "'frobnicate' is not a method"),
                         ("%peft plan tiny-llama optim=adamx", "unknown optimizer 'adamx'")):
        message = kernel.run(line).one_line_error()
        assert expect in message, (line, message)


def test_help_plan(kernel):
    res = kernel.ok("%peft help plan")
    assert "--gpu" in res.text and "--measure" in res.text and "meta device" in res.text
