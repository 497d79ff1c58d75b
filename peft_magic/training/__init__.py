"""Training the attached adapter: ``run`` drives transformers' Trainer with our callbacks.

``args`` checks settings; ``data`` turns any data shape into tokenized examples;
``callbacks`` emits progress and handles AdaLoRA and the stop button; ``failures``
classifies what went wrong; ``report`` is ``%peft runs``.
"""
