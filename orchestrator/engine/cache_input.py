"""A cached stage's training input: its cache's rows, not its images.

Where a stage's cache holds the frozen shared features (stages 3 and 4), its step has no use
for an image's pixels: the cached features stand in for the shared convs, and everything after
them reads the image's shape alone. Decoding, resizing and fingerprinting every image each
step would be the largest cost left in such a step on a small model. So the build pass keeps,
beside each row's frozen outputs, what the stock input pipeline gave with that image (its
labels and its other features, :func:`stock_inputs`), and training draws rows as the stock
pipeline draws images (:func:`row_batches`): every record once an epoch, in a fresh order,
flipped with the configured probability, the last incomplete batch dropped. Each batch carries
its rows' cached outputs under :data:`CACHED`; they are read in the input pipeline's threads
and prefetched, so the step waits neither for a disk read nor for a fingerprint.

The image in such a batch is zeros of the stock image's shape and dtype: the OD API takes the
batch and image size from it. That the step computes the same losses and gradients on these
batches as on the stock ones is tested (``tests/engine/test_cache.py``).

Stage 2 caches proposals alone: its detector trains its shared convs on the image, so it keeps
the stock pipeline and finds its rows by image fingerprint (:class:`~orchestrator.engine.cache.CacheLookup`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from orchestrator.odapi import fields
from stages.cache import flip_step

if TYPE_CHECKING:
    from orchestrator.engine.cache import FrozenCache

INPUT = "input/"  # cache entries holding the stock pipeline's features and labels:
FEATURES_IN, LABELS_IN = f"{INPUT}features/", f"{INPUT}labels/"  # "input/features/<field>", ...
CACHED = "frcnn_alt/cached/"  # a batch's cached outputs, by name, among its features


def stock_inputs(features: dict, labels: dict) -> dict:
    """What the stock pipeline gave with a batch of images, but the images: named cache entries."""
    kept = {FEATURES_IN + k: v for k, v in features.items() if k != fields.InputDataFields.image}
    return kept | {LABELS_IN + k: v for k, v in labels.items()}


def cached_entries(features: dict) -> dict:
    """The cached outputs a batch of :func:`rows_dataset` carries (empty for a stock batch)."""
    return {k[len(CACHED) :]: v for k, v in features.items() if k.startswith(CACHED)}


def rows_dataset(cache: FrozenCache, configs: dict, input_context=None) -> tf.data.Dataset:
    """Batches of ``(features, labels)`` read from ``cache``'s rows as :func:`row_batches` draws them."""
    return (
        row_batches(cache, configs, input_context)
        .map(reader(cache), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def row_batches(cache: FrozenCache, configs: dict, input_context=None) -> tf.data.Dataset:
    """Batches of row numbers, drawn from ``cache`` as the stock input draws images.

    Rows are stored one flip state after the other, each state's rows in the build pass's
    (unshuffled, deterministic) record order, so row ``r + records`` is row ``r`` flipped.
    ``input_context``: one replica's share, as the stock input takes it.
    """
    reader, train = configs["train_input_config"], configs["train_config"]
    batch = train.batch_size
    records = len(cache.keys) // cache.flips
    indices = tf.data.Dataset.range(records)
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(batch)
        indices = indices.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if reader.sample_1_of_n_examples > 1:
        indices = indices.shard(reader.sample_1_of_n_examples, 0)
    if reader.shuffle:
        indices = indices.shuffle(records, reshuffle_each_iteration=True)
    indices = indices.repeat()
    if cache.flips == 2:
        probability = flip_step(train).probability
        indices = indices.map(lambda r: r + records * tf.cast(tf.random.uniform([]) < probability, tf.int64))
    return indices.batch(batch, drop_remainder=True)


def reader(cache: FrozenCache):
    """``rows -> (features, labels)``: the entries of ``rows``, read from memory or disk."""
    names = sorted(cache.arrays)
    # In memory: a copy (the stored arrays are memory-mapped); on disk: read per batch.
    arrays = [np.array(cache.arrays[n]) if cache.place == "memory" else cache.arrays[n] for n in names]
    dtypes = [tf.as_dtype(a.dtype) for a in arrays]
    image = tf.TensorShape(cache.image["shape"]), tf.as_dtype(cache.image["dtype"])

    def gather(rows: np.ndarray) -> list[np.ndarray]:
        return [np.ascontiguousarray(a[rows]) for a in arrays]

    def read(rows):
        values = tf.numpy_function(gather, [rows], dtypes, stateful=False)
        features, labels = {}, {}
        for name, array, value in zip(names, arrays, values, strict=True):
            value.set_shape(rows.shape.concatenate(array.shape[1:]))
            if name.startswith(FEATURES_IN):
                features[name[len(FEATURES_IN) :]] = value
            elif name.startswith(LABELS_IN):
                labels[name[len(LABELS_IN) :]] = value
            else:  # float16 entries widened back to float32 for the stock heads
                features[CACHED + name] = tf.cast(value, tf.float32) if value.dtype == tf.float16 else value
        features[fields.InputDataFields.image] = tf.zeros(rows.shape.concatenate(image[0]), image[1])
        return features, labels

    return read
