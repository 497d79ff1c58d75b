"""The catalog of PEFT methods: what exists, what users may call it, what settings it takes.

``discovery`` walks peft's registry; ``aliases`` and ``tasks`` hold the names users type;
``fields`` and ``coerce`` turn a config dataclass into typed settings; ``behaviour`` holds
per-method knowledge peft does not; ``report`` is ``%peft methods``. Nothing here touches
a model.
"""
