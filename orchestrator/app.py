"""``run(cfg, run_dir)``: the whole product behind ``python -m orchestrator``.

Takes the composed config and the run directory explicitly (never ``sys.argv`` or the working
directory) and returns the final alternating mAP, so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from orchestrator.chain import chain
from orchestrator.outputs import report
from orchestrator.outputs.tensorboard import write_run_summaries
from orchestrator.plan.context import RunContext
from orchestrator.plan.resolve import stage_order
from stages.spec import Command, Config, SpecError, to_object, validate_config

log = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """TF and the OD API log deprecations by the hundred; keep our own log readable."""
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*set_learning_phase.*")


def plan_table(ctx: RunContext) -> str:
    """The stage table: trains / frozen / loss weights / init per group / proposals / steps."""
    rows = [
        (
            "stage",
            "trains",
            "frozen",
            "loss w (rpn loc/obj, det loc/cls)",
            "init (shared/rpn/det_feat/det_head)",
            "proposals",
            "steps",
        )
    ]
    for name in stage_order(ctx.cfg):
        plan = ctx.plans[name]
        w = plan.spec.loss_weights
        init = plan.spec.init.as_dict()
        rows.append(
            (
                name,
                ",".join(plan.spec.trained_groups),
                ",".join(plan.spec.frozen_groups) or "-",
                f"{w.rpn_localization:g}/{w.rpn_objectness:g}, {w.detector_localization:g}/{w.detector_classification:g}",
                "/".join(init[g] for g in ("shared", "rpn", "detector_features", "detector_head")),
                plan.spec.proposals + (" (2nd stage skipped)" if plan.spec.skips_second_stage else ""),
                str(plan.steps),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def do_plan(ctx: RunContext) -> None:
    backbone = ctx.backbone_checkpoint(create=False)
    for name in stage_order(ctx.cfg):
        path = ctx.write_pipeline(name, backbone)
        log.info("wrote %s", path)
    print(plan_table(ctx), flush=True)


def _final_map(results: dict[str, dict], ctx: RunContext) -> float:
    last = ctx.cfg.schedule.stages[-1]
    return float(results.get(last, {}).get("mAP", 0.0))


def run(cfg, run_dir: Path, stage_store: Path | None = None) -> float:
    """Validate, then do what ``cfg.stage`` says; returns the final alternating mAP (or 0).

    ``stage_store``: a directory the jobs of one sweep share, so identical stages train once.
    """
    quiet_tensorflow()
    config: Config = cfg if isinstance(cfg, Config) else to_object(cfg)
    validate_config(config)
    ctx = RunContext.create(config, Path(run_dir), stage_store)
    command = config.stage
    log.info(
        "frcnn-alt: stage=%s model=%s data=%s -> %s",
        command.value,
        config.model.name,
        config.data.kind,
        run_dir,
    )
    if command == Command.plan:
        do_plan(ctx)
        return 0.0
    if command == Command.export:
        log.info("exported: %s", do_export(ctx))
        return _final_map({n: _metrics(ctx, n) for n in config.schedule.stages}, ctx)
    if command == Command.predict:
        do_predict(ctx)
        return 0.0
    if command == Command.compare:
        print(compare(ctx), flush=True)
        return _final_map({n: _metrics(ctx, n) for n in config.schedule.stages}, ctx)
    write_run_summaries(ctx.run_dir, OmegaConf.to_yaml(OmegaConf.structured(config)))
    if command == Command.all:
        names = stage_order(config)
    elif command == Command.alternating:
        names = list(config.schedule.stages)
    else:
        names = [command.value]
    results = chain.run_stages(ctx, names)
    print(plan_table(ctx), flush=True)
    if command == Command.all:
        print(compare(ctx), flush=True)
        do_export(ctx)
    return _final_map(results, ctx)


def _require_done(ctx: RunContext, names: list[str], what: str) -> None:
    for name in names:
        if chain.read_done(ctx.plans[name].directory) is None:
            raise chain.StageNotReady(
                f"stage={what} needs {name} finished; it has no DONE in {ctx.run_dir}: run stage=all first."
            )


def do_export(ctx: RunContext) -> dict[str, Path]:
    from orchestrator.outputs.export import export_models

    last = ctx.cfg.schedule.stages[-1]
    _require_done(ctx, [last, "end_to_end"], "export")
    return export_models(ctx.run_dir, ctx.plans[last].directory, ctx.plans["end_to_end"].directory)


def do_predict(ctx: RunContext) -> list[dict]:
    from orchestrator.outputs.predict import image_paths, predict

    cfg = ctx.cfg.predict
    if cfg.model not in ("alternating", "end_to_end"):
        raise SpecError(f"predict.model={cfg.model!r}: use alternating or end_to_end")
    if not cfg.images:
        raise SpecError("stage=predict needs predict.images=DIR_OR_GLOB")
    images = image_paths(cfg.images)
    saved_model = do_export(ctx)[cfg.model]
    out = ctx.run_dir / "predict" / cfg.model
    return predict(saved_model, ctx.data.label_map, images, out, cfg.score_threshold)


def _metrics(ctx: RunContext, name: str) -> dict:
    path = ctx.plans[name].directory / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def compare(ctx: RunContext) -> str:
    """The comparison report of a finished run (fails clearly if a stage is missing)."""
    for name in stage_order(ctx.cfg):
        if chain.read_done(ctx.plans[name].directory) is None:
            raise chain.StageNotReady(
                f"stage=compare needs every stage finished; {name} has no DONE in {ctx.run_dir}: run stage=all first."
            )
    stage_dirs = {n: ctx.plans[n].directory for n in stage_order(ctx.cfg)}
    text = report.write_report(ctx.run_dir, list(ctx.cfg.schedule.stages), stage_dirs)
    log.info("comparison written to %s", ctx.run_dir / "comparison")
    return text
