"""Speed: what a training run measures of itself, and the switches that trade speed for memory.

* ``instruments`` — put on every run's Trainer in one call: each step's time (steady
  tokens/s), ``compile=True``'s compiling steps, ``checkpointing=True``'s recompute;
* ``profiler`` (``--profile``) — phase timers and ``torch.profiler`` over a window of steps;
  ``profile_report`` — the :class:`~peft_magic.training.speed.profile_report.Profile` it
  gives, with its text and hints;
* ``profile_steps`` (``%peft profile``) — a few profiled steps that leave no trace;
* ``compiling`` (``compile=True``) and ``checkpointing`` (``checkpointing=True``).
"""
