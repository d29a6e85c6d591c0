"""Built-in data: seeded, cached, and readable by the OD API's own decoder."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from orchestrator.data.shapes import CLASS_NAMES, ShapesParams, ensure_shapes, render_image
from orchestrator.odapi import fields, tf_example_decoder


def test_generator_is_deterministic_per_seed():
    p = ShapesParams()
    a = render_image(np.random.default_rng(3), p)
    b = render_image(np.random.default_rng(3), p)
    c = render_image(np.random.default_rng(4), p)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_images_have_one_to_four_objects_of_every_class():
    p = ShapesParams()
    rng = np.random.default_rng(0)
    counts, classes = [], set()
    for _ in range(60):
        image, boxes = render_image(rng, p)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        counts.append(len(boxes))
        classes |= {b.class_id for b in boxes}
        for b in boxes:
            side = (b.xmax - b.xmin) * 128
            assert 20 <= side <= 40 and 0 <= b.ymin < b.ymax <= 1 and 0 <= b.xmin < b.xmax <= 1
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    assert classes == {1, 2, 3}


def test_records_decode_with_od_api_decoder_and_cache_is_reused(tmp_path):
    p = ShapesParams(num_train=5, num_val=2, seed=7)
    files = ensure_shapes(p, tmp_path)
    decoder = tf_example_decoder.TfExampleDecoder()
    rng = np.random.default_rng(7)
    for serialized in tf.data.TFRecordDataset(files.train):
        decoded = decoder.decode(serialized)
        image, boxes = render_image(rng, p)
        assert np.array_equal(decoded[fields.InputDataFields.image].numpy(), image)
        got = decoded[fields.InputDataFields.groundtruth_boxes].numpy()
        want = np.array([[b.ymin, b.xmin, b.ymax, b.xmax] for b in boxes])
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert list(decoded[fields.InputDataFields.groundtruth_classes].numpy()) == [
            b.class_id for b in boxes
        ]
    assert sum(1 for _ in tf.data.TFRecordDataset(files.val)) == 2
    assert "name: 'triangle'" in open(files.label_map).read() and files.num_classes == len(CLASS_NAMES)
    mtime = (tmp_path / f"shapes-{files.fingerprint}" / "train.record").stat().st_mtime_ns
    again = ensure_shapes(p, tmp_path)
    assert again == files
    assert (tmp_path / f"shapes-{files.fingerprint}" / "train.record").stat().st_mtime_ns == mtime
    assert (
        ensure_shapes(ShapesParams(num_train=5, num_val=2, seed=8), tmp_path).fingerprint != files.fingerprint
    )
