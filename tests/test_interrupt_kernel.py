"""The stop button during %peft train: stop at a step boundary, keep the weights, resume."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.kernel


def test_interrupt_keeps_weights_and_resume_finishes(kernel, tmp_path):
    flag = tmp_path / "started"
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=8")
    kernel.ok(
        "import time, pathlib, torch\n"
        "texts = ['The quick brown fox jumps over the lazy dog.'] * 16 + ['I love books about science.'] * 16\n"
        f"_flag = pathlib.Path(r'{flag}')\n"
        "_seen = {'n': 0}\n"
        "def _slow(module, args):\n"
        "    # a slow step so that the test can press stop mid-run\n"
        "    _seen['n'] += 1\n"
        "    time.sleep(0.02)\n"
        "    if _seen['n'] == 5:\n"
        "        _flag.write_text('running')\n"
        "_h = model.base_model.model.model.layers[0].register_forward_pre_hook(_slow)\n"
        "_init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}\n"
    )
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(res=kernel.run("%peft train data=texts steps=120 batch=4 --display text")))
    worker.start()
    deadline = time.time() + 180
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "training never started"
    time.sleep(0.3)
    kernel.interrupt()
    worker.join(timeout=300)
    res = result["res"]
    assert res.error is None, res.error_text  # an interrupt is not an error: the run stops cleanly
    assert "interrupted" in res.text
    assert kernel.eval("1 + 1") == 2  # the kernel is alive
    run = kernel.eval("(lambda r: [r.status, r.steps_done, r.total_steps, r.run_id])(__import__('peft_magic').runs()[-1])")
    status, done, total, run_id = run
    assert status == "interrupted" and 0 < done < total == 120
    changed = kernel.eval("sum(not torch.equal(_init[n], p) for n, p in model.named_parameters() if p.requires_grad)")
    assert changed > 0  # the adapter kept what it learned
    # the model is usable and a resumed run continues the same record to the end
    kernel.ok("x = torch.randint(5, 400, (2, 8)); model(input_ids=x)")
    res = kernel.ok("%peft train --resume --display text")
    assert "completed 120/120" in res.text, res.text
    after = kernel.eval("(lambda r: [r.status, r.steps_done, r.run_id, len(__import__('peft_magic').runs())])"
                        "(__import__('peft_magic').runs()[-1])")
    assert after[:3] == ["completed", 120, run_id]
    res = kernel.run("%peft train --resume")
    assert res.error is not None and "no interrupted run" in res.error_text
