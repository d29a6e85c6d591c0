"""Chaining stages: fingerprints, ``DONE`` markers, skip / resume / rerun, evaluation.

A stage is done when its ``DONE`` file exists; it is written last, atomically, and records
the stage's fingerprint: its resolved spec and ``pipeline.config``, its input stages'
fingerprints, the data and the code version. Rerunning skips a stage whose fingerprint is
unchanged; a changed stage (and so everything downstream of it) is wiped and retrained; a
stage without ``DONE`` resumes from its last checkpoint if it was started with the same
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf

from orchestrator.engine import evaluate
from orchestrator.engine.memory import peak_rss_mb, reset_peak_rss
from orchestrator.engine.runner import Proposer, StageRun, train_stage, write_json
from orchestrator.layout import file_lock, fingerprint
from orchestrator.plan.context import RunContext, code_version
from stages import pipeline as pipelines
from stages.errors import UserError

log = logging.getLogger(__name__)


class StageNotReady(UserError):
    """A stage's input stage has not finished."""


def read_done(directory: Path) -> dict | None:
    path = directory / "DONE"
    return json.loads(path.read_text()) if path.exists() else None


def _input_fingerprints(ctx: RunContext, name: str) -> dict[str, str]:
    out = {}
    for stage in ctx.plans[name].spec.input_stages():
        done = read_done(ctx.plans[stage].directory)
        if done is None:
            raise StageNotReady(
                f"stage {name} needs {stage}, which has not finished in {ctx.run_dir}: run "
                f"stage=all (or stage={stage}) with the same hydra.run.dir first."
            )
        out[stage] = done["fingerprint"]
    return out


def checkpoint_id(prefix: str | None) -> str | None:
    """Content id of a checkpoint: the hash of its ``.index`` (tensor shapes and CRCs)."""
    if prefix is None:
        return None
    index = Path(prefix + ".index")
    return hashlib.sha256(index.read_bytes()).hexdigest()[:16] if index.exists() else prefix


def stage_fingerprint(ctx: RunContext, name: str, backbone: str | None, pipeline_text: str) -> dict:
    """What a finished stage depends on; its hash is the stage's fingerprint."""
    plan = ctx.plans[name]
    parts = {
        "spec": asdict(plan.spec),
        "steps": plan.steps,
        "pipeline": pipeline_text,
        "inputs": _input_fingerprints(ctx, name),
        "data": ctx.data.fingerprint,
        "backbone": checkpoint_id(backbone),
        "code": code_version(),
        "strategy": str(ctx.cfg.train.strategy),
        "seed": ctx.cfg.seed,
    }
    return {
        "fingerprint": fingerprint(parts),
        "inputs": parts["inputs"],
        "data": ctx.data.fingerprint,
        "code": parts["code"],
    }


def _prepare_dir(directory: Path, fp: str, name: str) -> None:
    """Wipe a stage dir left by a different config; keep it (resume) if the config matches."""
    started = directory / "stage.json"
    if directory.exists():
        old = json.loads(started.read_text())["fingerprint"] if started.exists() else None
        if old != fp:
            log.info("%s: configuration changed since its last run: retraining from scratch", name)
            shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(started, {"fingerprint": fp, "started_at": time.time()})


def _proposer(ctx: RunContext, name: str, backbone: str | None) -> Proposer | None:
    spec = ctx.plans[name].spec
    if spec.proposer_stage is None:
        return None
    stage = spec.proposer_stage
    config = pipelines.proposer_pipeline(ctx.pipeline_for(stage, backbone), spec.proposer)
    path = pipelines.write_pipeline(
        config, ctx.plans[name].directory / "proposer.config", f"frozen proposer: {stage}"
    )
    checkpoint = tf.train.latest_checkpoint(str(ctx.plans[stage].directory / "checkpoints"))
    return Proposer(stage, path, checkpoint)


def run_stage(ctx: RunContext, name: str) -> dict:
    """Train + evaluate one stage unless it is already done with the same fingerprint.

    With a stage store (sweeps), a stage another job already finished with the same
    fingerprint is copied instead of retrained; the store entry is locked while a job trains
    it, so parallel jobs train each distinct stage once.
    """
    plan = ctx.plans[name]
    backbone = ctx.backbone_checkpoint(create=True)
    config = ctx.pipeline_for(name, backbone)
    state = stage_fingerprint(ctx, name, backbone, pipelines.without_paths(config))
    done = read_done(plan.directory)
    if done and done["fingerprint"] == state["fingerprint"]:
        log.info("%s: done (fingerprint %s), skipping", name, done["fingerprint"])
        return json.loads((plan.directory / "metrics.json").read_text())
    if done:
        (plan.directory / "DONE").unlink()
    if ctx.stage_store is None:
        return _train_and_evaluate(ctx, name, backbone, config, state)
    entry = ctx.stage_store / f"{name}-{state['fingerprint']}"
    with file_lock(entry.with_name(entry.name + ".lock")):
        if (entry / "DONE").exists():
            return _copy_from_store(entry, plan.directory, name)
        metrics = _train_and_evaluate(ctx, name, backbone, config, state)
        _publish(plan.directory, entry)
        return metrics


def _copy_from_store(entry: Path, directory: Path, name: str) -> dict:
    log.info("%s: reusing the identical stage a sweep job already trained (%s)", name, entry)
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(entry, directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    metrics["checkpoint"] = tf.train.latest_checkpoint(str(directory / "checkpoints"))
    metrics["reused_from"] = str(entry)
    write_json(directory / "metrics.json", metrics)
    return metrics


def _publish(directory: Path, entry: Path) -> None:
    """Copy a finished stage into the store: temp dir, then an atomic rename."""
    tmp = entry.with_name(entry.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(directory, tmp)
    os.rename(tmp, entry)


def _train_and_evaluate(ctx: RunContext, name: str, backbone: str | None, config, state: dict) -> dict:
    plan = ctx.plans[name]
    _prepare_dir(plan.directory, state["fingerprint"], name)
    pipeline_path = ctx.write_pipeline(name, backbone, config)
    tf.keras.backend.clear_session()
    # Seeded per stage, whatever ran before it in this process: `stage=all` and one process
    # per stage initialise fresh heads and shuffle the data alike.
    tf.keras.utils.set_random_seed(ctx.cfg.seed + list(ctx.plans).index(name))
    reset_peak_rss()
    run = StageRun(
        name=name,
        spec=plan.spec,
        directory=plan.directory,
        pipeline_path=pipeline_path,
        steps=plan.steps,
        sources=ctx.sources(name, backbone),
        proposer=_proposer(ctx, name, backbone),
        step_offset=plan.step_offset,
        train=ctx.cfg.train,
    )
    metrics = train_stage(run)
    proposer = (run.proposer.pipeline_path, run.proposer.checkpoint) if run.proposer else None
    metrics.update(_evaluate(ctx, name, pipeline_path, metrics["checkpoint"], proposer))
    metrics["peak_rss_mb"] = peak_rss_mb()  # this stage's training and evaluation
    write_json(plan.directory / "metrics.json", metrics)
    write_json(plan.directory / "DONE", {**state, "finished_at": time.time()})
    log.info("%s: done in %.0f s", name, metrics["wall_seconds"])
    return metrics


def _evaluate(ctx: RunContext, name: str, pipeline_path: Path, checkpoint: str, proposer) -> dict:
    plan = ctx.plans[name]
    detector = not plan.spec.skips_second_stage
    started = time.time()
    tf.keras.backend.clear_session()
    metrics = evaluate.evaluate(pipeline_path, checkpoint, detector, ctx.cfg.eval.max_images, proposer)
    evaluate.write_eval_summaries(plan.directory, metrics, plan.step_offset + plan.steps)
    log.info("%s eval: %s", name, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return {
        "eval": metrics,
        **{k: v for k, v in metrics.items() if k != "eval_images"},
        "eval_seconds": round(time.time() - started, 2),
    }


def run_stages(ctx: RunContext, names: list[str]) -> dict[str, dict]:
    return {name: run_stage(ctx, name) for name in names}
