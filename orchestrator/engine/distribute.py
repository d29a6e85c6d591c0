"""The process's distribution strategy, made once, and how workers agree on what to do.

``MultiWorkerMirroredStrategy`` must be created before the process runs any TensorFlow op
("Collective ops must be configured at program startup"), so ``python -m orchestrator`` makes
it right after its config checks, before data validation or backbone pre-training, and hands
it down (:class:`Worker`); one strategy serves every stage of the run.

In a multi-worker run the chief alone decides and writes; every worker trains every step
(each step, checkpoint save and audit read is collective). :meth:`Worker.decide` runs a
decision on the chief and hands its answer to the others through the coordination service's
key-value store, so a non-chief worker skips, resumes or waits exactly as the chief does, and
restores the chief's checkpoints. Non-chief checkpoints (saving is collective) go to a local
scratch directory, removed at exit, like the stock loop's ``temp_worker_NNN`` directories.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from orchestrator import compat
from orchestrator.cluster import ClusterError, Role, slurm_port_base
from stages.spec import Strategy, TrainConfig

log = logging.getLogger(__name__)

# What a lost peer raises in a collective or a coordination call (measured: UnavailableError,
# "Collective ops is aborted by: Connection reset by peer"); other errors keep their traceback.
LOST = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)


@dataclass(frozen=True)
class Worker:
    """This process's strategy and place in the cluster (role None: one process, the chief)."""

    strategy: tf.distribute.Strategy | None  # None: made per stage (default / mirrored)
    role: Role | None = None
    scratch: Path | None = None  # non-chief only: where its collective writes go
    published: dict[str, str] = field(default_factory=dict)  # chief: what it already decided
    runs: Iterator[int] = field(default_factory=itertools.count)  # numbers this process's app.run calls

    @property
    def multi(self) -> bool:
        return self.role is not None and self.role.count > 1

    @property
    def is_chief(self) -> bool:
        return not self.multi or self.role.is_chief

    def decide(self, key: str, decision: Callable[[], str]) -> str:
        """The chief runs ``decision`` and publishes it; the other workers wait for its answer."""
        if not self.multi:
            return decision()
        try:
            if self.is_chief:
                if key not in self.published:  # a key is published once; later calls repeat it
                    self.published[key] = decision()
                    compat.publish(key, self.published[key])
                return self.published[key]
            return compat.receive(key)
        except LOST as exc:
            raise lost_contact(f"exchanging {key!r}", exc) from None

    def leave_together(self, name: str, timeout_s: int = 120) -> None:
        """Every worker waits here, so none leaves while another still reads from it."""
        if self.multi:
            try:
                compat.barrier(name, timeout_s)
            except LOST as exc:
                raise lost_contact(f"leaving ({name})", exc) from None

    def next_run(self) -> int:
        """The number of this ``app.run`` call in the process; keys of one run share it."""
        return next(self.runs)

    def close(self) -> None:
        """Remove the scratch directory (a multi-worker process leaves without running atexit)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def local(self, name: str) -> Path:
        """A non-chief worker's private directory for ``name`` (collective writes land there)."""
        assert self.scratch is not None, "only a non-chief worker writes to scratch"
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def lost_contact(during: str, exc: BaseException) -> ClusterError:
    first = (str(exc).strip().splitlines() or ["(no message)"])[0][:300]
    return ClusterError(
        f"lost contact with another worker while {during} ({type(exc).__name__}: {first}). Finished "
        "stages and the last checkpoint are kept; restart every worker with the same command to resume."
    )


_started: Worker | None = None


def start(train: TrainConfig, role: Role | None) -> Worker:
    """The process's :class:`Worker`; a multi-worker one is made once (its strategy cannot be remade)."""
    global _started
    if train.strategy != Strategy.multi_worker:
        return Worker(None, role)  # default / mirrored: a strategy per stage, as before
    if _started is not None:
        return _started
    if compat.eager_context_started():
        raise ClusterError(
            "train.strategy=multi_worker must be set up before TensorFlow runs anything in the "
            "process: start it as `python -m orchestrator ...` (or `frcnn-alt ...`), one process per worker."
        )
    resolver = _cluster_resolver(train, role)
    compat.configure_coordination(resolver, train.heartbeat_timeout_s, train.cluster_timeout_s)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except LOST as exc:
        raise ClusterError(
            f"the workers did not all start within train.cluster_timeout_s={train.cluster_timeout_s} "
            f"({type(exc).__name__}); start the same command on every host of the cluster description"
        ) from None
    scratch = None
    if role is not None and not role.is_chief:
        scratch = Path(tempfile.mkdtemp(prefix=f"frcnn-alt-{role.log_name}-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    log.info(
        "multi-worker: %s of %d workers (%s), %d replicas in sync",
        role.name if role else "worker:0",
        role.count if role else 1,
        role.source if role else "no cluster: one worker",
        strategy.num_replicas_in_sync,
    )
    _started = Worker(strategy, role, scratch)
    return _started


def _cluster_resolver(train: TrainConfig, role: Role | None):
    """From TF_CONFIG, or from SLURM's environment (one task per worker), or one local worker."""
    if role is not None and role.source == "SLURM":
        env = os.environ
        return compat.slurm_cluster_resolver(
            slurm_port_base(train.port_base, env), int(env.get("SLURM_GPUS_ON_NODE") or 0)
        )
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()
