"""Stage 2's frozen proposals computed once: the build pass and the in-graph lookup.

The build pass runs the stage's own input pipeline unshuffled for one epoch, once per flip
state training can draw (the flip's probability forced to 0, then to 1), through the frozen
proposer at the stage's batch size, and keeps the proposer's NMS output for every image
(:func:`orchestrator.odapi.proposals.proposer_nms`). Each entry is keyed by a 64-bit
fingerprint of the preprocessed image's bytes (:func:`image_keys`): training computes the
same key on each image of its batch and gathers that entry, so no example needs an id and a
flipped image finds its own entry. :mod:`stages.cache` allows caching only where training can
produce no other image; should one reach the lookup anyway, an assertion stops the step
(a bug: its traceback is kept).

Why this is exact, and what it saves: "Caching frozen parts" in ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.odapi import builder, fields, proposals
from stages.cache import FLIP

log = logging.getLogger(__name__)
_BUCKETS = 2**63 - 1


def image_keys(images: tf.Tensor) -> tf.Tensor:
    """int64 [batch]: a fingerprint of each image's bytes (equal images, equal keys)."""
    return tf.map_fn(
        lambda image: tf.strings.to_hash_bucket_fast(tf.io.serialize_tensor(image), _BUCKETS),
        images,
        fn_output_signature=tf.int64,
    )


@dataclass
class ProposalCache:
    """The proposer's NMS output per distinct preprocessed image, in memory."""

    keys: np.ndarray  # int64 [n]
    boxes: np.ndarray  # float32 [n, k, 4], absolute coordinates of the resized image
    scores: np.ndarray  # float32 [n, k]
    num: np.ndarray  # int32 [n]
    flips: int
    build_seconds: float
    build_cpu_seconds: float

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.boxes, self.scores, self.num))

    def summary(self) -> dict:
        return {
            "part": "proposals",
            "place": "memory",
            "entries": len(self.keys),
            "flips": self.flips,
            "proposals_per_entry": int(self.boxes.shape[1]),
            "bytes": self.nbytes,
            "build_seconds": round(self.build_seconds, 2),
            "build_cpu_seconds": round(self.build_cpu_seconds, 2),
        }


class ProposalLookup:
    """``lookup(images) -> (boxes, scores, num)`` for a batch, inside the training step."""

    def __init__(self, cache: ProposalCache) -> None:
        with tf.init_scope():
            rows = tf.range(len(cache.keys), dtype=tf.int64)
            initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(cache.keys), rows)
            self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)
            self.boxes = tf.constant(cache.boxes)
            self.scores = tf.constant(cache.scores)
            self.num = tf.constant(cache.num)

    def __call__(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        rows = self.table.lookup(image_keys(images))
        found = tf.debugging.assert_non_negative(
            rows,
            message="an image of this batch is not in the proposal cache (is the augmentation deterministic?)",
        )
        with tf.control_dependencies([found]):
            rows = tf.identity(rows)
        return tf.gather(self.boxes, rows), tf.gather(self.scores, rows), tf.gather(self.num, rows)


def build_proposal_cache(stage: str, proposer, configs: dict, flips: tuple[bool, ...]) -> ProposalCache:
    """Run the frozen ``proposer`` over every training image in each flip state of ``flips``."""
    started, cpu = time.time(), time.process_time()

    @tf.function(reduce_retracing=True)
    def nms(images, true_shapes):
        tf.keras.backend.set_learning_phase(True)  # as the training step (frozen BatchNorm is pinned)
        return (image_keys(images), *proposals.proposer_nms(proposer, images, true_shapes))

    keys, boxes, scores, num = [], [], [], []
    for flip in flips:
        data = builder.train_dataset(_build_pass(configs, flip), proposer, repeat=False)
        for features, _ in tqdm(
            data, desc=f"{stage} proposals ({'flipped' if flip else 'unflipped'})", unit="batch"
        ):
            out = nms(
                features[fields.InputDataFields.image], features[fields.InputDataFields.true_image_shape]
            )
            for part, value in zip((keys, boxes, scores, num), out, strict=True):
                part.append(value.numpy())
    keys_all = np.concatenate(keys)
    _, first = np.unique(keys_all, return_index=True)  # an image seen twice keeps one entry
    first.sort()
    return ProposalCache(
        keys=keys_all[first],
        boxes=np.concatenate(boxes)[first].astype(np.float32),
        scores=np.concatenate(scores)[first].astype(np.float32),
        num=np.concatenate(num)[first].astype(np.int32),
        flips=len(flips),
        build_seconds=time.time() - started,
        build_cpu_seconds=time.process_time() - cpu,
    )


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
    reader.drop_remainder = False  # every image, the last batch smaller
    out["train_config"], out["train_input_config"] = train, reader
    return out


def log_summary(stage: str, cache: ProposalCache) -> None:
    log.info(
        "%s: cached %d proposal sets (%d flip state%s, %d boxes each) = %.1f MiB in memory; "
        "built in %.1f s (CPU %.1f s)",
        stage,
        len(cache.keys),
        cache.flips,
        "s" if cache.flips > 1 else "",
        cache.boxes.shape[1],
        cache.nbytes / 2**20,
        cache.build_seconds,
        cache.build_cpu_seconds,
    )
