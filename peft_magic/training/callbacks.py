"""The Trainer callbacks of a notebook run: progress events, AdaLoRA, the stop button.

Why callbacks and not our own loop: ``Trainer`` is the well-kept implementation (mixed
precision, accumulation, schedulers, checkpoints); we only listen to it. Progress goes
out as engine events, throttled once at the source (``events.Throttle``), so the
display costs the loop nothing measurable; renderers draw them.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from .. import events, peft_view
from ..memory import PeakSampler, reading
from ..state import Run
from .preference import readouts

PROGRESS_RATE = 4.0  # progress events a second, at most
TOKENS_WINDOW_S = 10.0  # tokens/s is measured over about this much recent history
EMA_BETA = 0.9  # loss smoothing, as TensorBoard's default


class InterruptToStop:
    """First SIGINT: stop at the next step boundary. Second: stop now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._prev: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptToStop:
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._prev)


class _TokenRate:
    """Real tokens per second over the last ~10 s of batches."""

    def __init__(self) -> None:
        self.window: list[tuple[float, int]] = []

    def reset(self, tokens: int) -> None:
        self.window = [(time.perf_counter(), tokens)]

    def rate(self, now: float, tokens: int) -> float:
        if tokens != self.window[-1][1]:  # a new batch was seen since the last reading
            self.window.append((now, tokens))
        while len(self.window) > 2 and now - self.window[1][0] > TOKENS_WINDOW_S:
            self.window.pop(0)
        (ta, ka), (tb, kb) = self.window[0], self.window[-1]
        return (kb - ka) / (tb - ta) if tb > ta else 0.0


def make_callbacks(run: Run, interrupt: InterruptToStop, collator: Any, device: str, sampler: PeakSampler,
                   peft_model: Any, reallocates_ranks: bool, evaluator: Any = None) -> list[Any]:
    """The callbacks for one run (classes built here: transformers is imported lazily).

    ``evaluator(eval_loss)`` gives the task's metrics on the held-out data at each
    evaluation (``inference.evaluate.task_metrics``); they go into the run record and
    the ``eval`` event beside the loss.
    """
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Turns Trainer's hooks into our events; cheap enough to run every step."""

        def __init__(self) -> None:
            self.throttle = events.Throttle(rate=PROGRESS_RATE)
            self.rate = _TokenRate()
            self.ema_raw, self.ema_n, self.ema = 0.0, 0, None
            self.seconds_before, self.tokens_before = run.seconds, run.tokens  # non-zero when resuming
            self.t_start = 0.0
            self.base_step = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t_start = time.perf_counter()
            self.base_step = state.global_step
            self.rate.reset(collator.tokens)
            events.emit("run_start", run_id=run.run_id, model_id=run.model_id, adapter=run.adapter,
                        method=run.method, total_steps=run.total_steps, settings=dict(run.settings),
                        resumed_from=self.base_step or None, warnings=list(run.warnings), task=run.task,
                        data=run.data, loss_path=run.loss_path,
                        objective=run.objective)

        def _payload(self, state) -> dict[str, Any]:
            now = time.perf_counter()
            elapsed = self.seconds_before + (now - self.t_start)
            done = state.global_step - self.base_step
            steps_per_s = done / (now - self.t_start) if done and now > self.t_start else 0.0
            eta = (run.total_steps - state.global_step) / steps_per_s if steps_per_s > 0 else None
            mem = reading(device)
            if not mem.kind == "CUDA":
                mem.peak = max(sampler.peak, mem.used)
            run.steps_done = state.global_step
            run.seconds = elapsed
            run.tokens = collator.tokens + self.tokens_before
            return dict(run_id=run.run_id, model_id=run.model_id, adapter=run.adapter, step=state.global_step,
                        total_steps=run.total_steps, epoch=state.epoch, loss=run.losses[-1][1] if run.losses else None,
                        loss_smooth=self.ema, lr=run.last_lr, tokens_per_s=self.rate.rate(now, collator.tokens),
                        elapsed_s=elapsed, eta_s=eta, memory=mem.as_dict(), status="training",
                        rewards=dict(run.rewards[-1][1]) if run.rewards else None)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                loss = float(logs["loss"])
                run.losses.append((state.global_step, loss))
                self.ema_n += 1
                self.ema_raw = EMA_BETA * self.ema_raw + (1 - EMA_BETA) * loss
                self.ema = self.ema_raw / (1 - EMA_BETA ** self.ema_n)  # bias-corrected
            if "learning_rate" in logs:
                run.last_lr = float(logs["learning_rate"])
            rewards = readouts(logs)  # a preference run: TRL's logged rewards, as logged
            if rewards:
                run.rewards.append((state.global_step, rewards))
            if "eval_loss" in logs:
                self._evaluated(state.global_step, float(logs["eval_loss"]), readouts(logs, "eval_"))

        def _evaluated(self, step: int, eval_loss: float, logged: dict[str, float]) -> None:
            run.eval_losses.append((step, eval_loss))
            scores: dict[str, float] = {"loss": eval_loss, **logged}
            if evaluator is not None:
                try:
                    scores = evaluator(eval_loss)
                except Exception as e:  # the metrics must not end the run; say what went wrong
                    run.warnings.append(f"eval metrics failed at step {step}: {type(e).__name__}: {e}")
            run.eval_metrics.append((step, scores))
            events.emit("eval", run_id=run.run_id, step=step, eval_loss=eval_loss, metrics=dict(scores))

        def on_step_end(self, args, state, control, **kw):
            if self.throttle.due():  # build the event (memory reading, rates) only when it will be shown
                self.throttle.offer("progress", **self._payload(state))
            else:
                run.steps_done = state.global_step
            if interrupt.requested and state.global_step < run.total_steps:
                run.status = "interrupted"
                run.message = f"interrupted at step {state.global_step}/{run.total_steps}"
                control.should_training_stop = True
                control.should_save = True  # a checkpoint to resume from (adapter, optimizer, scheduler, rng)
            return control

        def on_train_end(self, args, state, control, **kw):
            self.throttle.flush()
            events.emit("progress", **self._payload(state))  # the final state, always

    class RankReallocation(TrainerCallback):
        """AdaLoRA's rank reallocation, which Trainer never calls by itself."""

        def on_optimizer_step(self, args, state, control, **kw):
            peft_view.adalora_update(peft_model, state.global_step)

    return [Progress()] + ([RankReallocation()] if reallocates_ranks else [])
