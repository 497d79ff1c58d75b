"""Leaving the notebook: the trained model as a merged folder, a GGUF file or an Ollama folder.

``export.export`` is the one entry point (``%peft export``, ``peft_magic.export``, the
panel's Save tab). The pieces, each in its own module:

* ``merged``     — the base with the adapter merged in, written as a transformers folder
                   (tokenizer, chat template, generation config); a 4/8-bit base goes
                   through ``dequantize`` first, so nothing is merged into rounded weights
* ``converter``  — where llama.cpp's own GGUF converter is, and how to fetch the pinned copy
* ``gguf``       — running that converter in a subprocess, its quant types, its progress
* ``ollama``     — the chat template translated into a Modelfile ``TEMPLATE`` (checked by
                   rendering it with ``gotemplate``, a small Go-template renderer)
* ``disk``       — what an export will take on disk and whether it fits, before writing
* ``results``    — ``ExportResult``, what an export did
"""
