"""The tiny extractor is a real FasterRCNNMetaArch that learns."""

from __future__ import annotations

import pytest
import tensorflow as tf

from orchestrator.engine.step import make_train_step
from orchestrator.odapi import builder, faster_rcnn_meta_arch, proposals
from orchestrator.odapi.tiny_extractor import TinyKerasFeatureExtractor
from tests.helpers import built_model, tiny_pipeline

pytestmark = pytest.mark.slow  # builds the tiny model and trains it


def test_tiny_builds_through_model_builder_and_loss_falls_on_a_fixed_batch(tmp_path):
    _, path = tiny_pipeline(tmp_path)
    configs, model, batch = built_model(path)
    assert isinstance(model, faster_rcnn_meta_arch.FasterRCNNMetaArch)
    assert isinstance(model._feature_extractor, TinyKerasFeatureExtractor)
    step = tf.Variable(0, dtype=tf.int64)
    optimizer, _ = builder.build_optimizer(configs, step)
    train = tf.function(make_train_step(model, optimizer, proposals.own_predict(model), False, 10.0))
    losses = [float(train(*batch)["Loss/total_loss"]) for _ in range(30)]
    assert all(tf.math.is_finite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3, losses
