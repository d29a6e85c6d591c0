"""Freeze regexes on fake names, like big_vision's _split_frozen test: pure logic, no model build."""

from __future__ import annotations

import pytest

from stages.freeze import check_patterns, freeze_patterns, split_frozen

RESNET_LIKE = {
    "shared": [
        "conv1_conv/kernel:0",
        "conv1_bn/moving_mean:0",
        "conv2_block1_1_conv/kernel:0",
        "conv4_block6_3_bn/gamma:0",
    ],
    "rpn": [
        "RPNConv/kernel:0",
        "FirstStageBoxPredictor/ConvolutionalBoxHead_0/BoxEncodingPredictor/kernel:0",
    ],
    "detector_features": ["conv5_block1_1_conv/kernel:0", "conv5_block3_3_bn/moving_variance:0"],
    "detector_head": ["mask_rcnn_keras_box_predictor/mask_rcnn_class_head/ClassPredictor_dense/kernel:0"],
}


def names(*groups):
    return [n for g in groups for n in RESNET_LIKE[g]]


def test_patterns_match_exactly_the_frozen_set():
    frozen, trained = names("shared", "rpn"), names("detector_features", "detector_head")
    patterns = freeze_patterns(frozen, trained)
    assert patterns == ["^conv1_", "^conv2_", "^conv4_", "^RPNConv/", "^FirstStageBoxPredictor/"]
    assert split_frozen(frozen + trained, patterns) == (frozen, trained)
    check_patterns(patterns, frozen, trained, "stages.s4")


def test_prefix_lengthens_where_trained_names_share_a_token():
    frozen = ["conv5_block1_1_conv/kernel:0"]
    trained = ["conv5_block2_1_conv/kernel:0"]
    assert freeze_patterns(frozen, trained) == ["^conv5_block1_"]


def test_a_pattern_matching_nothing_fails_naming_it():
    with pytest.raises(
        ValueError, match=r"stages.s3_rpn_shared.freeze_variables\[1\]='\^conv5_' matched 0 variables"
    ):
        check_patterns(["^conv1_", "^conv5_"], names("shared"), names("rpn"), "stages.s3_rpn_shared")


def test_a_pattern_matching_a_trained_variable_fails():
    with pytest.raises(ValueError, match="matched but trained"):
        check_patterns(["^conv"], names("shared"), names("detector_features"), "stages.s1_rpn")


def test_a_frozen_name_equal_to_a_trained_name_cannot_be_split():
    with pytest.raises(ValueError, match="same name"):
        freeze_patterns(["a/kernel:0"], ["a/kernel:0"])
