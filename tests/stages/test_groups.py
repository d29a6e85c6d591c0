"""Module groups come from the built model and partition it, for every supported extractor."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.odapi import builder
from orchestrator.plan.configs import PIPELINES_DIR
from stages import pipeline as pipelines
from stages.freeze import check_patterns, freeze_patterns
from stages.groups import GROUP_ATTRIBUTES, GroupError, resolve_groups
from stages.spec import GROUPS
from tests.helpers import built_model, tiny_pipeline

pytestmark = pytest.mark.slow  # every test here builds a model (group names come from the built model)

EXTRACTORS = {
    "resnet50": ("resnet50.config", None),
    "resnet101": ("resnet50.config", "faster_rcnn_resnet101_keras"),
    "inception_resnet_v2": ("inception_resnet_v2.config", None),
    "resnet50_fpn": ("resnet50_fpn.config", None),
}


def model_config(base: str, extractor: str | None):
    config = pipelines.load_pipeline(PIPELINES_DIR / base)
    if extractor:
        config.model.faster_rcnn.feature_extractor.type = extractor
    return config.model


def assert_every_group_split_is_exact(names: dict[str, list[str]]) -> dict[tuple, list[str]]:
    """For every non-empty frozen subset of groups, regexes match exactly that subset."""
    out = {}
    for r in range(1, len(GROUPS)):
        for frozen_groups in itertools.combinations(GROUPS, r):
            frozen = [n for g in frozen_groups for n in names[g]]
            trained = [n for g in GROUPS if g not in frozen_groups for n in names[g]]
            patterns = freeze_patterns(frozen, trained)
            check_patterns(patterns, frozen, trained, "+".join(frozen_groups))
            out[frozen_groups] = patterns
    return out


def test_group_attributes_exist_on_the_meta_arch(tmp_path):
    _, path = tiny_pipeline(tmp_path)
    _, model, _ = built_model(path)
    for group, attrs in GROUP_ATTRIBUTES.items():
        for attr in attrs:
            assert hasattr(model, attr), f"OD API renamed {attr} ({group})"
    groups = resolve_groups(model)
    assert sum(len(v) for v in groups.variables.values()) == len(model.variables)
    assert any("moving_mean" in n for n in groups.names("shared"))


def test_tiny_groups_partition_and_regexes_are_exact():
    names = builder.group_variable_names(model_config("tiny.config", None))
    assert all(names[g] for g in GROUPS)
    patterns = assert_every_group_split_is_exact(names)
    assert patterns[("shared",)] == ["^block1_", "^block2_", "^block3_"]


def test_a_variable_outside_every_group_is_named(tmp_path):
    import tensorflow as tf

    _, path = tiny_pipeline(tmp_path)
    _, model, _ = built_model(path)
    model.stray = tf.Variable(1.0, name="stray_var")
    with pytest.raises(GroupError, match="in no group: \\['stray_var:0'\\]"):
        resolve_groups(model)


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_stock_extractor_groups_partition_and_regexes_are_exact(name):
    names = builder.group_variable_names(model_config(*EXTRACTORS[name]))
    assert all(names[g] for g in GROUPS), {g: len(v) for g, v in names.items()}
    assert_every_group_split_is_exact(names)


def test_a_frozen_group_computes_the_same_features_whatever_else_is_in_the_batch(tmp_path):
    """Frozen BatchNorm uses its moving statistics in training mode too (the OD API's does not)."""
    import numpy as np
    import tensorflow as tf

    _, path = tiny_pipeline(tmp_path)
    _, model, (features, _) = built_model(path)
    image = features["image"][:1]
    with_dark, with_bright = (tf.concat([image, image * 0 + v], 0) for v in (-1.0, 1.0))
    shared = model._feature_extractor_for_proposal_features

    def first(batch: tf.Tensor, training: bool = True) -> np.ndarray:
        return shared(batch, training=training)[0].numpy()

    groups = resolve_groups(model)
    groups.set_trainable(["rpn", "detector_features", "detector_head"])
    np.testing.assert_allclose(first(with_dark), first(with_bright), atol=1e-5)
    np.testing.assert_allclose(first(with_dark), first(image, training=False), atol=1e-5)
    groups.set_trainable(GROUPS)  # trained again: the pipeline's batch_norm_trainable (true) holds
    assert np.abs(first(with_dark) - first(with_bright)).max() > 1e-2
