"""Frozen parts computed once: the build pass and the in-graph lookup.

The build pass runs the stage's own input pipeline unshuffled for one epoch, once per flip
state training can draw (no flip, then the flip forced on), at the stage's batch size, through
the frozen part (:func:`producer_outputs`): stage 2's frozen proposer, or the stage's own
model, whose frozen shared convs (and, in stage 4, frozen RPN) do not change while it trains.
Each entry is keyed by a 64-bit fingerprint of the preprocessed image's bytes
(:func:`image_keys`): training computes the same key on each image of its batch and gathers
that entry, so no example needs an id and a flipped image finds its own entry.
:mod:`stages.cache` allows caching only where training can produce no other image; should one
reach the lookup anyway, an assertion stops the step (a bug: its traceback is kept).

Why this is exact, and what it saves: "Caching frozen parts" in ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.odapi import builder, fields, proposals
from stages.cache import FEATURES, FLIP, PROPOSALS

log = logging.getLogger(__name__)
_BUCKETS = 2**63 - 1
Outputs = Callable[[tf.Tensor, tf.Tensor], dict]  # (images, true shapes) -> named tensors [batch, ...]


def image_keys(images: tf.Tensor) -> tf.Tensor:
    """int64 [batch]: a fingerprint of each image's bytes (equal images, equal keys)."""
    return tf.map_fn(
        lambda image: tf.strings.to_hash_bucket_fast(tf.io.serialize_tensor(image), _BUCKETS),
        images,
        fn_output_signature=tf.int64,
    )


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
    """Named arrays per distinct preprocessed image (first axis: entry), in memory."""

    keys: np.ndarray  # int64 [n]
    arrays: dict[str, np.ndarray]
    flips: int
    build_seconds: float
    build_cpu_seconds: float

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + sum(a.nbytes for a in self.arrays.values())

    def summary(self) -> dict:
        return {
            "parts": sorted({name.split("/")[0] for name in self.arrays}),
            "place": "memory",
            "entries": len(self.keys),
            "flips": self.flips,
            "shapes": {name: list(a.shape[1:]) for name, a in self.arrays.items()},
            "bytes": self.nbytes,
            "build_seconds": round(self.build_seconds, 2),
            "build_cpu_seconds": round(self.build_cpu_seconds, 2),
        }


class CacheLookup:
    """``lookup(images) -> {name: tensor [batch, ...]}`` for a batch, inside the training step."""

    def __init__(self, cache: FrozenCache) -> None:
        with tf.init_scope():
            rows = tf.range(len(cache.keys), dtype=tf.int64)
            initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(cache.keys), rows)
            self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)
            self.arrays = {name: tf.constant(a) for name, a in cache.arrays.items()}

    def __call__(self, images: tf.Tensor) -> dict:
        rows = self.table.lookup(image_keys(images))
        found = tf.debugging.assert_non_negative(
            rows,
            message="an image of this batch is not in the stage's cache (is the augmentation deterministic?)",
        )
        with tf.control_dependencies([found]):
            rows = tf.identity(rows)
        return {name: tf.gather(a, rows) for name, a in self.arrays.items()}


class TooLarge(Exception):
    """The cache would exceed its memory budget: the stage computes those parts every step."""


def build_cache(
    stage: str, model, outputs: Outputs, configs: dict, flips: tuple[bool, ...], memory_mb: int
) -> FrozenCache:
    """Run ``outputs`` over every training image in each flip state of ``flips``.

    The images come from the stage's own input pipeline, with the stage ``model``'s
    preprocessing (as training sees them). Raises :class:`TooLarge` after the first batch when
    the whole cache would not fit in ``memory_mb`` (estimated from that batch and the number
    of training records).
    """
    started, cpu = time.time(), time.process_time()

    @tf.function(reduce_retracing=True)
    def compute(images, true_shapes):
        tf.keras.backend.set_learning_phase(True)  # as the training step (frozen BatchNorm is pinned)
        return image_keys(images), outputs(images, true_shapes)

    keys, arrays = [], {}
    limit = memory_mb * 2**20
    records = _records(configs["train_input_config"]) * len(flips)
    for flip in flips:
        data = builder.train_dataset(_build_pass(configs, flip), model, repeat=False)
        name = f"{stage} cache ({'flipped' if flip else 'unflipped'})"
        for features, _ in tqdm(data, desc=name, unit="batch"):
            batch_keys, out = compute(
                features[fields.InputDataFields.image], features[fields.InputDataFields.true_image_shape]
            )
            keys.append(batch_keys.numpy())
            for k, v in out.items():
                arrays.setdefault(k, []).append(v.numpy())
            if len(keys) == 1 and (estimate := _estimate(keys, arrays, records)) > limit:
                raise TooLarge(f"{estimate / 2**20:.0f} MiB > cache.memory_mb={memory_mb}")
    all_keys = np.concatenate(keys)
    _, first = np.unique(all_keys, return_index=True)  # an image seen twice keeps one entry
    first.sort()
    return FrozenCache(
        keys=all_keys[first],
        arrays={k: np.concatenate(v)[first] for k, v in arrays.items()},
        flips=len(flips),
        build_seconds=time.time() - started,
        build_cpu_seconds=time.process_time() - cpu,
    )


def _estimate(keys: list, arrays: dict, records: int) -> float:
    per_entry = (keys[0].nbytes + sum(v[0].nbytes for v in arrays.values())) / len(keys[0])
    return per_entry * records


def _records(reader) -> int:
    """How many training records the input reader reads (a pass over the files, no decoding)."""
    files = [f for pattern in reader.tf_record_input_reader.input_path for f in tf.io.gfile.glob(pattern)]
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def _build_pass(configs: dict, flip: bool) -> dict:
    """The stage's configs for one build pass: one unshuffled epoch, the flip forced on or off."""
    out = dict(configs)
    train, reader = copy.deepcopy(configs["train_config"]), copy.deepcopy(configs["train_input_config"])
    steps = list(train.data_augmentation_options)
    del train.data_augmentation_options[:]
    for step in steps:  # unflipped: no flip step (the OD API reads a probability of 0 as unset)
        if step.WhichOneof("preprocessing_step") == FLIP:
            if not flip:
                continue
            step.random_horizontal_flip.probability = 1.0
        train.data_augmentation_options.add().CopyFrom(step)
    reader.shuffle = False
    reader.num_epochs = 1
    reader.sample_1_of_n_examples = 0  # every record: training's sample is drawn after a shuffle
    reader.drop_remainder = False  # every image, the last batch smaller
    out["train_config"], out["train_input_config"] = train, reader
    return out


def log_summary(stage: str, cache: FrozenCache) -> None:
    shapes = ", ".join(f"{name} {list(a.shape[1:])}" for name, a in cache.arrays.items())
    log.info(
        "%s: cached %d entries (%d flip state%s; %s) = %.1f MiB in memory; built in %.1f s (CPU %.1f s)",
        stage,
        len(cache.keys),
        cache.flips,
        "s" if cache.flips > 1 else "",
        shapes,
        cache.nbytes / 2**20,
        cache.build_seconds,
        cache.build_cpu_seconds,
    )
