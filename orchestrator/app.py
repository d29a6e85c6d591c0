"""``run(cfg, run_dir)``: the whole product behind ``python -m orchestrator``.

Takes the composed config and the run directory explicitly (never ``sys.argv`` or the working
directory) and returns the final alternating mAP, so Hydra sweepers can optimise it. Holds the
run directory's lock for the whole call: one writer per run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from orchestrator.chain import chain
from orchestrator.cluster import ClusterError, role_from_env
from orchestrator.engine import distribute
from orchestrator.engine.distribute import Worker
from orchestrator.layout import run_dir_lock
from orchestrator.outputs import report
from orchestrator.outputs.plan_table import plan_table
from orchestrator.outputs.tensorboard import write_run_summaries
from orchestrator.plan.context import RunContext
from orchestrator.plan.fingerprint import code_version
from orchestrator.plan.stage_plan import preflight, require_done, stage_order, stages_to_run
from stages import pipeline as pipelines
from stages.spec import (
    TRAINS_NOTHING,
    Command,
    Config,
    ExportFormat,
    Runtime,
    SpecError,
    to_object,
    validate_config,
)

log = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """TF and the OD API log deprecations by the hundred; keep our own log readable."""
    for name in ("tensorflow", "tensorboard", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*set_learning_phase.*")


def run(cfg, run_dir: Path, stage_store: Path | None = None, worker: Worker | None = None) -> float:
    """Validate, then do what ``cfg.stage`` says; returns the final alternating mAP (or 0).

    ``stage_store``: a directory the jobs of one sweep share, so identical stages train once.
    ``worker``: the process's strategy and cluster role (:mod:`orchestrator.engine.distribute`;
    made here when None). A non-chief worker of a multi-worker run trains alongside the chief
    and writes nothing in ``run_dir``: it takes no lock and follows the chief's decisions.
    """
    quiet_tensorflow()
    config: Config = cfg if isinstance(cfg, Config) else to_object(cfg)
    validate_config(config)
    run_dir = Path(run_dir)
    if worker is None:
        worker = distribute.start(config.train, role_from_env())
    run_key = f"frcnn-alt/run/{worker.next_run()}"  # every worker makes the same calls in order
    identity = _identity(config, run_dir)
    if not worker.is_chief:
        return _follow(config, run_dir, worker, run_key, identity)
    if worker.multi:
        worker.decide(run_key, lambda: identity)
    with run_dir_lock(run_dir, wait=config.wait_for_lock):
        value = _dispatch(config, run_dir, stage_store, worker)
    if worker.multi:
        worker.decide(f"{run_key}/finished", lambda: "finished")  # the others may leave now
        worker.leave_together(f"{run_key}/exit")
    return value


def _identity(config: Config, run_dir: Path) -> str:
    """What every worker must agree on before any of them waits for another's decision."""
    settings = OmegaConf.to_yaml(OmegaConf.structured(config))
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return json.dumps({"run directory": str(run_dir), "config": digest, "training code": code_version()})


def _follow(config: Config, run_dir: Path, worker: Worker, run_key: str, identity: str) -> float:
    """A non-chief worker: train the stages the chief trains, in step with it, then wait for it."""
    _same_as_chief(json.loads(worker.decide(run_key, str)), json.loads(identity), worker)
    if config.stage not in TRAINS_NOTHING:
        chief_fingerprints = worker.decide(f"{run_dir}/context", str)  # data validated, run locked
        ctx = RunContext.create(config, run_dir, stages_to_run(config))
        _same_as_chief({"stage fingerprints": json.loads(chief_fingerprints)},
                       {"stage fingerprints": ctx.fingerprints}, worker)  # fmt: skip
        chain.run_stages(ctx, stages_to_run(config), worker)
    else:
        ctx = None
        log.info("stage=%s trains nothing: %s waits for the chief", config.stage.value, worker.role.name)
    worker.decide(f"{run_key}/finished", str)  # the chief's comparison and exports are done
    worker.leave_together(f"{run_key}/exit")
    return final_map(ctx) if ctx else 0.0


def _same_as_chief(chief: dict, mine: dict, worker: Worker) -> None:
    """Workers that disagree on these would wait forever for decisions keyed by them: stop now."""
    for what, value in chief.items():
        if mine.get(what) != value:
            raise ClusterError(
                f"{worker.role.name}'s {what} differs from the chief's ({mine.get(what)} vs {value}): start "
                "every worker with the same command, the same hydra.run.dir and data.cache_dir on a shared "
                "filesystem, and the same code."
            )


def _dispatch(config: Config, run_dir: Path, stage_store: Path | None, worker: Worker) -> float:
    command = config.stage
    names = stages_to_run(config)
    preflight(config, run_dir)  # before any data or model work
    ctx = RunContext.create(config, run_dir, names, stage_store)
    if worker.multi and command not in TRAINS_NOTHING:
        worker.decide(f"{run_dir}/context", lambda: json.dumps(ctx.fingerprints))
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
        return final_map(ctx)
    if command == Command.predict:
        do_predict(ctx)
        return 0.0
    if command == Command.compare:
        print(compare(ctx), flush=True)
        return final_map(ctx)
    write_run_summaries(ctx.run_dir, OmegaConf.to_yaml(OmegaConf.structured(config)))
    chain.run_stages(ctx, names, worker)
    print(plan_table(list(ctx.plans.values())), flush=True)
    if command == Command.all:
        print(compare(ctx), flush=True)
        do_export(ctx)
    return final_map(ctx)


def do_plan(ctx: RunContext) -> None:
    """Write every stage's pipeline.config under ``<run>/plan/`` and print the plan table.

    Trains nothing and touches no stage directory; inputs that have not finished yet are
    shown as such in each config's header.
    """
    for name in stage_order(ctx.cfg):
        stage = ctx.resolve(name, planning=True)
        path = pipelines.write_pipeline(stage.pipeline, ctx.run_dir / "plan" / f"{name}.config", stage.header)
        log.info("wrote %s", path)
    print(plan_table(list(ctx.plans.values())), flush=True)


def final_map(ctx: RunContext) -> float:
    last = ctx.plans[ctx.cfg.schedule.stages[-1]].files
    return float(last.read_metrics().get("mAP", 0.0))


def do_export(ctx: RunContext) -> dict[str, Path]:
    from orchestrator.outputs.export import export_models

    last = ctx.cfg.schedule.stages[-1]
    require_done(ctx.plans, [last, "end_to_end"], "export", ctx.run_dir)
    saved = export_models(ctx.run_dir, ctx.plans[last].files, ctx.plans["end_to_end"].files)
    if ctx.cfg.export.format != ExportFormat.saved_model:
        do_export_onnx(ctx, saved)
    return saved


def do_export_onnx(ctx: RunContext, saved: dict[str, Path]) -> dict[str, Path]:
    from orchestrator.outputs.export import export_onnx_checked

    cfg = ctx.cfg.export
    return export_onnx_checked(saved, ctx.data.val, ctx.cfg.eval.max_images, cfg.opset, cfg.score_threshold)


def do_predict(ctx: RunContext) -> list[dict]:
    from orchestrator.outputs.predict import check_images, image_paths, predict

    cfg = ctx.cfg.predict
    if cfg.model not in ("alternating", "end_to_end"):
        raise SpecError(f"predict.model={cfg.model!r}: use alternating or end_to_end")
    if not cfg.images:
        raise SpecError("stage=predict needs predict.images=DIR_OR_GLOB")
    images = image_paths(cfg.images)
    check_images(images)  # a bad image stops here, before any export or output
    saved = do_export(ctx)
    model = do_export_onnx(ctx, saved)[cfg.model] if cfg.runtime == Runtime.onnx else saved[cfg.model]
    out = ctx.run_dir / "predict" / cfg.model
    return predict(model, cfg.runtime, ctx.data.label_map, images, out, cfg.score_threshold)


def compare(ctx: RunContext) -> str:
    """The comparison report of a finished run (fails clearly if a stage is missing)."""
    order = stage_order(ctx.cfg)
    stage_dirs = require_done(ctx.plans, order, "compare", ctx.run_dir)
    text = report.write_report(list(ctx.cfg.schedule.stages), stage_dirs, ctx.run_dir)
    log.info("comparison written to %s", ctx.run_dir / "comparison")
    return text
