"""Every method in the installed peft's registry, on a tiny Llama, through the API.

Each method's outcome is pinned by name: those in ``ATTACHES`` attach (trainable
parameters > 0; a forward/backward pass puts gradients on adapter parameters only), those
in ``REFUSED`` fail with the one-line PeftMagicError given there and leave the model as it
was. The outcome table is written to test-artifacts/methods.txt for the closing note.
"""

from __future__ import annotations

import pytest

import peft_magic
from peft_magic.errors import PeftMagicError
from peft_magic.peft_methods.discovery import registry

# Methods whose forward needs extra inputs besides input_ids (documented by peft).
_TASK_IDS = lambda torch, x: {"task_ids": torch.zeros(x.shape[0], dtype=torch.long)}  # noqa: E731
EXTRA_INPUTS = {"POLY": _TASK_IDS, "MULTITASK_PROMPT_TUNING": _TASK_IDS}

#: The methods of peft 0.21 that attach to a plain causal LM with no settings at all, by name.
#: A method that stops attaching (a peft release, a change here) fails by name; one that starts
#: attaching fails too, so that this list is kept true.
ATTACHES = {
    "ADALORA", "ADAMSS", "ADAPTION_PROMPT", "BEFT", "BOFT", "BOTTLENECK", "C3A", "CARTRIDGE", "DEFT", "DELORA",
    "FOURIERFT", "FROD", "GLORA", "GRALORA", "HIRA", "HRA", "IA3", "LILY", "LN_TUNING", "LOHA", "LOKR", "LORA",
    "MISS", "MULTITASK_PROMPT_TUNING", "OFT", "OSF", "PEANUT", "POLY", "PREFIX_TUNING", "PROMPT_TUNING", "PSOFT",
    "PVERA", "P_TUNING", "RANDLORA", "ROAD", "SHADOW", "SHIRA", "SUPERTUNING", "TINYLORA", "UNILORA", "VBLORA",
    "VERA", "WAVEFT",
}
#: The methods that cannot attach without a setting only the user can give, and what the one
#: line must say (the setting, and how to give it).
REFUSED = {
    "CPT": "cpt needs cpt_token_ids: the token ids of the in-context examples — e.g. %peft cpt cpt_token_ids=[",
    "TRAINABLE_TOKENS": "trainable_tokens needs token_indices: the ids of the tokens to train — "
                        "e.g. %peft trainable_tokens token_indices=[",
    "XLORA": "xlora needs adapters: the already-trained LoRA adapters to mix — e.g. %peft xlora adapters=",
}
#: the peft release these lists were taken on; an older peft may lack some of the methods
PINNED_ON = (0, 21)

RESULTS: dict[str, str] = {}


def _peft_version() -> tuple[int, int]:
    import peft

    return tuple(int(x) for x in peft.__version__.split(".")[:2])  # type: ignore[return-value]


@pytest.fixture(scope="module", autouse=True)
def _method_table(artifacts):
    """Writes test-artifacts/methods.txt (the outcome of each method run, for the closing note)."""
    yield
    if RESULTS:
        lines = [f"{k:<26} {v}" for k, v in sorted(RESULTS.items())]
        attached = sum(v.startswith("attached") for v in RESULTS.values())
        lines.append(f"{attached} of {len(RESULTS)} attached; the rest explained why")
        (artifacts / "methods.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fresh_model(tiny_llama_path):
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM

    def make():
        return AutoModelForCausalLM.from_pretrained(tiny_llama_path)

    return make


def test_every_method_of_peft_has_a_pinned_outcome():
    """Each method of the installed peft is in exactly one list; each listed method exists in
    it (an older peft than the lists were taken on may lack some)."""
    methods = set(registry())
    assert not ATTACHES & set(REFUSED)
    unpinned = methods - ATTACHES - set(REFUSED)
    assert unpinned == set(), f"new methods: add each to ATTACHES or REFUSED: {sorted(unpinned)}"
    missing = (ATTACHES | set(REFUSED)) - methods
    if _peft_version() >= PINNED_ON:
        assert missing == set(), f"peft no longer has {sorted(missing)}"


@pytest.mark.parametrize("peft_type", sorted(registry()))
def test_method_attaches_or_explains(peft_type, fresh_model):
    import torch

    model = fresh_model()
    frozen_before = {n for n, p in model.named_parameters()}
    if peft_type in REFUSED:
        with pytest.raises(PeftMagicError) as e:
            peft_magic.attach(model, peft_type.lower())
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 400, msg
        assert REFUSED[peft_type] in msg, msg
        # the failure left the model untouched: same parameters, all still trainable
        assert {n for n, p in model.named_parameters()} == frozen_before
        assert all(p.requires_grad for p in model.parameters())
        RESULTS[peft_type] = f"explained: {msg}"
        return
    assert peft_type in ATTACHES, f"{peft_type}: not pinned (test_every_method_of_peft_has_a_pinned_outcome)"
    try:
        result = peft_magic.attach(model, peft_type.lower())
    except PeftMagicError as e:
        pytest.fail(f"{peft_type} no longer attaches: {e}")
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
