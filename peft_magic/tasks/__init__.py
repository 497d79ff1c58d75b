"""The task-specific, pure pieces of the tasks beyond causal LM and classification.

Why a package of its own: sequence-to-sequence, token classification (NER) and
extractive question answering each need their own data shape, tokenization, batch
padding and metrics, and none of that depends on the trainer, the magics or the panel.
Keeping them here, as plain functions on Python data (plus the tokenizer), lets them be
tested on fixed inputs and wired into training, ``%peft evaluate`` and ``%peft predict``
without pulling those faces in.

============  ===========================================================================
module        what lives there
============  ===========================================================================
metrics       the field's standard metrics (SQuAD EM/F1, seqeval entity F1, ROUGE-L, …)
token_cls     CoNLL-shaped data → word-aligned rows; predicted tags → entities with spans
qa            SQuAD-shaped data → windowed rows; start/end logits → answer spans
seq2seq       source/target pairs → encoder ids + decoder labels; a padding collator
tiny_t5       a tiny random T5 with a locally trained tokenizer (the ``tiny-t5`` built-in)
common        :class:`Examples`, the container the tokenizers return
============  ===========================================================================

Nothing here imports torch or transformers at module level: importing the package is
cheap, and the heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

from .common import Examples

__all__ = ["Examples"]
