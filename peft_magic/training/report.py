"""``%peft runs``: every training run of this kernel, as a table and the loss curves together."""

from __future__ import annotations

from ..fmt import fmt_bytes, fmt_metric, fmt_metrics, text_table
from ..rendering import HtmlRepr
from ..state import Run, runs

HEADERS = ["run", "adapter", "settings", "steps", "first loss", "final loss", "rewards", "eval", "peak memory",
           "time", "speed", "status", "saved to"]


def speed_cell(r: Run) -> str:
    """Steady tokens/s, and what compiling / checkpointing cost (``training/speed.py``)."""
    parts = [f"{r.steady_tokens_per_s:,.0f} tokens/s"] if r.steady_tokens_per_s else []
    if r.compile_seconds is not None:
        parts.append(f"compiled in {r.compile_seconds:.1f} s")
    cost = r.checkpointing
    if cost is not None:
        saved = f"−{fmt_bytes(cost.saved)} activations" if cost.saved else ""
        share = f"+{cost.recompute_share:.0%} recompute" if cost.recompute_share is not None else ""
        parts.append("checkpointing " + ", ".join(x for x in (saved, share) if x))
    if r.profile is not None:
        parts.append("profiled")
    return " · ".join(parts) or "–"


def rewards_cell(r: Run) -> str:
    """A preference run's objective and its last logged rewards (TRL's), e.g.
    ``DPO · margin +3.512 · accuracy 100.0%``; ``–`` for a supervised run."""
    if not r.objective:
        return "–"
    last = r.rewards[-1][1] if r.rewards else {}
    return " · ".join([r.objective.upper()] + [f"{k} {fmt_metric(k, last[k])}" for k in ("margin", "accuracy")
                                               if k in last])


def run_row(r: Run) -> list[str]:
    """One run as table cells (text)."""
    first = f"{r.losses[0][1]:.4f}" if r.losses else "–"
    final = f"{r.final_loss:.4f}" if r.final_loss is not None else "–"
    settings = " ".join(f"{k}={v}" for k, v in r.settings.items() if k not in ("data", "eval"))
    peak = f"{fmt_bytes(r.peak_memory)} {r.memory_kind or ''}".strip() if r.peak_memory else "–"
    evaluated = fmt_metrics(r.eval_metrics[-1][1]) if r.eval_metrics else "–"
    return [str(r.run_id), f"{r.method} '{r.adapter}'", settings, f"{r.steps_done}/{r.total_steps}",
            first, final, rewards_cell(r), evaluated, peak, f"{r.seconds:.1f} s", speed_cell(r), r.status,
            ", ".join(r.saved_to)]


class RunsReport(HtmlRepr):
    """Every run of this kernel (``%peft runs``): a table and the loss curves together."""

    HEADERS = HEADERS

    def __init__(self, run_list: list[Run]) -> None:
        self.runs = run_list

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, i: int) -> Run:
        return self.runs[i]

    def rows(self) -> list[list[str]]:
        return [run_row(r) for r in self.runs]

    def __repr__(self) -> str:
        if not self.runs:
            return "no training runs in this kernel yet — %peft train data=… starts one"
        return text_table(self.HEADERS, self.rows())


def runs_report() -> RunsReport:
    """All runs of this kernel, oldest first."""
    return RunsReport(runs())


