"""A tiny random T5 and its tokenizer, built offline in about a second (the ``tiny-t5`` built-in).

Why: seq2seq training, evaluation and generation need an encoder-decoder to be tested
and tried without a model hub. Like the other tiny built-ins, the weights are random and
the tokenizer is trained on the spot with the ``tokenizers`` library; this one follows
T5's conventions so that code written for real T5 checkpoints works unchanged:

* a Unigram tokenizer with SentencePiece-style ``▁`` word boundaries, ids ``<pad>`` = 0,
  ``</s>`` = 1, ``<unk>`` = 2, and ``</s>`` appended to every sequence (T5 does the same);
* ``T5Config`` with ``d_model`` 64, 2 encoder and 2 decoder layers, 4 heads, ``d_ff``
  128, ``pad_token_id = decoder_start_token_id = 0``, ``eos_token_id = 1``.

Plain ``T5Config`` is used on purpose: with transformers 5.x ``MT5Config(
tie_word_embeddings=False)`` still builds a tied ``lm_head``.
"""

from __future__ import annotations

import string
from pathlib import Path

# T5-style task prefixes and plain sentences: enough for a Unigram vocabulary of a few
# hundred pieces that spells common English words in few tokens.
_CORPUS = """\
summarize: The quick brown fox jumps over the lazy dog. A fox jumped over a dog.
translate English to German: Good morning, how are you? Guten Morgen, wie geht es dir?
translate English to French: The house is wonderful. La maison est merveilleuse.
question: what is the capital of France? context: Paris is the capital of France. answer: Paris
Parameter-efficient fine-tuning trains a small number of extra weights while the base model stays frozen.
LoRA adds low-rank matrices to the attention and feed-forward layers of an encoder and a decoder.
An encoder reads the source text and a decoder writes the target text one token at a time.
Once upon a time there was a little robot who wanted to learn how to paint the sky.
The weather today is sunny with a light breeze, perfect for a walk in the park.
I love reading books about science, history, music, art and the stars at night.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 2024 2025 2026.
This movie was wonderful and the acting was great. This movie was terrible and boring.
Rewrite politely: give me the report now. Could you please send me the report?
"""

SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5


def _train_t5_tokenizer(out: Path, vocab_size: int = 512) -> None:
    """Train a T5-style Unigram tokenizer and save it as a fast tokenizer into ``out``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    alphabet = [c for c in string.printable if not c.isspace()]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                      initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
    for k, name in enumerate(SPECIALS):
        if tok.token_to_id(name) != k:
            raise RuntimeError(f"tiny-t5 tokenizer: {name} got id {tok.token_to_id(name)}, not {k}")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.model_max_length = 512
    fast.save_pretrained(out)


def build_tiny_t5(out: Path) -> None:
    """Write a tiny random T5 (``save_pretrained``) and its fast tokenizer into ``out``."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _train_t5_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = transformers.T5Config(
        vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, feed_forward_proj="relu", pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg)
    model.save_pretrained(out)
