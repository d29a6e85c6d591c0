"""Train one stage: build, initialise, freeze, loop, checkpoint, audit (the outer loop).

Call order inside :func:`train_stage` (like detectron2's ``HookBase`` docstring):

1. build the model from the stage's ``pipeline.config`` and call it once (all variables exist);
2. resolve module groups, then resume from the newest checkpoint that reads back in full
   (:func:`resume_point`: unreadable ones are logged, deleted and the next older one tried)
   or initialise from the stage's sources (:mod:`orchestrator.odapi.restore`);
3. freeze: ``trainable = False`` on the frozen groups; snapshot them for the audit;
4. build the frozen proposer, if the spec names one; where :mod:`stages.cache` allows it, run
   the frozen parts (that proposer, or the stage's own frozen shared convs and RPN) once over
   the training images (:mod:`orchestrator.engine.cache`), so the stage trains on their cached
   outputs (a cached proposer is dropped: training never calls it; it first computes the val
   proposals the stage's evaluation replays, so evaluation needs no proposer either); a cache
   of shared features replaces the image pipeline too (:mod:`orchestrator.engine.cache_input`);
5. loop: the inner step (:mod:`orchestrator.engine.step`), summaries every ``log_every`` steps,
   a checkpoint every ``checkpoint_every`` steps and at the end; a non-finite loss stops the
   stage and keeps the last good checkpoint; SIGINT/SIGTERM (:mod:`orchestrator.engine.interrupts`)
   stop it after the current step with a checkpoint at that step;
6. audit the frozen groups; write ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.engine import audit as audit_lib
from orchestrator.engine import cache as cache_lib
from orchestrator.engine import cache_input, cache_keys, cache_store, interrupts
from orchestrator.engine.anytime import AnytimeCurve, Evaluate
from orchestrator.engine.cache_store import CacheContext, cache_key
from orchestrator.engine.distribute import LOST, Worker, lost_contact
from orchestrator.engine.evaluate import EvaluationStopped, ValProposals
from orchestrator.engine.step import make_train_step
from orchestrator.layout import StageFiles, write_json
from orchestrator.odapi import builder, proposals, restore
from orchestrator.odapi.proposals import EVAL_PROPOSALS
from stages.cache import CacheDecision
from stages.errors import UserError
from stages.groups import resolve_groups
from stages.spec import StageSpec, Strategy, TrainConfig

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError):
    """A NaN or Inf loss: the stage stops, nothing is marked done."""


@dataclass(frozen=True)
class Proposer:
    """A frozen network that proposes boxes: its pipeline.config and checkpoint."""

    stage: str
    pipeline_path: Path
    checkpoint: str


@dataclass(frozen=True)
class StageRun:
    """Everything :func:`train_stage` needs; built by :mod:`orchestrator.chain.train`."""

    name: str
    spec: StageSpec
    directory: Path
    pipeline_path: Path
    steps: int
    sources: dict[str, restore.Source]
    proposer: Proposer | None = None
    step_offset: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)  # strategy, cadence of logs/checkpoints
    evaluate: Evaluate | None = None  # periodic evaluation of the live weights (anytime curve)
    eval_every: int | None = None
    worker: Worker = field(default_factory=lambda: Worker(None))  # strategy and cluster role
    resume_key: str = ""  # multi-worker: where the chief publishes the checkpoint all resume from
    cache: CacheDecision | None = None  # stages 2-4: train on frozen parts' cached outputs
    cache_context: CacheContext | None = None  # where caches live; what every cache key includes
    val_proposals: ValProposals | None = None  # a proposer stage's: filled with its training cache

    @property
    def files(self) -> StageFiles:
        return StageFiles(self.directory)

    @property
    def checkpoint_dir(self) -> Path:
        return self.files.checkpoints


def make_strategy(kind: Strategy) -> tf.distribute.Strategy:
    if kind == Strategy.mirrored:
        return tf.distribute.MirroredStrategy()
    if kind == Strategy.multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def build_frozen_proposer(proposer: Proposer, features, labels):
    """The proposer network, restored in full and frozen (inference-mode BatchNorm)."""
    configs = builder.load_configs(proposer.pipeline_path)
    model = builder.build_model(configs, is_training=True)
    builder.ensure_built(model, features, labels)
    groups = resolve_groups(model)
    restore.initialize(
        model, groups, {g: restore.Source(proposer.stage, proposer.checkpoint) for g in groups.modules}
    )
    groups.set_trainable(())
    return model, groups


class _ProposerAudit:
    """The frozen proposer must leave the stage bit-identical too (every group)."""

    def __init__(self, groups) -> None:
        self.groups = groups
        self.snapshot = audit_lib.Snapshot.take(groups, tuple(groups.variables))

    def check(self) -> dict:
        return audit_lib.audit(self.groups, self.snapshot, self.snapshot.digest())


def _predict_fn(model, proposer_model, cached, lookup, first_stage_only: bool):
    if cached is not None:  # from the batch (cache rows), else through the lookup
        return proposals.cached_predict(model, lookup, first_stage_only)
    if proposer_model is not None:
        live = proposals.frozen_proposer_predict(model, proposer_model)
    elif first_stage_only:
        live = proposals.rpn_only_predict(model)
    else:
        live = proposals.own_predict(model)

    def predict(images, true_shapes, keys=None):
        # cache.mode=force adds cache keys to the batches before it knows whether the cache is
        # built; when it is not (too large, refused), the live prediction has no use for them.
        return live(images, true_shapes)

    return predict


def _log_groups(run: StageRun, groups, report: dict[str, str], trainable) -> None:
    log.info("== %s: %s", run.name, run.spec.paper_step)
    for group, (count, total) in groups.counts(trainable).items():
        state = "trains" if group in run.spec.trained_groups else "FROZEN"
        log.info(
            "  %-18s %-6s %3d/%3d trainable vars | init from %s",
            group,
            state,
            count,
            total,
            report.get(group, "?"),
        )


def _check_finite(run: StageRun, step: int, losses: dict, manager) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLoss(
            f"stage {run.name}: non-finite loss at step {step}: {bad}. The last good checkpoint "
            f"({manager.latest_checkpoint or 'none'}) is kept; lower train.lr or check the data, then rerun."
        )


_CHECKPOINT_NUMBER = re.compile(r"-(\d+)$")


def _number(prefix: Path) -> int:
    match = _CHECKPOINT_NUMBER.search(prefix.name)
    return int(match.group(1)) if match else -1


def _checkpoint_files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + ".index")) + sorted(
        prefix.parent.glob(prefix.name + ".data-*")
    )


def _unreadable(prefix: Path) -> str | None:
    """Why ``prefix`` does not read back in full (each tensor read, its CRC checked), or None.

    Read before restoring: a restore that fails half-way would leave the model (and the global
    step) partly overwritten by the bad checkpoint.
    """
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError, IndexError) as exc:
        return f"{prefix.name}.index: {type(exc).__name__}: {_first_line(exc)}"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as exc:
        data = ", ".join(p.name for p in _checkpoint_files(prefix) if ".data-" in p.name)
        return f"{data or prefix.name + '.data-*'}: {type(exc).__name__}: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def resume_point(directory: Path, stage: str = "") -> str | None:
    """The newest checkpoint in ``directory`` that reads back in full, or None (a fresh start).

    Candidates are the checkpoints the state file lists plus any ``ckpt-N`` files it does not
    (a save killed before its state update), newest first. One that does not read back is
    logged, deleted, and the next older one tried; the state file is then rewritten so
    nothing picks a deleted checkpoint up again. Leftovers of an unfinished save
    (``ckpt-N_temp/``, ``checkpoint.tmp*``) are removed.
    """
    if not directory.is_dir():
        return None
    for leftover in [*directory.glob("*_temp*"), *directory.glob("checkpoint.tmp*")]:
        log.info("%s: removing %s, left by an unfinished checkpoint save", stage, leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    state = tf.train.get_checkpoint_state(str(directory))
    listed = [directory / Path(p).name for p in (state.all_model_checkpoint_paths if state else ())]
    on_disk = {p.with_name(p.name.split(".")[0]) for p in directory.glob("ckpt-*.*")}
    candidates = sorted(set(listed) | on_disk, key=_number)
    kept = list(candidates)
    chosen = None
    for prefix in reversed(candidates):
        problem = _unreadable(prefix)
        if problem is None:
            chosen = prefix
            break
        log.warning(
            "%s: skipping checkpoint %s: it does not read back (%s); deleted it",
            stage,
            prefix,
            problem,
        )
        for path in _checkpoint_files(prefix):
            path.unlink(missing_ok=True)
        kept.remove(prefix)
    # Older ones stay listed (unread until needed) if their index is there at all.
    kept = [p for p in kept if chosen is not None and p.with_name(p.name + ".index").is_file()]
    recorded = (Path(state.model_checkpoint_path).name, [Path(p).name for p in listed]) if state else None
    if recorded != ((chosen.name, [p.name for p in kept]) if kept else None):
        _write_state(directory, kept)
    if chosen is None and candidates:
        log.warning("%s: no checkpoint reads back; starting the stage afresh from its sources", stage)
    if chosen is not None:
        log.info("%s: resuming from %s", stage, chosen)
    return str(chosen) if chosen is not None else None


def _write_state(directory: Path, kept: list[Path]) -> None:
    """The ``checkpoint`` state file listing ``kept`` (oldest first, relative paths), or none."""
    state_file = directory / "checkpoint"
    if not kept:
        state_file.unlink(missing_ok=True)
        return
    tf.compat.v1.train.update_checkpoint_state(
        str(directory),
        kept[-1].name,
        [p.name for p in kept],
        all_model_checkpoint_timestamps=[(p.parent / (p.name + ".index")).stat().st_mtime for p in kept],
    )


def train_stage(run: StageRun) -> dict:
    """Train ``run`` to ``run.steps``; returns the stage metrics (also in ``metrics.json``)."""
    with interrupts.during(f"{run.name} training", stage=run.name):
        try:
            return _train_stage(run)
        except LOST as exc:
            if not run.worker.multi:
                raise
            raise lost_contact(f"training {run.name}", exc) from None


def _train_stage(run: StageRun) -> dict:
    started = time.time()
    configs = builder.load_configs(run.pipeline_path)
    strategy = run.worker.strategy or make_strategy(run.train.strategy)
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with strategy.scope():
        model = builder.build_model(configs, is_training=True)
        data_configs, transform = cache_keys.training_input(run.cache, configs)

        def stock(input_context=None):
            dataset = builder.train_dataset(data_configs, model, input_context=input_context)
            return dataset if transform is None else dataset.map(transform)

        data, first = _train_iterator(strategy, stock, run.worker.multi)
        builder.ensure_built(model, *first)
        groups = resolve_groups(model)
        global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        optimizer, lr_fn = builder.build_optimizer(configs, global_step)
        checkpoint = tf.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
        # Before the manager reads the state; the other workers resume from the chief's choice.
        resume = run.worker.decide(run.resume_key, lambda: resume_point(run.checkpoint_dir, run.name) or "")
        resume = resume or None
        manager = tf.train.CheckpointManager(
            checkpoint, str(run.checkpoint_dir), max_to_keep=run.train.keep_checkpoints
        )
        if resume:
            checkpoint.restore(resume).expect_partial()
            report = {g: f"resume {resume}" for g in groups.modules}
        else:
            # A fresh start: the frozen groups' reference digest is taken anew below.
            run.files.audit_init.unlink(missing_ok=True)
            report = restore.initialize(model, groups, run.sources)
        groups.set_trainable(run.spec.trained_groups)
        _log_groups(run, groups, report, model.trainable_variables)
        snapshot = audit_lib.Snapshot.take(groups, run.spec.frozen_groups)
        initial_digest = audit_lib.load_or_store_digest(run.files.audit_init, snapshot)
        proposer_model, proposer_audit, cached, extra = _frozen_inputs(
            run, model, configs, first, initial_digest
        )
        lookup = None
        if cached is not None and cached.replaces_images:  # the image pipeline is not needed
            data, _ = _train_iterator(strategy, partial(cache_input.rows_dataset, cached, configs))
        elif cached is not None:
            lookup = cache_lib.CacheLookup(cached)  # holds the only copy
        first_stage_only = run.spec.skips_second_stage and run.proposer is None
        step_fn = make_train_step(
            model,
            optimizer,
            _predict_fn(model, proposer_model, cached, lookup, first_stage_only),
            first_stage_only=first_stage_only,
            clip_norm=configs["train_config"].gradient_clipping_by_norm or None,
            num_replicas=strategy.num_replicas_in_sync,
        )
        train_fn = _TrainFn(strategy, step_fn)
    distribution = _distribution(run, strategy, configs)
    curve = AnytimeCurve(run.files, run.eval_every, run.evaluate, run.step_offset, int(global_step.numpy()))
    # Building the cache is part of what training this stage cost; its val proposals, of evaluating.
    curve.train_cpu += extra.get("cache", {}).get("build_cpu_seconds", 0.0)
    curve.eval_cpu += extra.get("cache", {}).get("val_proposals", {}).get("build_cpu_seconds", 0.0)
    # Outside the strategy's scope: evaluation builds its own model, which must not become a
    # distributed one (under MultiWorkerMirroredStrategy the chief alone would create it and hang).
    timings = _loop(run, train_fn, data, global_step, lr_fn, manager, _Anytime(curve, model), resume)
    audit_result = audit_lib.audit(groups, snapshot, initial_digest)
    _release_cache(run, extra)
    if proposer_audit is not None:
        extra["proposer_audit"] = proposer_audit.check()
    metrics = {
        "stage": run.name,
        "steps": int(global_step.numpy()),
        "wall_seconds": round(time.time() - started, 2),
        "startup_seconds": round(timings.pop("startup_until_first_step") - started, 2),
        **timings,
        "checkpoint": manager.latest_checkpoint,
        "init": report,
        "variables": {
            g: {"trained": t, "total": n} for g, (t, n) in groups.counts(model.trainable_variables).items()
        },
        "frozen_audit": audit_result,
        **extra,
        "distribution": distribution,
        **curve.summary(),
    }
    write_json(run.files.metrics, metrics)
    return metrics


def _frozen_inputs(run: StageRun, model, configs: dict, first, frozen_digest: dict) -> tuple:
    """(live proposer, its audit, the cache, metrics): where the frozen parts' outputs come from.

    With caching on, the frozen parts (the proposer, or the stage model's own frozen groups,
    already frozen and pinned here) run once over the training images, or a complete cache
    of the same key is reused (:mod:`orchestrator.engine.cache_store`). A proposer is built
    only to build a cache (a proposer's key is its checkpoint's digest, so a reused cache
    needs none), then audited at once (it must leave that pass bit-identical) and dropped:
    training never calls it. A cache above both budgets is not built: the stage computes
    those parts live.
    """
    decision = run.cache if run.cache is not None and run.cache.on else None
    proposer = _FrozenProposer(run.proposer, first)
    if decision is None or run.cache_context is None:
        return *proposer.get(), None, {}
    settings, by_record = decision.settings, bool(decision.approximate)
    digest = _producer_digest(run, frozen_digest)
    key = cache_key(
        run.cache_context, digest, configs, decision.parts, decision.flips, settings.float16, by_record
    )
    directory = run.cache_context.root / f"{run.name}-{key}"
    budget = cache_store.Budget(settings.memory_mb, settings.disk_mb, settings.float16)

    def outputs() -> cache_lib.Outputs:  # called only when the cache is built, not reused
        producer = proposer.get()[0] if run.proposer is not None else model
        return cache_lib.producer_outputs(producer, decision.parts)

    try:
        cached = cache_lib.build_cache(
            run.name, model, outputs, configs, decision.flips, budget, directory, by_record
        )
    except cache_store.Refused as exc:
        why = f"the cache would take {exc}" if isinstance(exc, cache_store.TooLarge) else str(exc)
        log.info("%s: frozen parts computed every step: %s", run.name, why)
        return *proposer.get(), None, {"cache": {"parts": list(decision.parts), "off": why}}
    cache_lib.log_summary(run.name, cached)
    extra = {"cache": cached.summary() | {"kept": settings.keep, "approximate": list(decision.approximate)}}
    if run.proposer is not None and run.val_proposals is not None:
        extra["cache"]["val_proposals"] = _val_proposals(run, digest, configs, model, proposer)
    if proposer.audit is not None:
        extra["proposer_audit"] = proposer.audit.check()
    return None, None, cached, extra


def _val_proposals(run: StageRun, digest: dict, configs: dict, model, proposer: _FrozenProposer) -> dict:
    """Fill ``run.val_proposals`` for the stage's evaluator: built by the proposer that built the
    training cache (or by one built now, if only the training cache was complete), or reused."""
    key = cache_key(run.cache_context, digest, configs, (), (False,), False, val_proposals=EVAL_PROPOSALS)
    directory = run.cache_context.root / f"{run.name}-{key}"
    val = cache_lib.build_val_proposals(run.name, lambda: proposer.get()[0], model, configs, directory)
    run.val_proposals.cache = val
    summary = val.summary()
    return {k: summary[k] for k in ("directory", "reused", "entries", "bytes", "build_cpu_seconds")}


def _producer_digest(run: StageRun, frozen_digest: dict) -> dict:
    """What identifies the frozen part: the stage's frozen weights, or the proposer's checkpoint
    and model config (its NMS settings and proposal count are set there, not in the stage's)."""
    if run.proposer is None:
        return frozen_digest
    model = builder.load_configs(run.proposer.pipeline_path)["model"]
    return cache_lib.checkpoint_digest(run.proposer.checkpoint) | {"proposer_model": str(model)}


class _FrozenProposer:
    """The stage's frozen proposer (None without one), built at its first use."""

    def __init__(self, proposer: Proposer | None, first) -> None:
        self.proposer, self.first = proposer, first
        self.model = self.audit = None

    def get(self) -> tuple:
        """(proposer model, its audit); (None, None) for a stage without a proposer."""
        if self.model is None and self.proposer is not None:
            self.model, groups = build_frozen_proposer(self.proposer, *self.first)
            self.audit = _ProposerAudit(groups)
            log.info("  proposals from frozen %s (%s)", self.proposer.stage, self.proposer.checkpoint)
        return self.model, self.audit


def _release_cache(run: StageRun, extra: dict) -> None:
    """A finished stage's caches are deleted unless ``cache.keep`` (an interrupted one's stay for
    resume); its val proposals stay in memory for its final evaluation."""
    cache = extra.get("cache", {})
    directories = [cache.get("directory"), cache.get("val_proposals", {}).get("directory")]
    if cache.get("directory") and not run.cache.settings.keep:
        for directory in filter(None, directories):
            shutil.rmtree(directory, ignore_errors=True)
        log.info("%s: removed its cache (cache.keep=true keeps it for later runs)", run.name)


def _distribution(run: StageRun, strategy, configs) -> dict:
    """How the global batch is split: the figures a multi-worker run is checked against."""
    replicas = strategy.num_replicas_in_sync
    batch = configs["train_config"].batch_size
    role = run.worker.role
    out = {
        "strategy": str(run.train.strategy.value),
        "workers": role.count if run.worker.multi else 1,
        "replicas": replicas,
        "global_batch": batch,
        "per_replica_batch": batch // replicas,
    }
    if run.worker.multi:
        log.info("%s: %s trains a per-replica batch of %d of global %d over %d replicas",
                 run.name, role.name, batch // replicas, batch, replicas)  # fmt: skip
    return out


def _train_iterator(strategy, dataset_fn: Callable, shard_data: bool = False) -> tuple:
    """(training iterator, one batch to build the model with), from ``dataset_fn(input_context)``.

    On one replica the batch comes from the training iterator itself: the OD API input
    pipeline costs seconds to build (autograph converts its map functions), so it is built once.
    A distributed iterator yields per-replica batches, so the model gets its own plain batch.
    Across workers (``shard_data``) every worker reads the same global batches and keeps its own
    slice of each (sharding by data: the built-in data is one file, and the OD API shards by
    file); the batch after the model's is step 1's, as on one replica.
    """
    if strategy.num_replicas_in_sync == 1:
        data = iter(dataset_fn())
        return data, next(data)
    if shard_data:
        dataset = dataset_fn()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        distributed = strategy.experimental_distribute_dataset(dataset.skip(1).with_options(options))
        return iter(distributed), next(iter(dataset))
    first = next(iter(dataset_fn()))
    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    return iter(dataset), first


class _TrainFn:
    """``n`` compiled steps per call, each pulling its own batch in-graph (as the stock loop does).

    One ``tf.while_loop`` whose body is the only trace of the step. It returns the last step's
    losses (a vector; ``keys`` names its entries, learnt while tracing), the offset of the
    first step whose total loss was not finite (-1 if none), so the NaN guard names the step,
    and how many steps it ran: its condition also reads ``stop``, so a requested stop ends
    the call after the step in progress.
    """

    def __init__(self, strategy, step_fn) -> None:
        self.strategy, self.step_fn, self.keys = strategy, step_fn, []
        with tf.init_scope():
            self.stop = tf.Variable(False, trainable=False, name="stop_requested")
        self._fn = tf.function(self._run)

    def _one_step(self, iterator) -> dict:
        features, labels = next(iterator)
        per_replica = self.strategy.run(self.step_fn, args=(features, labels))
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()
        }

    def _run(self, iterator, n):
        def body(i, first_bad, _):
            losses = self._one_step(iterator)
            self.keys[:] = sorted(losses)
            finite = tf.math.is_finite(losses["Loss/total_loss"])
            first_bad = tf.where(tf.logical_and(first_bad < 0, tf.logical_not(finite)), i, first_bad)
            return i + 1, first_bad, tf.stack([tf.cast(losses[k], tf.float32) for k in self.keys])

        def more(i, *_):
            return tf.logical_and(i < n, tf.logical_not(self.stop))

        start = (tf.constant(0), tf.constant(-1), tf.zeros([0]))
        invariants = (tf.TensorShape([]), tf.TensorShape([]), tf.TensorShape([None]))
        ran, first_bad, values = tf.while_loop(more, body, start, shape_invariants=invariants)
        return values, first_bad, ran

    def _results(self, values, first_bad, ran) -> tuple[dict, int, int]:
        ran = int(ran)
        losses = dict(zip(self.keys, values.numpy().tolist(), strict=True)) if ran else {}
        return losses, int(first_bad), ran

    def __call__(self, iterator, n: int) -> tuple[dict, int]:
        """Run ``n`` steps in the calling thread: (last losses, first non-finite offset or -1)."""
        losses, first_bad, _ = self._results(*self._fn(iterator, tf.constant(n)))
        return losses, first_bad

    def steps(self, iterator, n: int, abandon_on_stop: bool = False) -> tuple[dict, int, int] | None:
        """Run up to ``n`` steps off the main thread: (last losses, first non-finite, steps run).

        The main thread only waits, so the signal handler runs at once; when it requests a
        stop, ``stop`` is set and the call returns after its current step. With
        ``abandon_on_stop`` (nothing trained yet to save) it returns None at once instead,
        leaving the call (maybe still tracing, tens of seconds) to end on its own.
        """
        result: dict = {}

        def work() -> None:
            try:
                with self.strategy.scope():
                    result["out"] = self._results(*self._fn(iterator, tf.constant(n)))
            except BaseException as exc:  # re-raised in the main thread
                result["error"] = exc

        worker = threading.Thread(target=work, name="train-steps", daemon=True)
        worker.start()
        while worker.is_alive():
            if interrupts.requested() and not bool(self.stop.numpy()):
                self.stop.assign(True)
                if abandon_on_stop:
                    return None
            worker.join(0.05)
        if "error" in result:
            raise result["error"]
        return result["out"]


def _chunk(step: int, run: StageRun) -> int:
    """Steps in the next compiled call: up to the next log, checkpoint, evaluation or final step."""
    cadence = [run.train.log_every, run.train.checkpoint_every, *([run.eval_every] if run.eval_every else [])]
    limit = min(run.steps, *((step // e + 1) * e for e in cadence))
    return max(1, min(run.train.steps_per_loop, limit - step))


@dataclass(frozen=True)
class _Anytime:
    """The stage's curve and the live model it evaluates."""

    curve: AnytimeCurve
    model: object


def _loop(
    run: StageRun,
    train_fn: _TrainFn,
    data,
    global_step,
    lr_fn,
    manager,
    anytime: _Anytime,
    resume: str | None,
) -> dict:
    writer = tf.summary.create_file_writer(str(run.files.train_events))
    start = step = int(global_step.numpy())
    step_times: list[float] = []
    first_step_at = None
    losses = {}
    bar = tqdm(
        total=run.steps, initial=start, desc=run.name, unit="step", mininterval=2.0, dynamic_ncols=True
    )
    # Across workers a signal stops at once (the last checkpoint is the resume point): a save
    # after the step in progress would be a collective the other workers are not making.
    stop_after_step = contextlib.nullcontext() if run.worker.multi else interrupts.training()
    first_losses: dict = {}
    try:
        with writer.as_default(), stop_after_step:
            while step < run.steps and not interrupts.requested():
                n = 1 if step == start else _chunk(step, run)  # the first call traces: keep it alone
                tick = time.time()
                first = step == start
                out = anytime.curve.train(
                    lambda n=n, first=first: train_fn.steps(data, n, abandon_on_stop=first)
                )
                if out is None:
                    break  # interrupted before this process trained a step: nothing to save
                ran_losses, bad, ran = out
                if ran:
                    losses = ran_losses
                    first_losses = first_losses or dict(ran_losses)
                    step_times += [(time.time() - tick) / ran] * ran
                    first_step_at = first_step_at or tick
                if bad >= 0:
                    losses["Loss/total_loss"] = math.nan
                _check_finite(run, step + 1 + bad if bad >= 0 else step + ran, losses, manager)
                step += ran
                global_step.assign(step)
                bar.update(ran)
                if ran < n:
                    continue  # stopped early: the interrupt below saves this step
                if step % run.train.log_every == 0 or step == run.steps:
                    bar.set_postfix(loss=f"{losses['Loss/total_loss']:.3f}", refresh=False)
                    _summaries(losses, float(lr_fn()), step_times, run.step_offset + step)
                if step % run.train.checkpoint_every == 0 or step == run.steps:
                    manager.save(checkpoint_number=step)
                    anytime.curve.checkpointed(step)
                if anytime.curve.due(step, run.steps):
                    with contextlib.suppress(EvaluationStopped):  # then the loop saves and stops
                        anytime.curve.evaluate_now(step, anytime.model)
            if interrupts.requested():
                _save_and_raise(run, step, start, losses, manager, anytime.curve)
    finally:
        bar.close()
        writer.flush()
    if not manager.latest_checkpoint and not resume:  # every worker alike (saving is collective)
        manager.save(checkpoint_number=int(global_step.numpy()))
        anytime.curve.checkpointed(int(global_step.numpy()))
    steady = step_times[1:] or step_times
    return {
        "resumed_from_step": start,
        "startup_until_first_step": first_step_at or time.time(),
        "train_seconds": round(sum(step_times), 2),
        "step_time_ms_median": round(1000 * float(np.median(steady)), 2) if steady else None,
        "final_losses": losses,
        "first_step_losses": first_losses,
    }


def _save_and_raise(run: StageRun, step: int, start: int, losses: dict, manager, curve: AnytimeCurve) -> None:
    """An interrupt: keep the steps trained (a checkpoint at ``step``), then stop the stage."""
    saved = manager.latest_checkpoint and Path(manager.latest_checkpoint).name == f"ckpt-{step}"
    if step > start and not saved and math.isfinite(losses.get("Loss/total_loss", math.nan)):
        manager.save(checkpoint_number=step)
        curve.checkpointed(step)
    raise interrupts.Interrupted(
        f"interrupted at step {step} of {run.name}; {interrupts.RERUN}", interrupts.requested()
    )


def _summaries(losses: dict, lr: float, step_times: list[float], step: int) -> None:
    for key, value in losses.items():
        tf.summary.scalar(key, value, step=step)
    tf.summary.scalar("learning_rate", lr, step=step)
    recent = step_times[-25:]
    tf.summary.scalar("steps_per_sec", len(recent) / max(sum(recent), 1e-9), step=step)
