"""One resolved stage through the engine: write its configs, seed, train, evaluate."""

from __future__ import annotations

import logging
import time

import tensorflow as tf

from orchestrator.engine import evaluate
from orchestrator.engine.memory import peak_rss_mb, reset_peak_rss
from orchestrator.engine.runner import Proposer, StageRun, train_stage
from orchestrator.layout import StageFiles
from orchestrator.plan.context import ResolvedStage, RunContext
from stages import pipeline as pipelines

log = logging.getLogger(__name__)


def train_and_evaluate(ctx: RunContext, stage: ResolvedStage, work: StageFiles) -> tuple[dict, str]:
    """(metrics, final checkpoint prefix) of ``stage`` trained in ``work``."""
    pipeline_path = pipelines.write_pipeline(stage.pipeline, work.pipeline, stage.header)
    proposer = None
    if stage.proposer is not None:
        path = pipelines.write_pipeline(
            stage.proposer.pipeline, work.proposer, f"frozen proposer: {stage.proposer.stage}"
        )
        proposer = Proposer(stage.proposer.stage, path, stage.proposer.checkpoint)
    tf.keras.backend.clear_session()
    # Seeded per stage, whatever ran before it in this process: `stage=all` and one process
    # per stage initialise fresh heads and shuffle the data alike.
    tf.keras.utils.set_random_seed(stage.plan.seed)
    reset_peak_rss()
    run = StageRun(
        name=stage.name,
        spec=stage.plan.spec,
        directory=work.directory,
        pipeline_path=pipeline_path,
        steps=stage.plan.steps,
        sources=stage.sources,
        proposer=proposer,
        step_offset=stage.plan.step_offset,
        train=ctx.cfg.train,
    )
    metrics = train_stage(run)
    checkpoint = metrics["checkpoint"]
    metrics.update(_evaluate(ctx, stage, pipeline_path, checkpoint, proposer, work))
    metrics["peak_rss_mb"] = peak_rss_mb()  # this stage's training and evaluation
    return metrics, checkpoint


def _evaluate(ctx: RunContext, stage: ResolvedStage, pipeline_path, checkpoint: str, proposer, work) -> dict:
    plan = stage.plan
    started = time.time()
    tf.keras.backend.clear_session()
    metrics = evaluate.evaluate(
        pipeline_path,
        checkpoint,
        detector=not plan.spec.skips_second_stage,
        max_images=ctx.cfg.eval.max_images,
        proposer=(proposer.pipeline_path, proposer.checkpoint) if proposer else None,
    )
    evaluate.write_eval_summaries(work.directory, metrics, plan.step_offset + plan.steps)
    log.info("%s eval: %s", stage.name, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return {
        "eval": metrics,
        **{k: v for k, v in metrics.items() if k != "eval_images"},
        "eval_seconds": round(time.time() - started, 2),
    }
