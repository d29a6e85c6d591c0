"""cache.mode=force's keys: the in-step flip mirrors as the OD API's own flip does; records told apart (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from object_detection.core import preprocessor

from orchestrator.engine.cache_keys import CACHE_KEY, HASH, _flip_and_key, distinct_source_ids
from orchestrator.engine.cache_store import Refused
from orchestrator.odapi import fields

IMAGE, BOXES = fields.InputDataFields.image, fields.InputDataFields.groundtruth_boxes


def _batch():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (2, 8, 12, 3)), tf.float32)
    corners = np.sort(rng.uniform(0, 1, (2, 3, 2, 2)), axis=2)  # [batch, box, (min, max), (y, x)]
    boxes = tf.constant(corners.reshape(2, 3, 4), tf.float32)  # [ymin, xmin, ymax, xmax]
    return {IMAGE: images, HASH: tf.constant([7, 11], tf.int32)}, {BOXES: boxes}


def test_a_sure_flip_mirrors_like_the_stock_flip_and_keys_the_flipped_entry():
    features, labels = _batch()
    flipped, mirrored = _flip_and_key(features, labels, probability=1.0)
    for i in range(2):
        want_image, want_boxes = preprocessor.random_horizontal_flip(
            features[IMAGE][i], labels[BOXES][i], probability=1.0
        )
        np.testing.assert_array_equal(flipped[IMAGE][i].numpy(), want_image.numpy())
        np.testing.assert_allclose(mirrored[BOXES][i].numpy(), want_boxes.numpy(), atol=1e-6)
    assert flipped[CACHE_KEY].numpy().tolist() == [15, 23]


def test_no_flip_leaves_the_batch_and_keys_the_unflipped_entry():
    features, labels = _batch()
    same, unchanged = _flip_and_key(features, labels, probability=0.0)
    np.testing.assert_array_equal(same[IMAGE].numpy(), features[IMAGE].numpy())
    np.testing.assert_array_equal(unchanged[BOXES].numpy(), labels[BOXES].numpy())
    assert same[CACHE_KEY].numpy().tolist() == [14, 22]


def _reader(tmp_path, source_ids: list[bytes]):
    from object_detection.protos import input_reader_pb2

    path = tmp_path / "train.record"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for source_id in source_ids:
            feature = {"image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_id]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    reader = input_reader_pb2.InputReader()
    reader.tf_record_input_reader.input_path.append(str(path))
    return reader


def test_records_with_their_own_source_ids_are_counted(tmp_path):
    assert distinct_source_ids(_reader(tmp_path, [b"a.jpg", b"b.jpg", b"c.jpg"])) == 3


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([b"a.jpg", b"b.jpg", b"a.jpg"], "records b'a.jpg' and b'a.jpg' share the source_id"),
        ([b"a.jpg", b"", b""], "2 of 3 training records have no image/source_id"),
    ],
)
def test_records_force_cannot_tell_apart_are_refused_naming_them(tmp_path, ids, message):
    with pytest.raises(Refused, match=message):
        distinct_source_ids(_reader(tmp_path, ids))
