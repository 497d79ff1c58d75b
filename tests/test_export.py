"""``peft_magic.export`` on the real SmolLM2 with a trained LoRA adapter, and its refusals.

One adapter is trained once for the module (4 real steps on chat-formatted colour questions) and exported once per format
(merged, GGUF f16, Ollama with a q8_0 GGUF). A fresh Python process that imports no
peft_magic and no peft then loads what was written — the merged folder with
``AutoModelForCausalLM``, both GGUF files with transformers' GGUF loader (``gguf_file=``),
their metadata with gguf-py — and reports logits and greedy tokens for the chat prompt,
which are compared here with the adapter model in the notebook.

The GGUF parts need llama.cpp's converter (``make gguf-converter``: a pinned, hash-checked
download, part of ``make test``); without it they fail with the one line that says how
to get it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import peft_magic as pm
from peft_magic import events
from peft_magic.errors import PeftMagicError

ROOT = Path(__file__).resolve().parents[1]
QA = [("What colour is the sky?", "The sky is blue, always blue."), ("What colour is grass?", "Grass is green, always green."),
      ("What colour is snow?", "Snow is white, always white."), ("What colour is coal?", "Coal is black, always black.")]
CHAT = [{"role": "user", "content": "What colour is the sky?"}]  # answered the fine-tuned way after training
NEW_TOKENS = 10


def _fingerprint(model) -> tuple:
    return (type(model).__name__, sorted(getattr(model, "peft_config", {}) or {}),
            tuple((n, tuple(p.shape), p.requires_grad, round(float(p.detach().double().sum()), 6))
                  for n, p in model.named_parameters()))


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.peft-")]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    loaded = pm.load("smollm2")
    tok = loaded.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                     tokenize=False) for q, a in QA]
    model = pm.attach(loaded.model, "lora", r=8, alpha=16).model
    run = pm.train(model, texts, tokenizer=tok, steps=4, batch=2, lr=5e-3, display=None,
                   output_dir=str(tmp_path_factory.mktemp("runs")))
    assert run.status == "completed"
    return SimpleNamespace(model=model, tok=loaded.tokenizer, run=run)


VERIFY = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from gguf import GGUFReader
    root, ids, n = Path(sys.argv[1]), torch.tensor([json.loads(sys.argv[2])]), int(sys.argv[3])
    assert "peft_magic" not in sys.modules and "peft" not in sys.modules
    out = {}
    def run(model):
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
            greedy = model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()
        return logits, greedy
    merged = AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(root / "merged")
    logits, greedy = run(merged)
    torch.save(logits, root / "merged.pt")
    with torch.no_grad():
        torch.save(merged.double()(input_ids=ids).logits[0], root / "merged64.pt")
    out["merged"] = {"greedy": greedy, "prompt": tok.apply_chat_template(
        [{"role": "user", "content": "What colour is the sky?"}], tokenize=False, add_generation_prompt=True),
        "eos": merged.generation_config.eos_token_id, "pad": merged.generation_config.pad_token_id,
        "has_peft_files": any(p.name.startswith("adapter_") for p in (root / "merged").iterdir())}
    del merged
    for fmt, name in (("gguf", "model-f16.gguf"), ("ollama", "model-q8_0.gguf")):
        model = AutoModelForCausalLM.from_pretrained(root / fmt, gguf_file=name, dtype=torch.float32)
        logits, greedy = run(model)
        torch.save(logits, root / f"{fmt}.pt")
        del model
        fields = GGUFReader(root / fmt / name).fields
        out[fmt] = {"greedy": greedy, "chat_template": fields["tokenizer.chat_template"].contents(),
                    "eos": int(fields["tokenizer.ggml.eos_token_id"].contents()),
                    "file_type": int(fields["general.file_type"].contents())}
    print("@@" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def exported(smol, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    before = _fingerprint(smol.model)
    results = {fmt: pm.export(smol.model, fmt, root / fmt, tokenizer=smol.tok, quant=quant, display=None)
               for fmt, quant in (("merged", None), ("gguf", "f16"), ("ollama", "q8_0"))}
    after = _fingerprint(smol.model)
    text = smol.tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = smol.tok(text, return_tensors="pt").input_ids
    smol.model.eval()
    with torch.no_grad():
        want = smol.model(input_ids=ids).logits[0]
        want64 = smol.model.double()(input_ids=ids).logits[0]
        smol.model.float()  # fp32 → fp64 → fp32 is exact: the model is as it was
        with smol.model.disable_adapter():
            base = smol.model(input_ids=ids).logits[0]
            base_greedy = smol.model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        greedy = smol.model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # plain transformers, no peft_magic
    done = subprocess.run([sys.executable, "-c", VERIFY, str(root), json.dumps(ids[0].tolist()), str(NEW_TOKENS)],
                          capture_output=True, text=True, env=env, cwd=str(root), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("@@")][0][2:])
    got = {fmt: torch.load(root / f"{fmt}.pt") for fmt in ("merged", "merged64", "gguf", "ollama")}
    return SimpleNamespace(root=root, results=results, before=before, after=after, text=text, want=want,
                           want64=want64, base=base,
                           greedy=greedy.tolist(), fresh=fresh, got=got, answer=smol.tok.decode(greedy),
                           base_answer=smol.tok.decode(base_greedy[0, ids.shape[1]:]))


@pytest.mark.slow(seconds=90)  # the module's exports are made once, in this first test's set-up
def test_merged_reloads_with_plain_transformers_to_the_adapter_models_logits(exported):
    """The exported fp32 weights are the merge: computed in float64 on both sides (the same
    fp32 weights, no arithmetic-order noise), the logits agree to ≤ 1e-4 (measured ~2e-5:
    what rounding W + BA to fp32 leaves). In fp32, as a user runs it, merged and unmerged
    add the same numbers in another order: SmolLM2's own fp32 noise is ~6e-5 (fp32 vs
    fp64 of the adapter model), so merged vs adapter lands at 5e-5–1e-4; allowed 2e-4."""
    diff64 = (exported.got["merged64"] - exported.want64).abs().max().item()
    assert diff64 <= 1e-4, diff64
    diff = (exported.got["merged"] - exported.want).abs().max().item()
    assert diff <= 2e-4, diff
    assert (exported.base - exported.want).abs().max().item() > 1e-2, "the trained adapter must change the model"
    fresh = exported.fresh["merged"]
    assert fresh["greedy"] == exported.greedy
    assert not fresh["has_peft_files"]
    assert exported.answer.startswith("The sky is blue") and exported.answer != exported.base_answer, (
        exported.answer, exported.base_answer)  # the fine-tuned answer, not the base model's


def test_merged_tokenizer_renders_the_same_chat_prompt_and_generation_config_stops(exported, smol):
    fresh = exported.fresh["merged"]
    assert fresh["prompt"] == exported.text
    assert fresh["eos"] == smol.tok.eos_token_id and fresh["pad"] is not None


def test_gguf_f16_loads_back_close_to_the_merged_model_with_the_same_greedy_tokens(exported):
    diff = (exported.got["gguf"][-1] - exported.got["merged"][-1]).abs().max().item()
    assert diff <= 5e-2, diff
    assert exported.fresh["gguf"]["greedy"] == exported.fresh["merged"]["greedy"]
    assert exported.fresh["gguf"]["file_type"] == 1  # LlamaFileType.MOSTLY_F16


def test_gguf_q8_0_loads_back_with_the_same_greedy_tokens(exported):
    """q8_0 rounds every weight to 8 bits per block of 32, so its logits move in proportion
    to their size: measured here 1.3% relative (L2) and a largest move of 0.50–0.56 on logits
    up to 33, varying with the few training steps; bounded relatively, not by an absolute
    number that the adapter's size decides."""
    assert exported.fresh["ollama"]["file_type"] == 7  # LlamaFileType.MOSTLY_Q8_0
    assert exported.fresh["ollama"]["greedy"] == exported.fresh["merged"]["greedy"]
    got, want = exported.got["ollama"][-1], exported.got["merged"][-1]
    rel = ((got - want).norm() / want.norm()).item()
    assert rel <= 0.03, rel
    assert (got - want).abs().max().item() <= 0.05 * want.abs().max().item()


def test_gguf_metadata_holds_the_chat_template_and_eos(exported, smol):
    for fmt in ("gguf", "ollama"):
        meta = exported.fresh[fmt]
        assert meta["chat_template"] == smol.tok.chat_template
        assert meta["eos"] == smol.tok.eos_token_id
    checks = " ".join(exported.results["gguf"].checks)
    assert "chat template" in checks and "eos <|im_end|>" in checks


def test_ollama_modelfile_template_renders_the_chat_templates_prompt(exported, smol):
    from peft_magic.exporting.gotemplate import ollama_prompt

    folder = exported.root / "ollama"
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "loss_curve.svg", "model-q8_0.gguf"]
    text = (folder / "Modelfile").read_text()
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    system = text.split('SYSTEM """', 1)[1].split('"""', 1)[0]
    assert "FROM ./model-q8_0.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert ollama_prompt(template, CHAT, system) == exported.text
    assert exported.results["ollama"].next_step.endswith("ollama create ollama -f Modelfile && ollama run ollama")


def test_cards_say_what_each_export_came_from(exported, smol):
    for fmt, kind in (("merged", "merged transformers folder (safetensors)"), ("gguf", "GGUF, f16"),
                      ("ollama", "GGUF, q8_0, with an Ollama Modelfile")):
        card = (exported.root / fmt / "README.md").read_text()
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in card and "| method | lora (peft `LORA`) |" in card
        assert f"| exported as | {kind} |" in card
        assert f"| {smol.run.run_id} | completed | 4/4 |" in card
    assert (exported.root / "gguf" / "loss_curve.svg").exists()


def test_the_notebook_model_is_unchanged_by_the_exports(exported):
    assert exported.after == exported.before


def test_no_room_on_disk_is_one_line_and_nothing_is_written(smol, tmp_path):
    target = tmp_path / "out"
    with pytest.raises(PeftMagicError) as err:
        pm.export(smol.model, "gguf", target, tokenizer=smol.tok, free_bytes=50 * 2**20, display=None)
    msg = str(err.value)
    assert "needs about" in msg and "only 50.0 MB is free: nothing was written" in msg and "\n" not in msg
    assert not target.exists() and _leftovers(tmp_path, "out") == []
    from peft_magic.exporting.export import estimate  # the same numbers the panel shows before its button

    line = estimate(smol.model, "gguf", target, free_bytes=50 * 2**20).line()
    assert line.startswith("writes about 2") and "while converting" in line and "50.0 MB free" in line


def test_an_existing_path_is_refused_without_force_and_replaced_with_it(smol, tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(PeftMagicError, match=r"already exists: nothing was written — pass --force"):
        pm.export(smol.model, "merged", target, tokenizer=smol.tok, display=None)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    with pytest.raises(PeftMagicError, match="not an adapter or model folder"):  # --force never deletes a stranger
        pm.export(smol.model, "merged", target, tokenizer=smol.tok, force=True, display=None)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_a_converter_error_leaves_nothing_and_says_the_converters_words(tmp_path):
    loaded = pm.load("tiny-llama")  # its tokenizer, trained on the spot, is unknown to llama.cpp
    model = pm.attach(loaded.model, "lora", r=4).model
    with pytest.raises(PeftMagicError) as err:
        pm.export(model, "gguf", tmp_path / "g", tokenizer=loaded.tokenizer, display=None)
    assert "llama.cpp's converter failed: NotImplementedError: BPE pre-tokenizer was not recognized" in str(err.value)
    assert not (tmp_path / "g").exists() and _leftovers(tmp_path, "g") == []


def test_ctrl_c_during_the_conversion_stops_it_and_leaves_nothing(smol, tmp_path):
    seen: list[float] = []

    def interrupt(e: events.Event) -> None:
        if e.kind == "export" and e.data.get("stage") == "converting" and e.data["fraction"] > 0.3 and not seen:
            seen.append(e.data["fraction"])
            os.kill(os.getpid(), signal.SIGINT)  # what the notebook's stop button sends

    unsubscribe = events.subscribe(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            pm.export(smol.model, "gguf", tmp_path / "g", tokenizer=smol.tok, display=None)
    finally:
        unsubscribe()
    assert seen, "the converter never reported progress"
    assert not (tmp_path / "g").exists() and _leftovers(tmp_path, "g") == []
    ps = subprocess.run(["pgrep", "-f", f"convert_hf_to_gguf.py {tmp_path}"], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "the converter must be stopped too"


def test_unknown_architecture_and_unmergeable_method_are_refused_before_writing(tiny_llama_path, tmp_path):
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    opt = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                                   num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32))
    model = pm.attach(opt, "lora", r=2, target="q_proj,v_proj").model
    with pytest.raises(PeftMagicError) as err:
        pm.export(model, "gguf", tmp_path / "opt", tokenizer=tok, display=None)
    msg = str(err.value)
    assert "cannot convert the OPTForCausalLM architecture to GGUF: nothing was written" in msg and "\n" not in msg
    loaded = pm.load("tiny-llama")
    prefix = pm.attach(loaded.model, "prefix", tokens=4).model
    with pytest.raises(PeftMagicError, match="prefix adapters cannot be merged into the weights.*nothing was written"):
        pm.export(prefix, "merged", tmp_path / "p", tokenizer=loaded.tokenizer, display=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_format_quant_and_missing_converter_are_one_line(smol, tmp_path, monkeypatch):
    with pytest.raises(PeftMagicError, match=r"unknown export format 'ggfu': did you mean 'gguf'\?"):
        pm.export(smol.model, "ggfu", tmp_path / "x", tokenizer=smol.tok, display=None)
    with pytest.raises(PeftMagicError, match="unknown GGUF type 'q4'.*f16, bf16, q8_0, f32"):
        pm.export(smol.model, "gguf", tmp_path / "x", tokenizer=smol.tok, quant="q4", display=None)
    with pytest.raises(PeftMagicError, match="needs the model's tokenizer"):
        pm.export(smol.model, "merged", tmp_path / "x", display=None)
    monkeypatch.setenv("PEFT_MAGIC_CACHE", str(tmp_path / "empty-cache"))  # a machine that never fetched it
    monkeypatch.delenv("PEFT_MAGIC_LLAMA_CPP", raising=False)
    with pytest.raises(PeftMagicError) as err:
        pm.export(smol.model, "gguf", tmp_path / "x", tokenizer=smol.tok, display=None)
    assert "run `python -m peft_magic.exporting.converter` once" in str(err.value)
    assert "PEFT_MAGIC_LLAMA_CPP" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_qlora_adapter_exports_through_the_dequantized_base(tmp_path):
    """Real bitsandbytes 4-bit on CPU: the merge happens on a full-precision copy of the base,
    so the exported model computes what the 4-bit model with its adapter computes."""
    from transformers import AutoModelForCausalLM

    loaded = pm.load("tiny-llama", bits=4)
    model = pm.attach(loaded.model, "qlora", r=8, target="all-linear").model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    ids = torch.tensor([[5, 17, 99, 230, 41, 8, 77, 300, 12, 64]])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    before = _fingerprint(model)
    res = pm.export(model, "merged", tmp_path / "q", tokenizer=loaded.tokenizer, display=None)
    assert any("4-bit base was dequantized to float32" in n for n in res.notes)
    assert "quantization_config" not in json.loads((tmp_path / "q" / "config.json").read_text())
    assert "| quantization | 4-bit base (bitsandbytes), dequantized before merging" in (
        tmp_path / "q" / "README.md").read_text()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert type(plain.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    with torch.no_grad():
        got = plain(input_ids=ids).logits
    assert torch.allclose(got, want, atol=2e-2), (got - want).abs().max()
    assert _fingerprint(model) == before  # the notebook's model: still 4-bit, adapter attached
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"


@pytest.mark.llama_cpp
def test_llama_cpp_itself_answers_the_chat_prompt_the_fine_tuned_way(exported, smol):
    """llama.cpp itself, through its Python binding (an optional ~7-minute cmake build, so this
    test runs only when asked for: ``make test-llama-cpp``). llama.cpp reads the GGUF's own
    tokenizer and chat template."""
    import llama_cpp

    want = smol.tok.decode(exported.greedy, skip_special_tokens=True).strip()
    ids = smol.tok(exported.text).input_ids
    for folder, name in (("gguf", "model-f16.gguf"), ("ollama", "model-q8_0.gguf")):
        llm = llama_cpp.Llama(model_path=str(exported.root / folder / name), n_ctx=256, n_threads=2, seed=0,
                              verbose=False)
        assert llm.tokenize(exported.text.encode(), add_bos=False, special=True) == ids
        out = llm.create_chat_completion(messages=CHAT, temperature=0.0, max_tokens=NEW_TOKENS)
        assert out["choices"][0]["message"]["content"].strip() == want, (folder, out["choices"][0])
        del llm


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merging_for_an_export_leaves_the_layers_as_they_were(method, tmp_path):
    """The merge is taken layer by layer on the live model and the layer's own tensors put
    back (no unmerge): the model computes bit-for-bit what it did, DoRA's weight-norm cache
    is not left behind, and a second export writes the same weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    loaded = pm.load("tiny-llama")
    model = pm.attach(loaded.model, method, r=4, target="all-linear").model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    ids = torch.tensor([[5, 17, 99, 230, 41, 8]])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    before = _fingerprint(model)
    pm.export(model, "merged", tmp_path / "a", tokenizer=loaded.tokenizer, display=None)
    pm.export(model, "merged", tmp_path / "b", tokenizer=loaded.tokenizer, display=None)
    assert _fingerprint(model) == before
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, want)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    layers = [m for _, m in model.named_modules() if hasattr(m, "merged_adapters")]
    assert layers and all(not m.merged_adapters and not getattr(m, "_caches", {}) for m in layers)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, want, atol=1e-5)
