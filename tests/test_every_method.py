"""Every method in the installed peft's registry, on a tiny Llama, through the API.

Each either attaches (trainable parameters > 0; a forward/backward pass puts gradients
on adapter parameters only) or fails with a one-line PeftMagicError saying why. The
outcome table is written to test-artifacts/methods.txt for the closing note.
"""

from __future__ import annotations

import pytest

import peft_magic
from peft_magic.errors import PeftMagicError
from peft_magic.peft_methods.discovery import registry

# Methods whose forward needs extra inputs besides input_ids (documented by peft).
_TASK_IDS = lambda torch, x: {"task_ids": torch.zeros(x.shape[0], dtype=torch.long)}  # noqa: E731
EXTRA_INPUTS = {"POLY": _TASK_IDS, "MULTITASK_PROMPT_TUNING": _TASK_IDS}

RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def fresh_model(tiny_llama_path):
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM

    def make():
        return AutoModelForCausalLM.from_pretrained(tiny_llama_path)

    return make


@pytest.mark.parametrize("peft_type", list(registry()))
def test_method_attaches_or_explains(peft_type, fresh_model):
    import torch

    model = fresh_model()
    frozen_before = {n for n, p in model.named_parameters()}
    try:
        result = peft_magic.attach(model, peft_type.lower())
    except PeftMagicError as e:
        msg = str(e)
        assert "\n" not in msg and msg.strip(), msg
        assert len(msg) < 400, msg
        # the failure left the model untouched: same parameters, all still trainable
        assert {n for n, p in model.named_parameters()} == frozen_before
        assert all(p.requires_grad for p in model.parameters())
        RESULTS[peft_type] = f"explained: {msg}"
        return
    pm = result.model
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable, "attached but nothing is trainable"
    assert result.summary.trainable > 0
    x = torch.randint(5, 400, (2, 12))
    extra = EXTRA_INPUTS.get(peft_type, lambda t, x: {})(torch, x)
    out = pm(input_ids=x, labels=x, **extra)
    assert torch.isfinite(out.loss), f"loss {out.loss}"
    out.loss.backward()
    with_grad = [n for n, p in pm.named_parameters() if p.grad is not None]
    assert with_grad, "no parameter received a gradient"
    assert set(with_grad) <= set(trainable), set(with_grad) - set(trainable)
    RESULTS[peft_type] = f"attached: {result.summary.trainable:,} trainable params"


def test_write_method_table(artifacts):
    """Runs last in this module: the table for the closing note."""
    lines = [f"{k:<26} {v}" for k, v in sorted(RESULTS.items())]
    attached = sum(v.startswith("attached") for v in RESULTS.values())
    lines.append(f"{attached} of {len(RESULTS)} attached; the rest explained why")
    (artifacts / "methods.txt").write_text("\n".join(lines) + "\n")
    assert attached >= 30
