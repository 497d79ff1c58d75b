"""``--profile`` and ``%peft profile`` through a real kernel: the table shows under the
training display (as static HTML, so a saved notebook keeps it), and a profile is not a run."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel

DATA = "texts = [('word ' * (5 + (i * 7) % 40)).strip() for i in range(64)]"


def test_profile_shows_under_the_training_display_and_profile_is_not_a_run(kernel, tmp_path):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(DATA)
    res = kernel.ok(f"run = %peft train data=texts steps=6 batch=8 --profile --trace {tmp_path}")
    shown = [o for o in res.outputs if o.get("output_type") == "display_data"]
    # the training display (its live widget is replaced by the finished run's static HTML)
    widget = next(i for i, o in enumerate(shown) if "Training lora adapter" in o["data"].get("text/plain", ""))
    table = next(i for i, o in enumerate(shown) if "data loading / collation" in o["data"].get("text/html", ""))
    assert widget < table  # under the training display
    html = shown[table]["data"]["text/html"]
    for row in ("forward", "backward", "optimizer step", "our callbacks + display", "total (measured step)",
                "top operators by self time", "peak RAM"):
        assert row in html, row
    assert "profile of 5 steps after 1 warm-up" in shown[table]["data"]["text/plain"]
    assert kernel.eval("run.profile.steps") == 5
    assert kernel.eval("abs(run.profile.total_ms - run.profile.step_ms) < 1e-6")
    assert kernel.eval("run.profile.trace").startswith(str(tmp_path))
    assert list(tmp_path.glob("peft_magic-run*.json"))

    runs_before = kernel.eval("len(__import__('peft_magic').runs())")
    kernel.ok("import torch\n_w = {n: p.detach().clone() for n, p in model.named_parameters()}")
    res = kernel.ok("p = %peft profile data=texts steps=2 batch=4")
    assert kernel.eval("type(p).__name__") == "Profile" and kernel.eval("p.steps") == 2
    assert kernel.eval("all(torch.equal(_w[n], q) for n, q in model.named_parameters())")
    assert kernel.eval("len(__import__('peft_magic').runs())") == runs_before
    res = kernel.ok("%peft profile data=texts steps=2 batch=4")
    assert "data loading / collation" in res.html and "Profiling lora adapter" in res.html
    res = kernel.run("%peft profile data=texts --warmup x")
    assert res.error is not None and "--warmup takes a whole number" in res.error_text
    assert "--warmup" in kernel.ok("%peft help profile").text


def test_compile_on_a_cpu_trains_and_writes_nothing_to_stderr(kernel):
    """``compile=True`` where inductor's speed-ups do not apply (a CPU here; a T4 on Colab):
    the run trains and compiles, and transformers' notice about Ampere GPUs — nothing a
    notebook user can act on — does not land as red text under the cell."""
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(DATA)
    res = kernel.ok("run = %peft train data=texts steps=2 batch=8 compile=True compile_backend=eager")
    assert kernel.eval("run.status") == "completed" and kernel.eval("run.compile_steps") >= 1
    assert res.stderr == "", res.stderr
