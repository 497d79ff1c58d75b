"""Everything done to a model's adapters: attach, inspect, switch, merge, save, load.

``attach`` (with ``config`` and ``rollback``) puts a method on a model safely; ``preview``
and ``targets`` answer questions on a skeleton; ``summary`` and ``listing`` describe what
is there; ``switch``, ``merge``, ``save`` and ``load`` are the lifecycle; ``files`` and
``card`` are the folder on disk. Reading peft's internals is left to ``peft_view``.
"""
