"""``%peft runs``: every training run of this kernel, as a table and the loss curves together —
and the runs found on disk (``training/checkpoints.py``), a dead kernel's among them, with
their last checkpoint and whether ``--resume`` can continue them."""

from __future__ import annotations

import time
from pathlib import Path

from ..fmt import fmt_ago, fmt_bytes, fmt_metric, fmt_metrics, text_table
from ..rendering import HtmlRepr
from ..settings import SETTINGS
from ..state import Run, runs
from .checkpoints import DiskRun, on_disk

DISK_HEADERS = ["folder", "adapter", "last checkpoint", "status", "written", "resume"]

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
    if r.loss_path:
        peak += f" · loss {r.loss_path}"
    evaluated = fmt_metrics(r.eval_metrics[-1][1]) if r.eval_metrics else "–"
    return [str(r.run_id), f"{r.method} '{r.adapter}'", settings, f"{r.steps_done}/{r.total_steps}",
            first, final, rewards_cell(r), evaluated, peak, f"{r.seconds:.1f} s", speed_cell(r), r.status,
            ", ".join(r.saved_to)]


class RunsReport(HtmlRepr):
    """Every run of this kernel (``%peft runs``): a table and the loss curves together."""

    HEADERS = HEADERS
    DISK_HEADERS = DISK_HEADERS

    def __init__(self, run_list: list[Run], disk: list[DiskRun] | None = None) -> None:
        self.runs = run_list
        self.disk = disk or []

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, i: int) -> Run:
        return self.runs[i]

    def rows(self) -> list[list[str]]:
        return [run_row(r) for r in self.runs]

    def disk_rows(self) -> list[list[str]]:
        now = time.time()
        return [[d.folder, f"{d.method} '{d.adapter}'", f"step {d.step:,}/{d.total_steps:,}", d.status,
                 fmt_ago(now - d.written_at),
                 "--resume" if d.resumable and d.status != "completed" else ("done" if d.status == "completed" else "–")]
                for d in self.disk]

    def __repr__(self) -> str:
        text = text_table(self.HEADERS, self.rows()) if self.runs else \
            "no training runs in this kernel yet — %peft train data=… starts one"
        if self.disk:
            text += "\n\ncheckpoints on disk (re-run the cells and add --resume to continue one):\n" + \
                text_table(DISK_HEADERS, self.disk_rows())
        return text


def runs_report(folders: list[str] | None = None) -> RunsReport:
    """All runs of this kernel, oldest first, and the runs on disk that are not this kernel's
    (in ``%config PeftMagic.checkpoint_dir``, wherever this kernel's runs saved, and in
    ``folders``)."""
    mine = runs()
    roots = {SETTINGS.checkpoint_dir, *(folders or [])} | {str(Path(r.output_dir).parent) for r in mine
                                                             if r.output_dir}
    own = {str(Path(r.output_dir).resolve()) for r in mine if r.output_dir}
    disk = [d for d in on_disk(sorted(roots)) if str(Path(d.folder).resolve()) not in own]
    return RunsReport(mine, disk)


