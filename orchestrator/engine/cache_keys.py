"""How a training image finds its cache entry: by its content, or by its record and flip.

Exact caching (``cache.mode=auto``) keys each entry by a 64-bit fingerprint of the
preprocessed image's bytes (:func:`image_keys`): the build pass and the compiled training step
compute it alike, so no example needs an id and a flipped image finds its own entry.

``cache.mode=force`` under random colour augmentation cannot: the training image's colours
differ from the cached one's. Its entries are keyed by the stock input's hash of the record's
``source_id`` and the flip (:func:`record_keys`), and the flip moves out of the OD API
pipeline into a map after the colour steps (:func:`training_input`), which knows what it drew.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import tensorflow as tf

from orchestrator.engine import cache_store
from orchestrator.odapi import fields, inputs
from stages.cache import FLIP, flip_step

_BUCKETS = 2**63 - 1


def image_keys(images: tf.Tensor) -> tf.Tensor:
    """int64 [batch]: a fingerprint of each image's bytes (equal images, equal keys)."""
    return tf.map_fn(
        lambda image: tf.strings.to_hash_bucket_fast(tf.io.serialize_tensor(image), _BUCKETS),
        images,
        fn_output_signature=tf.int64,
    )


HASH = inputs.HASH_KEY  # the stock training input's int32 hash of each record's source_id ...
SOURCE_ID_BUCKETS = inputs.HASH_BINS  # ... into this many buckets
CACHE_KEY = "frcnn_alt/cache_key"  # cache.mode=force: the record-and-flip key the step looks up


def record_keys(hashes: tf.Tensor, flipped) -> tf.Tensor:
    """int64 [batch]: one key per (record, flip state), for entries keyed by record (force)."""
    return tf.cast(hashes, tf.int64) * 2 + tf.cast(flipped, tf.int64)


def training_input(decision, configs: dict) -> tuple[dict, Callable | None]:
    """(configs for the training input, a map over its batches) under ``decision``.

    An exact cache needs neither. ``cache.mode=force`` under colour augmentation moves the
    horizontal flip out of the OD API pipeline, after the colour steps it commutes with, into
    a map that draws it per image (same probability), flips image and boxes, and records the
    key of the entry this image's frozen outputs were cached under: its record and flip.
    """
    if decision is None or not decision.on or not decision.approximate:
        return configs, None
    step = flip_step(configs["train_config"])
    probability = step.probability if step is not None else 0.0
    return without_steps(configs, {FLIP}), partial(_flip_and_key, probability=probability)


def _flip_and_key(features: dict, labels: dict, probability: float) -> tuple[dict, dict]:
    images = features[fields.InputDataFields.image]
    flipped = tf.random.uniform([tf.shape(images)[0]]) < probability
    boxes = labels[fields.InputDataFields.groundtruth_boxes]  # normalised [ymin, xmin, ymax, xmax]
    mirrored = tf.stack([boxes[..., 0], 1 - boxes[..., 3], boxes[..., 2], 1 - boxes[..., 1]], axis=-1)
    features = {
        **features,
        fields.InputDataFields.image: tf.where(flipped[:, None, None, None], tf.reverse(images, [2]), images),
        CACHE_KEY: record_keys(features[HASH], flipped),
    }
    labels = {
        **labels,
        fields.InputDataFields.groundtruth_boxes: tf.where(flipped[:, None, None], mirrored, boxes),
    }
    return features, labels


def without_steps(configs: dict, names) -> dict:
    """``configs`` with a copy of ``train_config`` whose augmentation leaves out ``names``."""
    train = copy.deepcopy(configs["train_config"])
    steps = list(train.data_augmentation_options)
    del train.data_augmentation_options[:]
    for step in steps:
        if step.WhichOneof("preprocessing_step") not in names:
            train.data_augmentation_options.add().CopyFrom(step)
    return {**configs, "train_config": train}


def distinct_source_ids(reader) -> int:
    """The number of training records, each with a ``source_id`` of its own, as ``cache.mode=force``
    needs (it finds an entry by the OD API's 31-bit hash of it); else :class:`Refused` saying
    which records share one (or have none: the OD API gives those a new random id each read)."""
    ids = [
        tf.train.Example.FromString(record.numpy()).features.feature["image/source_id"].bytes_list.value
        for record in tf.data.TFRecordDataset(record_files(reader))
    ]
    ids = [value[0] if value else b"" for value in ids]
    missing = sum(not i for i in ids)
    if missing:
        raise cache_store.Refused(
            f"{missing} of {len(ids)} training records have no image/source_id, and cache.mode=force "
            "finds an entry by it: give every record its own"
        )
    hashes = tf.strings.to_hash_bucket_fast(tf.constant(ids), SOURCE_ID_BUCKETS).numpy()
    seen: dict[int, bytes] = {}
    for source_id, bucket in zip(ids, hashes.tolist(), strict=True):
        if bucket in seen:
            other = seen[bucket]
            same = (
                "share the source_id" if other == source_id else "have source_ids with the same 31-bit hash"
            )
            raise cache_store.Refused(
                f"training records {other!r} and {source_id!r} {same}, and cache.mode=force tells records "
                "apart by the OD API's hash of it: give every record its own"
            )
        seen[bucket] = source_id
    return len(ids)


def record_files(reader) -> list[str]:
    return [f for pattern in reader.tf_record_input_reader.input_path for f in tf.io.gfile.glob(pattern)]
