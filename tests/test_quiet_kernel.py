"""A quiet notebook: peft_magic's own calls write nothing to stderr in a normal run.

The user's first cells — load, attach, train, evaluate, generate, save, reload — run in a fresh
kernel (nothing imported before, as a user's kernel starts) with the hub offline and with it
merely unreachable (no ``HF_HUB_OFFLINE``): the foreign messages the heavy stack prints on import
(bitsandbytes' CPU kernel probe on an AVX512-BF16 CPU, ``kernels``' publisher-trust notice),
and transformers' chatter must not reach the cell. Each cell's stderr is compared with the
empty string, so any new noise fails here by its text.
"""

from __future__ import annotations

import os

import pytest
from kernel import Kernel

pytestmark = pytest.mark.kernel

CELLS = [
    "%load_ext peft_magic",
    "%peft load smollm2",
    "%peft lora r=4 target=q_proj,v_proj",
    "rows = [{'prompt': f'Capital of {c}?', 'completion': f' Arr, {c} be it.'} for c in "
    "['France', 'Spain', 'Peru', 'Chad', 'Oman', 'Cuba', 'Fiji', 'Laos']]",
    "%peft train data=rows steps=2 batch=4 --display text",
    "%peft evaluate data=rows[:4]",
    "%peft generate 'Capital of Peru?' max_new_tokens=4",
    "%peft save adapters/quiet",
    "%peft load-adapter adapters/quiet --name again",
    "%peft show",
]


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "hub-unreachable"])
def test_load_attach_train_evaluate_save_write_nothing_to_stderr(tmp_path, offline):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    kernel = Kernel(cwd=tmp_path, env=env)
    try:
        for code in CELLS:
            res = kernel.run(code)
            assert res.error is None, f"{code}\n{res.error_text}"
            assert res.stderr == "", f"stderr under {code!r}:\n{res.stderr}"
        # the cells did what they say (a quiet notebook that did nothing would also be quiet)
        assert (tmp_path / "adapters" / "quiet" / "adapter_model.safetensors").is_file()
        assert kernel.eval("sorted(model.peft_config)") == ["again", "default"]
    finally:
        kernel.shutdown()
