"""Chaining stages: skip what is finished, resume what was interrupted, replace what changed.

For each stage in order: a ``DONE`` carrying the fingerprint this config expects means the
stage is finished and is skipped. Otherwise the stage is resolved (its inputs' checkpoints
read from their ``DONE`` records), trained and evaluated in its ``.partial`` work directory
(resuming from there if an earlier attempt with the same fingerprint was interrupted), and
only then swapped into place. A failed or interrupted rerun leaves the finished stage it would
replace exactly as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from orchestrator.chain import store
from orchestrator.engine.distribute import Worker
from orchestrator.layout import StageFiles, promote, read_json, recover_promotion, write_json
from orchestrator.plan.context import ResolvedStage, RunContext

log = logging.getLogger(__name__)


def run_stages(ctx: RunContext, names: list[str], worker: Worker | None = None) -> dict[str, dict]:
    worker = worker or Worker(None)
    return {
        name: run_stage(ctx, name, worker) if worker.is_chief else follow_stage(ctx, name, worker)
        for name in names
    }


def stage_key(ctx: RunContext, name: str, what: str) -> str:
    """A coordination key for one stage of this run under this config (set once per run)."""
    return f"{ctx.run_dir}/{name}/{ctx.fingerprints[name]}/{what}"


def run_stage(ctx: RunContext, name: str, worker: Worker | None = None) -> dict:
    """Train + evaluate one stage unless it is already finished with the expected fingerprint.

    With a stage store (sweeps), a stage another job already finished with the same
    fingerprint is copied instead of retrained. In a multi-worker run (the chief's side) the
    other workers learn whether to train it (``action``) and when it is done (``done``).
    """
    worker = worker or Worker(None)
    metrics = _run_stage(ctx, name, worker)
    if worker.multi:
        worker.decide(stage_key(ctx, name, "action"), lambda: "skip")  # unless training announced it
        worker.decide(stage_key(ctx, name, "done"), lambda: "done")
    return metrics


def follow_stage(ctx: RunContext, name: str, worker: Worker) -> dict:
    """A non-chief worker: train the stage in step with the chief if the chief trains it.

    It restores what the chief restores (inputs from the chief's DONE records, resumes from the
    chief's checkpoint), writes only to its scratch directory, and returns the chief's metrics.
    """
    if worker.decide(stage_key(ctx, name, "action"), str) == "train":
        from orchestrator.chain.train import train_and_evaluate

        stage = ctx.resolve(name)
        scratch = StageFiles(worker.local(name))
        train_and_evaluate(ctx, stage, scratch, worker, resume_key=stage_key(ctx, name, "resume"))
    worker.decide(stage_key(ctx, name, "done"), str)
    return ctx.plans[name].files.read_metrics()


def _run_stage(ctx: RunContext, name: str, worker: Worker) -> dict:
    files = ctx.plans[name].files
    recover_promotion(files)
    done = files.read_done()
    expected = ctx.fingerprints[name]
    if done is not None and done.fingerprint == expected:
        log.info("%s: done (fingerprint %s), skipping", name, expected)
        return files.read_metrics()
    if done is not None:
        log.info(
            "%s: settings changed since it finished; training a replacement (the old one stays until it is done)",
            name,
        )
    stage = ctx.resolve(name)
    if ctx.stage_store is None:
        return train_and_promote(ctx, stage, worker)
    return store.reuse_or_train(ctx.stage_store, stage, lambda: train_and_promote(ctx, stage, worker))


def _prepare_work_dir(work: StageFiles, fingerprint: str, name: str) -> None:
    """Keep a work dir started with the same fingerprint (resume); wipe any other."""
    if work.directory.exists():
        started = read_json(work.started) or {}
        if started.get("fingerprint") != fingerprint:
            log.info("%s: discarding an unfinished attempt with other settings", name)
            shutil.rmtree(work.directory)
    work.directory.mkdir(parents=True, exist_ok=True)
    if not work.started.exists():
        write_json(work.started, {"fingerprint": fingerprint, "started_at": time.time(), "pid": os.getpid()})


def train_and_promote(ctx: RunContext, stage: ResolvedStage, worker: Worker | None = None) -> dict:
    """Train and evaluate in the work dir, write DONE there, then swap it into place."""
    from orchestrator.chain.train import train_and_evaluate

    worker = worker or Worker(None)
    final = stage.plan.files
    work = final.partial
    _prepare_work_dir(work, stage.fingerprint, stage.name)
    if worker.multi:
        worker.decide(stage_key(ctx, stage.name, "action"), lambda: "train")
    metrics, checkpoint = train_and_evaluate(
        ctx, stage, work, worker, resume_key=stage_key(ctx, stage.name, "resume")
    )
    metrics["checkpoint"] = os.path.relpath(checkpoint, work.directory)
    write_json(work.metrics, metrics)
    work.write_done(
        {**stage.done_fields(ctx.data.fingerprint, ctx.code), "finished_at": time.time()}, checkpoint
    )
    promote(work, final)
    log.info("%s: done in %.0f s", stage.name, metrics["wall_seconds"])
    return metrics
