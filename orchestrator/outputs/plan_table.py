"""The plan as a Markdown table: what each stage trains, freezes, starts from, and for how long."""

from __future__ import annotations

from orchestrator.plan.stage_plan import StagePlan

COLUMNS = (
    "stage",
    "trains",
    "frozen",
    "loss w (rpn loc/obj, det loc/cls)",
    "init (shared/rpn/det_feat/det_head)",
    "proposals",
    "steps",
    "lr (schedule)",
)


def plan_row(plan: StagePlan) -> tuple[str, ...]:
    spec = plan.spec
    w = spec.loss_weights
    init = spec.init.as_dict()
    return (
        plan.name,
        ",".join(spec.trained_groups),
        ",".join(spec.frozen_groups) or "-",
        f"{w.rpn_localization:g}/{w.rpn_objectness:g}, {w.detector_localization:g}/{w.detector_classification:g}",
        "/".join(init[g] for g in ("shared", "rpn", "detector_features", "detector_head")),
        spec.proposals + (" (2nd stage skipped)" if spec.skips_second_stage else ""),
        str(plan.steps),
        f"{plan.lr:g} {spec.lr_schedule.value}"
        + (f", warmup {spec.warmup_steps}" if spec.warmup_steps else ""),
    )


def plan_table(plans: list[StagePlan]) -> str:
    rows = [COLUMNS, *(plan_row(p) for p in plans)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
