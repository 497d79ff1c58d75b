"""Which method to use: the classic guidance, applied to the plan's numbers.

Least memory → QLoRA; memory to spare and best quality → LoRA in 16-bit; adapting the
prompts → prompt / prefix tuning; reusing layers across tasks → bottleneck adapters.
A ``goal`` picks one of those; ``auto`` decides by memory.
"""

from __future__ import annotations

from .results import MethodPlan

#: LoRA counts as having "memory to spare" below this share
SPARE = 0.8
GOALS = {
    "auto": "pick by memory: LoRA when there is room to spare, else QLoRA",
    "quality": "memory to spare and maximum quality: LoRA in 16-bit",
    "memory": "minimum memory and a fast start: QLoRA",
    "prompts": "adapt the prompts rather than the model: prompt or prefix tuning",
    "reuse": "reuse the layers across tasks: bottleneck adapters",
}
GOAL_ALIASES = {"speed": "memory", "small": "memory", "low-memory": "memory", "prompt": "prompts",
                "multitask": "reuse", "multi-task": "reuse", "adapters": "reuse", "best": "quality"}


def _ok(r: MethodPlan | None) -> bool:
    return r is not None and r.fits is not False


def _by_goal(goal: str, lora: MethodPlan | None, qlora: MethodPlan | None, prompt: MethodPlan | None,
             adapters: MethodPlan | None) -> tuple[str, str] | None:
    """The method a stated goal asks for, when it fits."""
    if goal == "quality":
        if _ok(lora):
            return lora.method, "maximum quality: LoRA on the 16-bit model (" + GOALS["quality"].split(":")[0] + ")"
        if _ok(qlora):
            return qlora.method, "LoRA in 16-bit does not fit here; QLoRA is the closest in quality"
    if goal == "prompts" and _ok(prompt):
        return prompt.method, "adapt the prompts rather than the model: soft prompts, the base untouched"
    if goal == "reuse":
        if _ok(adapters):
            return adapters.method, "reuse the layers across tasks: one small bottleneck adapter per task"
        if _ok(lora):
            return lora.method, "bottleneck adapters are not available; LoRA adapters also swap per task"
    if goal == "memory" and _ok(qlora):
        return qlora.method, "minimum memory and a fast start: QLoRA (4-bit base, LoRA adapters)"
    return None


def _by_memory(rows: list[MethodPlan], lora: MethodPlan | None, qlora: MethodPlan | None,
               estimated: bool) -> tuple[str | None, str]:
    """LoRA with room to spare, else QLoRA, else whatever fits, else the smallest."""
    if lora is not None and lora.fits and (lora.spare or 0) >= 1 - SPARE:
        return lora.method, (f"memory to spare ({lora.spare:.0%} left) and maximum quality: LoRA on the "
                             f"16-bit model")
    if qlora is not None and qlora.fits:
        why = "LoRA in 16-bit would be tight" if lora is not None and lora.fits else (
            "LoRA in 16-bit does not fit" if lora is not None else "least memory")
        return qlora.method, f"minimum memory and a fast start: QLoRA ({why})"
    if lora is not None and lora.fits:
        return lora.method, "LoRA fits (tightly); QLoRA would leave more room"
    fitting = [r for r in rows if r.fits]
    if fitting:
        best = min(fitting, key=lambda r: r.total)
        return best.method, f"the only setups that fit are the smallest: {best.label}"
    smallest = qlora or (min((r for r in rows if r.parts), key=lambda r: r.total) if estimated else None)
    if smallest is None:
        return None, "no method could be estimated"
    return smallest.method, "nothing fits at this batch and seq; QLoRA needs the least — see the limits"


def recommend(rows: list[MethodPlan], goal: str, available: int | None) -> tuple[str | None, str]:
    """(method, why) for the plan's rows and the user's goal."""
    by = {r.method: r for r in rows if r.parts is not None}
    lora = by.get("lora") or next((r for r in rows if r.label.startswith("LoRA") and r.parts), None)
    qlora = by.get("qlora")
    prompt = by.get("prompt") or by.get("prefix") or by.get("p-tuning")
    adapters = by.get("bottleneck") or by.get("adapter") or by.get("houlsby") or by.get("pfeiffer")
    chosen = _by_goal(goal, lora, qlora, prompt, adapters)
    if chosen is not None:
        return chosen
    if available is None:
        if lora is not None:
            return lora.method, "no memory limit known; LoRA in 16-bit for maximum quality"
        return (rows[0].method if rows else None), "no memory limit known"
    return _by_memory(rows, lora, qlora, bool(by))
