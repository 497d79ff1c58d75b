"""``%peft plan``: memory by part for each method, from the model's config alone.

``plan`` is the entry point; ``subject`` (what model), ``target`` and ``gpus`` (where),
``requests`` (which methods), ``sketch`` and ``trace`` (meta-device models and their
traced steps), ``estimate`` (one method), ``search`` (largest batch / seq),
``recommend`` (which method), ``results`` (the returned objects), ``fit`` (the model as
it is now) and ``measure`` (real steps to compare with).
"""
