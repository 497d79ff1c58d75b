"""The panel follows the notebook: adapters attached elsewhere, training that ends, cells that
rebind the model variable — so the panel and the magics are one state.

A mixin of :class:`~peft_magic.panel.panel.PeftPanel` (kept apart from the form and the
actions): it subscribes to the engine's events and IPython's ``post_run_cell``, shows an
adapter attached by a magic (or in Python) in the form, and stops following when the panel
is closed or replaced by a newer one on the same model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .. import events
from ..adapter_ops.summary import show
from ..errors import PeftMagicError
from ..model.properties import infer_task
from ..peft_methods.discovery import resolve_method
from ..state import state_for, unwrap
from ..tasks.names import normalize_task

#: the open panel per (namespace, variable)
_OPEN: dict[tuple[int, str], Any] = {}

TASKS = (("auto (from the model)", ""), ("causal-lm", "causal-lm"), ("seq-cls", "seq-cls"),
         ("seq2seq", "seq2seq"), ("token-cls", "token-cls"), ("qa", "qa"),
         ("feature-extraction", "feature-extraction"))


class FollowsNotebook:
    """What the panel does when something happens outside it (see the module docstring)."""

    def _follow(self, var: str, shell: Any) -> None:
        """Follow engine events and finished cells, replacing an older panel on the same model.

        Re-running the `%peft panel` cell replaces its output: the panel it replaces
        stops following events and cells, so stale panels never pile up.
        """
        key = (id(self.ns), var)
        old = _OPEN.get(key)
        previous = old() if old is not None else None
        if previous is not None and previous is not self:
            previous.close()
        _OPEN[key] = weakref.ref(self)
        self._unsubscribe: Callable[[], None] | None = events.subscribe(self._on_event)
        if shell is not None and hasattr(shell, "events"):
            shell.events.register("post_run_cell", self._after_cell)

    def load_record(self, record: Any) -> None:
        """Show an adapter attached elsewhere (by magic or in Python) in the form.

        The adapter's explicit settings are pinned, so the shown line is the request the
        adapter was made with and pressing Attach again is a no-op, as re-running the cell is.
        """
        if record.peft_type not in self.method.methods:
            return
        self._hold += 1
        try:
            self.method.set(record.peft_type)  # fires _on_method, which clears _word
            self._word = record.method
            spec = resolve_method(record.method)
            form = self.form()
            settings = dict(spec.preset)
            settings.update({k: v for k, v in record.settings.items() if k != "target_modules"})
            form.set_values(settings, pin=set(record.settings))
            if self.targets is not None:
                self.targets.set_value(record.settings.get("target_modules"))
            self.name.value = record.name
            try:
                inferred = infer_task(unwrap(self.model()))
            except PeftMagicError:
                inferred = None
            if record.task and record.task != inferred:
                self.task.value = next((v for _l, v in TASKS if v and _task_key(v) == record.task), "")
            else:
                self.task.value = ""
        finally:
            self._hold -= 1
        self._changed()

    def _show_record(self, model: Any) -> None:
        """Show the model's active adapter in the form, if it has one."""
        st = state_for(model)
        if st is None or not st.adapters:
            return
        active = [a.name for a in show(model).adapters if a.active]
        record = next((st.adapters[n] for n in active if n in st.adapters), None)
        self.load_record(record or next(iter(st.adapters.values())))

    def _on_event(self, event: Any) -> None:
        """Engine events: follow adapters attached elsewhere; show training finishing."""
        try:
            if self._model_changed():
                return  # the variable now holds another model: _after_cell rebuilds
            base = self._base_ref() if self._base_ref is not None else None
            st = state_for(base) if base is not None else None
            if st is None or event.data.get("model_id") != st.model_id:
                return
            if event.kind == "adapter":
                if not self._busy:
                    adapter = event.data.get("adapter")
                    record = st.adapters.get(adapter) if adapter else None
                    if record is not None and event.data.get("action") in ("attached", "added", "replaced", "loaded",
                                                                           "activated"):
                        self.load_record(record)
                        self.set_status(f"{event.data.get('action')} {record.method} adapter '{adapter}' "
                                        "(outside the panel)")
                    elif event.data.get("action") == "detached":
                        self.set_status("adapters removed (outside the panel)")
                    elif event.data.get("action"):
                        self.set_status(f"adapter '{adapter}' {event.data.get('action')} (outside the panel)")
                self.refresh()
            elif event.kind == "run_end" and not self._busy and event.data.get("status"):
                loss = event.data.get("loss")
                loss_s = f", loss {loss:.4f}" if isinstance(loss, float) else ""
                self.set_status(f"training {event.data.get('status')} (outside the panel): step "
                                f"{event.data.get('step')}/{event.data.get('total_steps')}{loss_s}",
                                ok=event.data.get("status") == "completed")
                self.refresh()
        except Exception:  # a display must never break the engine
            pass

    def _after_cell(self, *_args: Any) -> None:
        """After each cell: a new model in the variable rebuilds the panel's model parts."""
        try:
            if self._model_changed():
                self._rebuild(self.model())
            self.trainer.refresh_data()
            self.trainer.update()
        except Exception:
            pass

    def close(self) -> None:
        """Stop following events and cells, then close the widgets."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        key = (id(self.ns), self.var)
        if key in _OPEN and _OPEN[key]() is self:
            del _OPEN[key]
        if self.shell is not None and hasattr(self.shell, "events"):
            try:
                self.shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass
        super().close()


def _task_key(value: str) -> str:
    return normalize_task(value) or ""
