"""A cached stage's input: rows drawn as the stock input draws images, read with their inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from object_detection.protos import input_reader_pb2, train_pb2

from orchestrator.engine import cache_input, cache_store
from orchestrator.engine.cache import FrozenCache
from orchestrator.odapi import fields

RECORDS, BATCH, IMAGE = 40, 4, {"shape": [8, 8, 3], "dtype": "float32"}


def _configs(
    train: str = "data_augmentation_options { random_horizontal_flip {} }", reader: str = ""
) -> dict:
    return {
        "train_config": text_format.Parse(f"batch_size: {BATCH} {train}", train_pb2.TrainConfig()),
        "train_input_config": text_format.Parse(reader, input_reader_pb2.InputReader()),
    }


def _cache(tmp_path: Path, flips: int = 2, place: str = "memory", float16: bool = False) -> FrozenCache:
    """A cache as the build pass lays it out: each row's values say which row they are."""
    rows = RECORDS * flips
    writer = cache_store.Writer(tmp_path / "cache", rows, float16)
    index = np.arange(rows)
    writer.append(
        index * 10,
        {
            "features/0": np.broadcast_to(index[:, None, None, None], (rows, 2, 2, 1)).astype(np.float32),
            "input/labels/groundtruth_boxes": np.broadcast_to(index[:, None, None], (rows, 3, 4)).astype(
                np.float32
            ),
            "input/features/true_image_shape": np.broadcast_to(index[:, None], (rows, 3)).astype(np.int32),
        },
    )
    keys, arrays, meta = cache_store.load(writer.commit({"flips": flips}))
    return FrozenCache(keys, arrays, flips, place, tmp_path / "cache", False, 0.0, 0.0, IMAGE)


def _drawn(cache: FrozenCache, configs: dict, batches: int, input_context=None) -> np.ndarray:
    data = cache_input.row_batches(cache, configs, input_context)
    return np.stack([b.numpy() for b in data.take(batches)])


def test_each_epoch_draws_every_record_once_each_flipped_with_the_flips_probability(tmp_path):
    cache = _cache(tmp_path)
    drawn = _drawn(cache, _configs(), 2 * RECORDS // BATCH).reshape(2, RECORDS)  # two epochs
    for epoch in drawn:
        assert sorted(epoch % RECORDS) == list(range(RECORDS))
    assert not np.array_equal(drawn[0] % RECORDS, drawn[1] % RECORDS)  # a fresh order each epoch
    flipped = (drawn >= RECORDS).mean()
    assert 0.25 < flipped < 0.75  # the stock default probability, 0.5 (80 draws)
    always = _drawn(
        cache, _configs("data_augmentation_options { random_horizontal_flip { probability: 1.0 } }"), 5
    )
    assert (always >= RECORDS).all()


def test_without_a_flip_or_a_shuffle_rows_come_in_order(tmp_path):
    drawn = _drawn(
        _cache(tmp_path, flips=1), _configs(train="", reader="shuffle: false"), RECORDS // BATCH + 1
    )
    assert drawn.ravel().tolist() == [*range(RECORDS), *range(BATCH)]


def test_replicas_draw_their_own_share_of_the_records_at_their_share_of_the_batch(tmp_path):
    cache = _cache(tmp_path)
    shares = [
        _drawn(cache, _configs(), RECORDS // BATCH, tf.distribute.InputContext(2, i, 2)) for i in range(2)
    ]
    assert all(share.shape == (RECORDS // BATCH, BATCH // 2) for share in shares)
    firsts = [set((share % RECORDS).ravel()) for share in shares]  # one epoch each
    assert len(firsts[0]) == len(firsts[1]) == RECORDS // 2 and not firsts[0] & firsts[1]


@pytest.mark.parametrize(("place", "float16"), [("memory", False), ("disk", False), ("memory", True)])
def test_a_batch_carries_its_rows_outputs_and_stock_inputs_and_a_blank_image(tmp_path, place, float16):
    cache = _cache(tmp_path, place=place, float16=float16)
    rows = tf.constant([3, 41, 7, 79], tf.int64)
    features, labels = tf.function(cache_input.reader(cache))(rows)
    want = rows.numpy()
    cached = cache_input.cached_entries(features)
    assert list(cached) == ["features/0"] and cached["features/0"].dtype == tf.float32  # float16 widened
    np.testing.assert_array_equal(cached["features/0"].numpy()[:, 0, 0, 0], want)
    np.testing.assert_array_equal(labels["groundtruth_boxes"].numpy()[:, 0, 0], want)
    np.testing.assert_array_equal(features["true_image_shape"].numpy()[:, 0], want)
    image = features[fields.InputDataFields.image]
    assert image.shape == (4, 8, 8, 3) and not image.numpy().any()


def test_the_dataset_reads_what_it_draws(tmp_path):
    cache = _cache(tmp_path)
    features, labels = next(iter(cache_input.rows_dataset(cache, _configs())))
    got = cache_input.cached_entries(features)["features/0"].numpy()[:, 0, 0, 0]
    np.testing.assert_array_equal(got, labels["groundtruth_boxes"].numpy()[:, 0, 0])
    assert len(set(got % RECORDS)) == BATCH
