"""Frozen parts computed once: the build pass and the in-graph lookup.

The build pass runs the stage's own input pipeline unshuffled for one epoch, once per flip
state training can draw (no flip, then the flip forced on), at the stage's batch size, through
the frozen part (:func:`producer_outputs`): stage 2's frozen proposer, or the stage's own
model, whose frozen shared convs (and, in stage 4, frozen RPN) do not change while it trains.
Each entry is keyed by a fingerprint of the preprocessed image (``cache.mode=force``: of its
record and flip), as :mod:`orchestrator.engine.cache_keys` says; the step computes the same key
for each image of its batch and gathers that entry. :mod:`stages.cache` allows caching only
where training can produce no other image; should one reach the lookup anyway, an assertion
stops the step (a bug: its traceback is kept). Where the entries live on disk, and when one
is reused: :mod:`orchestrator.engine.cache_store`.

Why this is exact, and what it saves: "Caching frozen parts" in ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.engine import cache_input, cache_keys, cache_store
from orchestrator.engine.cache_keys import without_steps
from orchestrator.odapi import builder, fields, proposals
from stages.cache import FEATURES, FLIP, PHOTOMETRIC, PROPOSALS, flip_step

log = logging.getLogger(__name__)
Outputs = Callable[[tf.Tensor, tf.Tensor], dict]  # (images, true shapes) -> named tensors [batch, ...]


def producer_outputs(model, parts: tuple[str, ...]) -> Outputs:
    """What the frozen part of ``model`` computes per image: ``features/<level>`` and/or proposals.

    Proposals are the NMS output (``proposals/boxes``, ``/scores``, ``/num``), exactly what the
    detector's NMS step hands on (:func:`orchestrator.odapi.proposals.first_stage_nms`).
    """

    def outputs(images, true_shapes):
        out = {}
        if PROPOSALS in parts:  # one pass of the first stage gives both (rpn_features_to_crop)
            rpn = model._predict_first_stage(images)
            features = rpn["rpn_features_to_crop"]
            boxes, scores, num = proposals.first_stage_nms(model, rpn, images, true_shapes)
            out = {"proposals/boxes": boxes, "proposals/scores": scores, "proposals/num": num}
        else:
            features = proposals.features_to_crop(model, images)
        if FEATURES in parts:
            out |= {f"features/{level}": f for level, f in enumerate(features)}
        return out

    return outputs


@dataclass
class FrozenCache:
    """Named arrays per built image (first axis: row), read from the cache's directory."""

    keys: np.ndarray  # int64 [rows]
    arrays: dict[str, np.ndarray]  # memory-mapped; read whole (memory) or per batch (disk)
    flips: int
    place: str  # "memory" or "disk"
    directory: Path
    reused: bool  # complete on disk already (a resumed stage, or another sweep job built it)
    build_seconds: float  # this process's: building, or loading a reused cache
    build_cpu_seconds: float
    image: dict | None = None  # the training images' shape and dtype, as the build pass saw them

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """The frozen parts' outputs alone (not the stock inputs kept beside them)."""
        return {name: a for name, a in self.arrays.items() if not name.startswith(cache_input.INPUT)}

    @property
    def replaces_images(self) -> bool:
        """Whether training can draw its batches from the rows (:mod:`~orchestrator.engine.cache_input`)."""
        return any(name.startswith(cache_input.INPUT) for name in self.arrays)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + sum(a.nbytes for a in self.arrays.values())

    def summary(self) -> dict:
        return {
            "parts": sorted({name.split("/")[0] for name in self.outputs}),
            "place": self.place,
            "directory": str(self.directory),
            "reused": self.reused,
            "entries": len(self.keys),
            "flips": self.flips,
            "shapes": {name: list(a.shape[1:]) for name, a in self.outputs.items()},
            "dtypes": {name: str(a.dtype) for name, a in self.outputs.items()},
            "input": "cached rows" if self.replaces_images else "images",
            "bytes": self.nbytes,
            "build_seconds": round(self.build_seconds, 2),
            "build_cpu_seconds": round(self.build_cpu_seconds, 2),
        }


class CacheLookup:
    """``lookup(images) -> {name: tensor [batch, ...]}`` for a batch, inside the training step.

    A cache placed in memory becomes constants of the step; one placed on disk is read per
    batch from its memory-mapped files (``tf.numpy_function``: the page cache does the rest).
    float16 entries are widened back to float32 for the stock heads.
    """

    def __init__(self, cache: FrozenCache) -> None:
        with tf.init_scope():
            rows = tf.range(len(cache.keys), dtype=tf.int64)
            initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(cache.keys)), rows)
            self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)
            self.memory = cache.place == "memory"
            if self.memory:
                self.arrays = {name: tf.constant(np.asarray(a)) for name, a in cache.outputs.items()}
            else:
                self.arrays = cache.outputs

    def __call__(self, images: tf.Tensor, keys: tf.Tensor | None = None) -> dict:
        """Entries for ``images``; under ``cache.mode=force`` for their record-and-flip ``keys``."""
        rows = self.table.lookup(cache_keys.image_keys(images) if keys is None else keys)
        found = tf.debugging.assert_non_negative(
            rows,
            message="an image of this batch is not in the stage's cache (is the augmentation deterministic?)",
        )
        with tf.control_dependencies([found]):
            rows = tf.identity(rows)
        out = {name: self._gather(name, rows) for name in self.arrays}
        return {name: tf.cast(v, tf.float32) if v.dtype == tf.float16 else v for name, v in out.items()}

    def _gather(self, name: str, rows: tf.Tensor) -> tf.Tensor:
        if self.memory:
            return tf.gather(self.arrays[name], rows)
        array = self.arrays[name]
        value = tf.numpy_function(lambda r: np.ascontiguousarray(array[r]), [rows], tf.as_dtype(array.dtype))
        value.set_shape(rows.shape.concatenate(array.shape[1:]))  # the OD API unstacks the batch
        return value


def checkpoint_digest(prefix: str) -> dict[str, str]:
    """A digest of every tensor a checkpoint holds (by name): the identity of a frozen proposer
    that needs no model built."""
    reader = tf.train.load_checkpoint(prefix)
    digest = hashlib.sha256()
    for name in sorted(reader.get_variable_to_shape_map()):
        digest.update(name.encode() + b"\0" + np.asarray(reader.get_tensor(name)).tobytes())
    return {"checkpoint": digest.hexdigest()}


def build_cache(
    stage: str,
    model,
    outputs: Callable[[], Outputs],
    configs: dict,
    flips: tuple[bool, ...],
    budget: cache_store.Budget,
    directory: Path,
    by_record: bool = False,
) -> FrozenCache:
    """The cache in ``directory``: reused when complete there, else built by running
    ``outputs()`` (made only then: it may build a network) over every training image in each
    flip state of ``flips``.

    The images come from the stage's own input pipeline, with the stage ``model``'s
    preprocessing (as training sees them); ``by_record`` (``cache.mode=force``): without its
    colour steps, keyed by record and flip (:func:`~orchestrator.engine.cache_keys.record_keys`). Rows are written to disk as
    they are computed (a partial directory, renamed when complete). After the first batch the
    whole size is estimated from it and the number of training records;
    :class:`~orchestrator.engine.cache_store.TooLarge` when it fits neither budget, and
    :class:`~orchestrator.engine.cache_store.Refused` (``by_record``) when records cannot be
    told apart by their ``source_id``. Nothing is left behind either way.
    """
    started, cpu = time.time(), time.process_time()
    if cache_store.load(directory) is not None:
        return _opened(directory, budget, True, started, cpu)

    frozen_part = outputs()

    @tf.function(reduce_retracing=True)
    def compute(features, labels, flip):
        tf.keras.backend.set_learning_phase(True)  # as the training step (frozen BatchNorm is pinned)
        images = features[fields.InputDataFields.image]
        hashes = features[cache_keys.HASH]
        keys = (
            cache_keys.record_keys(hashes, tf.fill(tf.shape(hashes), flip))
            if by_record
            else cache_keys.image_keys(images)
        )
        out = frozen_part(images, features[fields.InputDataFields.true_image_shape])
        if any(name.startswith(f"{FEATURES}/") for name in out):  # the image is not needed: keep its inputs
            out |= cache_input.stock_inputs(features, labels)
        return keys, out

    reader = configs["train_input_config"]
    capacity = (cache_keys.distinct_source_ids(reader) if by_record else _records(reader)) * len(flips)
    writer = None
    try:
        for flip in flips:
            data = builder.train_dataset(_build_pass(configs, flip, by_record), model, repeat=False)
            name = f"{stage} cache ({'flipped' if flip else 'unflipped'})"
            for features, labels in tqdm(data, desc=name, unit="batch"):
                batch_keys, out = compute(features, labels, tf.constant(flip))
                batch_keys, out = batch_keys.numpy(), {k: v.numpy() for k, v in out.items()}
                if writer is None:
                    writer = cache_store.Writer(directory, capacity, budget.float16)
                    # Before anything is written: TooLarge, or whether it will fit on the disk.
                    budget.place(_estimate(writer, batch_keys, out, capacity), cache_store.free_mb(directory))
                writer.append(batch_keys, out)
        image = data.element_spec[0][fields.InputDataFields.image]
        meta = {"stage": stage, "flips": len(flips), "by_record": by_record}
        writer.commit(meta | {"image": {"shape": image.shape[1:].as_list(), "dtype": image.dtype.name}})
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    return _opened(directory, budget, False, started, cpu)


def build_val_proposals(
    stage: str, proposer: Callable[[], object], model, configs: dict, directory: Path
) -> FrozenCache:
    """A proposer stage's val proposals in ``directory``: reused when complete, else built by
    ``proposer()`` (called only then: it may build the network) over every val image, as the
    stage's evaluation preprocesses it (``model``'s preprocessing; no augmentation), keeping
    :data:`~orchestrator.odapi.proposals.EVAL_PROPOSALS` an image as evaluation does.

    Held in memory (300 boxes an image: kilobytes), so the stage may remove its directory and
    still evaluate its final checkpoint.
    """
    started, cpu = time.time(), time.process_time()
    reused = cache_store.load(directory) is not None
    if not reused:
        _write_val_proposals(stage, proposer(), model, configs, directory)
    keys, arrays, meta = cache_store.load(directory)
    arrays = {name: np.array(a) for name, a in arrays.items()}
    elapsed, cpu_seconds = time.time() - started, time.process_time() - cpu
    return FrozenCache(
        np.array(keys), arrays, meta["flips"], "memory", directory, reused, elapsed, cpu_seconds
    )


def _write_val_proposals(stage: str, proposer, model, configs: dict, directory: Path) -> None:
    @tf.function(reduce_retracing=True)
    def compute(images, true_shapes):
        tf.keras.backend.set_learning_phase(False)  # as evaluation (frozen BatchNorm is pinned anyway)
        with proposals.as_inference(proposer), proposals.keeping(proposer, proposals.EVAL_PROPOSALS):
            return cache_keys.image_keys(images), producer_outputs(proposer, (PROPOSALS,))(
                images, true_shapes
            )

    writer = cache_store.Writer(directory, _records(configs["eval_input_configs"][0]), float16=False)
    try:
        for features, _ in tqdm(
            builder.eval_dataset(configs, model), desc=f"{stage} val proposals", unit="img"
        ):
            keys, out = compute(
                features[fields.InputDataFields.image], features[fields.InputDataFields.true_image_shape]
            )
            writer.append(keys.numpy(), {k: v.numpy() for k, v in out.items()})
        writer.commit({"stage": stage, "flips": 1, "by_record": False, "split": "val"})
    except BaseException:
        writer.discard()
        raise


def _opened(
    directory: Path, budget: cache_store.Budget, reused: bool, started: float, cpu: float
) -> FrozenCache:
    """The complete cache in ``directory``, placed by its size (as stored, the build's estimate)."""
    keys, arrays, meta = cache_store.load(directory)
    size = keys.nbytes + sum(a.nbytes for a in arrays.values())
    place = budget.place(size, free_disk_mb=float("inf"))  # already on disk
    elapsed, cpu_seconds = time.time() - started, time.process_time() - cpu
    return FrozenCache(
        keys, arrays, meta["flips"], place, directory, reused, elapsed, cpu_seconds, meta.get("image")
    )


def _estimate(writer: cache_store.Writer, keys: np.ndarray, outputs: dict, rows: int) -> float:
    """Bytes of ``rows`` entries as stored, from one batch (exact: every entry has its shapes)."""
    per_entry = keys[0].nbytes + sum(
        v[0].size * writer.stored_dtype(name, v).itemsize for name, v in outputs.items()
    )
    return per_entry * rows


def _records(reader) -> int:
    """How many records the input reader reads (a pass over the files, no decoding)."""
    return int(
        tf.data.TFRecordDataset(cache_keys.record_files(reader)).reduce(np.int64(0), lambda n, _: n + 1)
    )


def _build_pass(configs: dict, flip: bool, by_record: bool = False) -> dict:
    """The stage's configs for one build pass: one unshuffled epoch, the flip forced on or off
    (``by_record``: the colour steps of ``cache.mode=force`` left out too)."""
    out = without_steps(configs, (PHOTOMETRIC if by_record else frozenset()) | (set() if flip else {FLIP}))
    reader = copy.deepcopy(configs["train_input_config"])
    if (step := flip_step(out["train_config"])) is not None:  # one at most (stages.cache)
        step.probability = 1.0  # off is no step: the OD API reads a probability of 0 as unset
    reader.shuffle = False
    reader.num_epochs = 1
    reader.sample_1_of_n_examples = 0  # every record: training's sample is drawn after a shuffle
    reader.drop_remainder = False  # every image, the last batch smaller
    out["train_input_config"] = reader
    return out


def log_summary(stage: str, cache: FrozenCache) -> None:
    shapes = ", ".join(f"{name} {list(a.shape[1:])} {a.dtype}" for name, a in cache.outputs.items())
    if cache.replaces_images:
        shapes += "; with each image's stock inputs: training reads these rows, not the images"
    how = "reused" if cache.reused else "built"
    log.info(
        "%s: cached %d entries (%d flip state%s; %s) = %.1f MiB, read from %s; %s in %.1f s (CPU %.1f s): %s",
        stage,
        len(cache.keys),
        cache.flips,
        "s" if cache.flips > 1 else "",
        shapes,
        cache.nbytes / 2**20,
        cache.place,
        how,
        cache.build_seconds,
        cache.build_cpu_seconds,
        cache.directory,
    )
