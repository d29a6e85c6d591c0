"""The frozen proposer: its boxes are the ones the detector's second stage sees."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.engine.evaluate import box_iou
from orchestrator.odapi import builder, fields, proposals
from tests.helpers import tiny_pipeline

pytestmark = pytest.mark.slow


def _two_models(tmp_path, is_training: bool):
    _, path = tiny_pipeline(tmp_path)
    configs = builder.load_configs(path)
    tf.keras.utils.set_random_seed(1)
    detector = builder.build_model(configs, is_training=is_training)
    features, labels = next(iter(builder.train_dataset(configs, detector)))
    builder.ensure_built(detector, features, labels)
    tf.keras.utils.set_random_seed(2)
    proposer = builder.build_model(configs, is_training=is_training)
    builder.ensure_built(proposer, features, labels)
    return detector, proposer, features, labels


def test_detector_second_stage_gets_exactly_the_proposers_boxes(tmp_path):
    detector, proposer, features, labels = _two_models(tmp_path, is_training=False)
    images = features[fields.InputDataFields.image]
    shapes = features[fields.InputDataFields.true_image_shape]
    fed = proposals.frozen_proposer_predict(detector, proposer)(images, shapes)
    alone = proposer.predict(images, shapes)
    own = proposals.own_predict(detector)(images, shapes)
    np.testing.assert_array_equal(
        fed["proposal_boxes_normalized"].numpy(), alone["proposal_boxes_normalized"].numpy()
    )
    assert not np.allclose(fed["proposal_boxes_normalized"].numpy(), own["proposal_boxes_normalized"].numpy())
    assert fed["class_predictions_with_background"].shape == own["class_predictions_with_background"].shape


def test_training_minibatch_is_sampled_from_the_proposers_boxes(tmp_path):
    detector, proposer, features, labels = _two_models(tmp_path, is_training=True)
    images = features[fields.InputDataFields.image]
    shapes = features[fields.InputDataFields.true_image_shape]
    builder.provide_groundtruth(detector, labels)
    fed = proposals.frozen_proposer_predict(detector, proposer)(images, shapes)
    rpn = proposals.proposer_first_stage(proposer, images)
    sampled = fed["proposal_boxes_normalized"][0, : int(fed["num_proposals"][0])].numpy()
    assert len(sampled) > 0
    anchors = tf.tile(rpn["anchors"][None], [images.shape[0], 1, 1])
    decoded = proposer._batch_decode_boxes(tf.expand_dims(rpn["rpn_box_encodings"], 2), anchors)
    objectness = tf.nn.softmax(rpn["rpn_objectness_predictions_with_background"])[:, :, 1]
    nms_boxes, _, _, _, _, num = proposer._first_stage_nms_fn(
        decoded, tf.expand_dims(objectness, 2), clip_window=detector._compute_clip_window(shapes)
    )  # the proposer's own NMS pool, before the detector samples its minibatch from it
    pool = nms_boxes[0, : int(num[0])].numpy() / 128.0
    assert (box_iou(sampled, pool).max(axis=1) > 0.999).all()
