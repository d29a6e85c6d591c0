"""The run directory and its files: the one module that knows their names.

A run directory holds, per stage (``alternating/<stage>/`` or ``end_to_end/``)::

    pipeline.config     the stage's generated stock OD API config
    proposer.config     the frozen proposer's config (stages trained on another's proposals)
    stage.json          fingerprint the stage was started with (resume only if it matches)
    audit_init.json     digest of the frozen groups at initialisation (the audit's reference)
    progress.json       anytime-evaluation curve and training CPU seconds per checkpoint (resume)
    checkpoints/        ckpt-N written by tf.train.CheckpointManager (relative paths)
    train/ eval/        TensorBoard event files
    metrics.json        what the stage measured
    DONE                written last: fingerprint and the exact checkpoint it finished with

A stage trains in ``<stage>.partial/`` and is swapped into place only once its ``DONE`` is
written, so a failed or interrupted rerun never touches the finished stage it replaces.
Consumers of a stage (init sources, the frozen proposer, export, compare) read the
checkpoint from its ``DONE`` record (:class:`DoneRecord`), never from a predicted file name.

Also here: atomic JSON writes, content fingerprints, and the two kinds of lock (a blocking
``flock`` for shared caches, and the run directory's one-writer lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stages.errors import UserError

DONE = "DONE"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
PIPELINE = "pipeline.config"
PROPOSER = "proposer.config"
STARTED = "stage.json"
AUDIT_INIT = "audit_init.json"
PROGRESS = "progress.json"
EVAL_WEIGHTS = "eval_weights"
PARTIAL = ".partial"
RUN_LOCK = ".frcnn-alt.lock"


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temp file + rename): readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def fingerprint(params: dict) -> str:
    """Short, stable hash of JSON-able parameters (cache keys, stage fingerprints)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def checkpoint_id(prefix: str | Path | None) -> str | None:
    """Content id of a checkpoint: the hash of its ``.index`` (tensor shapes and CRCs)."""
    if prefix is None:
        return None
    index = Path(str(prefix) + ".index")
    if not index.is_file():
        raise FileNotFoundError(f"{index}: checkpoint index not found")
    return hashlib.sha256(index.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class DoneRecord:
    """A finished stage: what it was trained from (fingerprint) and what it handed over."""

    fingerprint: str
    checkpoint: str  # absolute prefix, e.g. <run>/alternating/s1_rpn/checkpoints/ckpt-1000
    checkpoint_id: str | None
    raw: dict


def stage_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "end_to_end" if name == "end_to_end" else run_dir / "alternating" / name


@dataclass(frozen=True)
class StageFiles:
    """The files of one stage directory (the finished one, or its ``.partial`` work dir)."""

    directory: Path

    @property
    def done(self) -> Path:
        return self.directory / DONE

    @property
    def metrics(self) -> Path:
        return self.directory / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.directory / CHECKPOINTS

    @property
    def pipeline(self) -> Path:
        return self.directory / PIPELINE

    @property
    def proposer(self) -> Path:
        return self.directory / PROPOSER

    @property
    def started(self) -> Path:
        return self.directory / STARTED

    @property
    def audit_init(self) -> Path:
        return self.directory / AUDIT_INIT

    @property
    def progress(self) -> Path:
        return self.directory / PROGRESS

    @property
    def eval_weights(self) -> Path:
        return self.directory / EVAL_WEIGHTS / "weights"

    @property
    def train_events(self) -> Path:
        return self.directory / "train"

    @property
    def eval_events(self) -> Path:
        return self.directory / "eval"

    @property
    def partial(self) -> StageFiles:
        return StageFiles(self.directory.with_name(self.directory.name + PARTIAL))

    def read_done(self) -> DoneRecord | None:
        data = read_json(self.done)
        if data is None:
            return None
        checkpoint = str(self.directory / data["checkpoint"]) if data.get("checkpoint") else ""
        return DoneRecord(data["fingerprint"], checkpoint, data.get("checkpoint_id"), data)

    def read_metrics(self) -> dict:
        return read_json(self.metrics) or {}

    def write_done(self, record: dict, checkpoint: str) -> None:
        """``DONE`` last: the checkpoint relative to the stage dir (valid after the swap)."""
        relative = os.path.relpath(checkpoint, self.directory)
        write_json(self.done, {**record, "checkpoint": relative, "checkpoint_id": checkpoint_id(checkpoint)})


def promote(work: StageFiles, final: StageFiles) -> None:
    """Swap a finished work dir into place; the stage it replaces is removed only after.

    Two renames: between them the finished work dir is the only copy, and
    :func:`recover_promotion` completes the swap on the next run if a crash hits that moment.
    """
    trash = final.directory.with_name(final.directory.name + ".replaced")
    shutil.rmtree(trash, ignore_errors=True)
    if final.directory.exists():
        os.rename(final.directory, trash)
    os.rename(work.directory, final.directory)
    shutil.rmtree(trash, ignore_errors=True)


def recover_promotion(final: StageFiles) -> None:
    """Finish a swap interrupted between its two renames (a finished work dir, no final)."""
    work = final.partial
    if not final.directory.exists() and work.done.exists():
        os.rename(work.directory, final.directory)
    shutil.rmtree(final.directory.with_name(final.directory.name + ".replaced"), ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """A blocking exclusive ``flock`` on ``path``: parallel jobs build a shared entry once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunDirBusy(UserError):
    """Another process holds the run directory."""


class RunDirUnwritable(UserError):
    """The run directory cannot be created or written."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """One writer per run directory, for the whole process.

    An OS-level ``flock``: it dies with its process, so a ``kill -9`` leaves no stale lock.
    A second process stops at once naming the holder's PID (or waits, with ``wait=True``).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / RUN_LOCK, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise RunDirUnwritable(
            f"hydra.run.dir={str(run_dir)!r}: cannot write there ({exc.strerror}); pick a writable directory"
        ) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunDirBusy(
                f"{run_dir} is in use by another frcnn-alt process (PID {holder}); wait for it to "
                f"finish or use another hydra.run.dir (wait_for_lock=true waits instead)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
