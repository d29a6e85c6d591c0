"""One resolved stage through the engine: write its configs, seed, train, evaluate."""

from __future__ import annotations

import logging
import time

import tensorflow as tf

from orchestrator.engine import evaluate, interrupts
from orchestrator.engine.cache_store import CacheContext
from orchestrator.engine.distribute import Worker
from orchestrator.engine.memory import peak_rss_mb, reset_peak_rss
from orchestrator.engine.runner import Proposer, StageRun, train_stage
from orchestrator.layout import StageFiles
from orchestrator.plan.context import ResolvedStage, RunContext
from stages import cache as cache_policy
from stages import pipeline as pipelines

log = logging.getLogger(__name__)


def train_and_evaluate(
    ctx: RunContext,
    stage: ResolvedStage,
    work: StageFiles,
    worker: Worker | None = None,
    resume_key: str = "",
) -> tuple[dict, str]:
    """(metrics, final checkpoint prefix) of ``stage`` trained in ``work``.

    A non-chief worker (``work`` is its scratch directory) trains alongside the chief and does
    not evaluate: evaluation and its figures are the chief's.
    """
    worker = worker or Worker(None)
    pipeline_path = pipelines.write_pipeline(stage.pipeline, work.pipeline, stage.header)
    proposer = None
    if stage.proposer is not None:
        path = pipelines.write_pipeline(
            stage.proposer.pipeline, work.proposer, f"frozen proposer: {stage.proposer.stage}"
        )
        proposer = Proposer(stage.proposer.stage, path, stage.proposer.checkpoint)
    cfg = ctx.cfg
    cache = cache_policy.stage_cache(stage.plan.spec, stage.pipeline, cfg.cache, cfg.train.strategy)
    if cache is not None:
        log.info(cache.why)
    tf.keras.backend.clear_session()
    # Seeded per stage, whatever ran before it in this process: `stage=all` and one process
    # per stage initialise fresh heads and shuffle the data alike.
    tf.keras.utils.set_random_seed(stage.plan.seed)
    reset_peak_rss()
    val_proposals = evaluate.ValProposals() if proposer else None  # the runner fills it from its cache
    evaluator = _LazyEvaluator(
        pipeline_path,
        detector=not stage.plan.spec.skips_second_stage,
        max_images=ctx.cfg.eval.max_images,
        proposer=(proposer.pipeline_path, proposer.checkpoint) if proposer else None,
        val_proposals=val_proposals,
    )
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
        evaluate=evaluator if worker.is_chief else _no_evaluation,
        eval_every=ctx.cfg.eval.every,
        worker=worker,
        resume_key=resume_key,
        cache=cache,
        cache_context=CacheContext(_cache_root(ctx), ctx.data.fingerprint, ctx.code),
        val_proposals=val_proposals,
    )
    metrics = train_stage(run)
    checkpoint = metrics["checkpoint"]
    if not worker.is_chief:
        return metrics, checkpoint
    metrics.update(_final_evaluation(stage, evaluator, checkpoint, work, metrics))
    metrics["peak_rss_mb"] = peak_rss_mb()  # this stage's training and evaluation
    return metrics, checkpoint


def _cache_root(ctx: RunContext):
    """``<run>/cache``; in a sweep ``<sweep>/cache``, so jobs differing only downstream share caches."""
    return (ctx.stage_store.parent if ctx.stage_store is not None else ctx.run_dir) / "cache"


def _no_evaluation(_weights: str) -> dict:
    """A non-chief worker writes the evaluation weights with the chief (collective) and stops there."""
    return {}


class _LazyEvaluator:
    """The stage's Evaluator, built at its first use: after training has built and traced.

    Building it first would draw from TensorFlow's random state before the stage's fresh
    layers are initialised, so the same seed would train differently with evaluation on.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.evaluator = args, kwargs, None

    def __call__(self, checkpoint: str) -> dict:
        if self.evaluator is None:
            self.evaluator = evaluate.Evaluator(*self.args, **self.kwargs)
        return self.evaluator(checkpoint)


def _final_evaluation(
    stage: ResolvedStage, evaluator, checkpoint: str, work: StageFiles, metrics: dict
) -> dict:
    """The final checkpoint's metrics: the stage's reported figures and the curve's last point."""
    plan = stage.plan
    started, cpu = time.time(), time.process_time()
    with interrupts.during(f"{stage.name} evaluation", stage=stage.name):
        final = evaluator(checkpoint)
    evaluate.write_eval_summaries(work.directory, final, plan.step_offset + plan.steps)
    log.info("%s eval: %s", stage.name, {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
    point = {"step": plan.steps, "train_cpu_seconds": metrics["train_cpu_seconds"]}
    point |= {k: v for k, v in final.items() if isinstance(v, float)}
    curve = [p for p in metrics["curve"] if p["step"] != plan.steps] + [point]
    return {
        "eval": final,
        **{k: v for k, v in final.items() if k != "eval_images"},
        "eval_seconds": round(time.time() - started, 2),
        "eval_cpu_seconds": round(metrics["eval_cpu_seconds"] + time.process_time() - cpu, 2),
        "curve": curve,
    }
