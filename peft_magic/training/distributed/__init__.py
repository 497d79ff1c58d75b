"""Training beyond one process: ``%peft train --processes N`` (CPU, gloo) and ``--gpus N|all``
(one process per GPU, nccl), data-parallel (DDP) or sharded (FSDP, DeepSpeed ZeRO-2/3).

Why worker processes started fresh from the kernel, and not ``accelerate.notebook_launcher``:
that launcher forks the kernel, which it refuses once CUDA is initialised (as soon as a
model sits on a GPU); its fixed rendezvous port hangs the next launch when busy; and FSDP /
DeepSpeed through the Trainer silently fall back to one process on CPU. Here the math is
the Trainer's own DDP / FSDP / DeepSpeed integration under ``torchrun``; we only hand the
workers their inputs and listen to them.

=================  ===========================================================================
module             what it does
=================  ===========================================================================
``strategies``     the request (``--processes`` / ``--gpus`` / ``--strategy`` / ``--zero``) checked
                   against this machine, refused in one line before anything starts; the
                   FSDP / DeepSpeed configs and the Trainer arguments each strategy needs
``handoff``        the kernel → workers folder, without pickle: model source (JSON) or the
                   in-memory model's weights (safetensors), the adapter's config and *current*
                   weights (safetensors), the tokenized data (Arrow, ``datasets``), the
                   settings (JSON); and loading the trained adapter back, all or nothing
``channel``        the local socket between the kernel and the workers: JSON lines, a token
``launch``         the kernel side of a run: hand off, supervise, load the result back (all or
                   nothing), record the run as a single-process run does, keep what ``--resume`` needs
``supervisor``     one launch's processes: free port, ``torchrun`` in its own process group, the
                   watch loop (done / stop button / failed or vanished rank / stall), cleanup
``relay``          rank messages → the same ``events.emit`` calls a single-process run makes
``worker``         the worker entry point (``python -m peft_magic.training.distributed.worker``)
``dryrun``         ``--dry-run``: the launch command, the global batch, the generated config
=================  ===========================================================================
"""
