"""``%peft export`` through real kernels: the magic, its one-line refusals, its live display,
and the status bar's ``exporting`` phase (driven the way the JupyterLab extension drives it)."""

from __future__ import annotations

import pytest
from conftest import FINGERPRINT

pytestmark = pytest.mark.kernel


def test_export_magic_writes_refuses_in_one_line_and_leaves_the_model(kernel):
    kernel.ok("%peft load tiny-llama")
    kernel.ok("%peft lora r=4")
    kernel.ok(FINGERPRINT + "import torch\n"
              "with torch.no_grad():\n"
              "    for n, p in model.named_parameters():\n"
              "        if 'lora_B' in n: p.add_(0.1)\n"
              "_before = _fp(model)")
    res = kernel.ok("%peft export merged out/m")
    assert "exported the merged model to out/m" in res.text and "model.safetensors" in res.text
    assert "export merged: done — the result is below" in res.text  # the live bar, left as one static line
    assert kernel.eval("sorted(p.name for p in __import__('pathlib').Path('out/m').iterdir())") == [
        "README.md", "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"]
    assert kernel.eval("_fp(model) == _before")
    for line, words in (("%peft export merged out/m", "out/m already exists: nothing was written — pass --force"),
                        ("%peft export gguf out/g quant=q9", "unknown GGUF type 'q9'"),
                        ("%peft export merged out/x quan=f16", "unknown export setting 'quan': did you mean 'quant'?"),
                        ("%peft export onnx out/x", "unknown export format 'onnx'"),
                        ("%peft export merged", "needs a folder to write to")):
        res = kernel.run(line)
        assert res.error is not None and res.error["ename"] == "UsageError", line
        assert words in res.error_text and len(res.error_text.strip().splitlines()) == 1, res.error_text
    assert kernel.eval("sorted(p.name for p in __import__('pathlib').Path('out').iterdir())") == ["m"]
    kernel.ok("%peft export merged out/m --force")
    assert kernel.eval("_fp(model) == _before")
    help_text = kernel.ok("%peft help export").text
    for word in ("merged|gguf|ollama PATH", "--force", "f16", "bf16", "q8_0", "f32", "template=plain", "converter="):
        assert word in help_text, word


def test_status_bar_shows_an_export_in_progress(tmp_path):
    from test_comm_kernel import Frontend

    frontend = Frontend(tmp_path)
    try:
        frontend.run("%load_ext peft_magic")
        frontend.comm_id = frontend.comms()[0]
        frontend.run("%peft load tiny-llama")
        frontend.run("%peft lora r=4")
        pushed = frontend.run("%peft export merged out/m")
        assert frontend.last_reply["status"] == "ok"
        exporting = [p for p in pushed if p["phase"] == "exporting"]
        assert exporting, [p["phase"] for p in pushed]
        assert all(p["export"]["format"] == "merged" and p["export"]["path"] == "out/m" for p in exporting)
        fractions = [p["export"]["fraction"] for p in exporting]
        assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-1] < 1, fractions
        final = pushed[-1]
        assert final["phase"] == "idle" and final["export"]["stage"] == "done" and final["export"]["fraction"] == 1.0
        assert final["adapter"] == "default"
    finally:
        frontend.close()
