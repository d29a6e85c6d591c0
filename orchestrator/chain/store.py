"""The sweep's stage store: jobs that differ only downstream train each upstream stage once.

An entry is a finished stage directory named ``<stage>-<fingerprint>`` under the sweep root.
A job takes the entry's lock: if the entry is finished it copies it (into its work dir, then
the usual swap into place), otherwise it trains the stage and publishes a copy. Parallel jobs
wait on the lock instead of training the same stage twice.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.layout import StageFiles, file_lock, promote, write_json
from orchestrator.plan.context import ResolvedStage

log = logging.getLogger(__name__)


def reuse_or_train(store: Path, stage: ResolvedStage, train: Callable[[], dict]) -> dict:
    entry = StageFiles(store / f"{stage.name}-{stage.fingerprint}")
    final = stage.plan.files
    with file_lock(entry.directory.with_name(entry.directory.name + ".lock")):
        if entry.done.exists():
            log.info(
                "%s: reusing the identical stage a sweep job already trained (%s)",
                stage.name,
                entry.directory,
            )
            work = final.partial
            shutil.rmtree(work.directory, ignore_errors=True)
            shutil.copytree(entry.directory, work.directory)
            metrics = work.read_metrics() | {"reused_from": str(entry.directory)}
            write_json(work.metrics, metrics)
            promote(work, final)
            return metrics
        metrics = train()
        _publish(final, entry)
        return metrics


def _publish(final: StageFiles, entry: StageFiles) -> None:
    """Copy a finished stage into the store: temp dir, then an atomic rename."""
    tmp = entry.directory.with_name(entry.directory.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final.directory, tmp)
    os.rename(tmp, entry.directory)
