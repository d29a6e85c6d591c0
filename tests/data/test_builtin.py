"""What both built-in datasets promise: seeded, cached, readable by the OD API's own decoder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.data import glyphs, shapes
from orchestrator.odapi import fields, tf_example_decoder

DATASETS = {
    "shapes": (shapes.ShapesParams, shapes.ensure_shapes, shapes.render_image, "triangle"),
    "glyphs": (glyphs.GlyphParams, glyphs.ensure_glyphs, glyphs.render_image, "nine"),
}


@pytest.mark.parametrize("kind", DATASETS)
def test_generator_is_deterministic_per_seed(kind):
    params, _, render, _ = DATASETS[kind]
    a = render(np.random.default_rng(3), params())
    b = render(np.random.default_rng(3), params())
    c = render(np.random.default_rng(4), params())
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kind", DATASETS)
def test_records_decode_with_od_api_decoder_and_cache_is_reused(kind, tmp_path):
    params, ensure, render, last_class = DATASETS[kind]
    p = params(num_train=4, num_val=2, seed=7)
    files = ensure(p, tmp_path)
    decoder = tf_example_decoder.TfExampleDecoder()
    rng = np.random.default_rng(7)
    for serialized in tf.data.TFRecordDataset(files.train):
        decoded = decoder.decode(serialized)
        image, boxes = render(rng, p)
        assert np.array_equal(decoded[fields.InputDataFields.image].numpy(), image)
        got = decoded[fields.InputDataFields.groundtruth_boxes].numpy()
        np.testing.assert_allclose(got, [[b.ymin, b.xmin, b.ymax, b.xmax] for b in boxes], atol=1e-6)
        assert list(decoded[fields.InputDataFields.groundtruth_classes].numpy()) == [
            b.class_id for b in boxes
        ]
    assert sum(1 for _ in tf.data.TFRecordDataset(files.val)) == 2
    assert f"name: '{last_class}'" in open(files.label_map).read()
    record = tmp_path / f"{kind}-{files.fingerprint}" / "train.record"
    mtime = record.stat().st_mtime_ns
    assert ensure(p, tmp_path) == files and record.stat().st_mtime_ns == mtime
    assert ensure(params(num_train=4, num_val=2, seed=8), tmp_path).fingerprint != files.fingerprint
