"""The stock training loop on a generated resnet50 config, fine-tuning from a user's backbone.

A resnet50 user brings classification weights (``backbone.checkpoint=PATH``); the end_to_end
pipeline.config we generate for them must run under ``model_main_tf2.py``'s loop as it is,
including its fine-tune restore (``assert_existing_objects_matched``). The backbone checkpoint
is made here, in the layout the OD API restores (``feature_extractor`` = the Keras ResNet-50).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.app import run
from orchestrator.odapi import builder
from tests.conftest import FAST

pytestmark = pytest.mark.slow
STEP = "step/.ATTRIBUTES/VARIABLE_VALUE"
SMALL = ["model=resnet50", "model.batch_size=1", "data.image_size=64", "stage=plan"]


def _backbone_checkpoint(pipeline, prefix) -> str:
    """A classification checkpoint of the resnet50 feature extractor's backbone (random weights)."""
    model = builder.build_model(builder.load_configs(pipeline), is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, 64, 64, 3]))
    model.predict(images, shapes)  # creates the Keras backbone and its variables
    backbone = model._feature_extractor.classification_backbone
    return tf.train.Checkpoint(feature_extractor=backbone).save(str(prefix))


def test_stock_train_loop_fine_tunes_resnet50_from_a_backbone_checkpoint(compose_config, cache_dir, tmp_path):
    from object_detection import model_lib_v2

    data = [*FAST, f"data.cache_dir={cache_dir}"]
    run(compose_config([*data, *SMALL]), tmp_path / "plain")
    checkpoint = _backbone_checkpoint(
        tmp_path / "plain" / "plan" / "end_to_end.config", tmp_path / "backbone"
    )
    run(compose_config([*data, *SMALL, f"backbone.checkpoint={checkpoint}"]), tmp_path / "run")
    pipeline = tmp_path / "run" / "plan" / "end_to_end.config"
    train = builder.load_configs(pipeline)["train_config"]
    assert train.fine_tune_checkpoint == checkpoint and train.fine_tune_checkpoint_type == "classification"

    model_lib_v2.train_loop(
        pipeline_config_path=str(pipeline),
        model_dir=str(tmp_path / "stock"),
        train_steps=2,
        num_steps_per_iteration=1,
        checkpoint_every_n=1,
    )
    checkpoints = tf.train.get_checkpoint_state(str(tmp_path / "stock")).all_model_checkpoint_paths
    first, last = tf.train.load_checkpoint(checkpoints[0]), tf.train.load_checkpoint(checkpoints[-1])
    assert (first.get_tensor(STEP), last.get_tensor(STEP)) == (0, 2)
    # the stock loop started from the user's weights (its step-0 checkpoint) and trained them
    user = _conv1_kernel(tf.train.load_checkpoint(checkpoint))
    np.testing.assert_array_equal(_conv1_kernel(first), user)
    assert not np.array_equal(_conv1_kernel(last), user)


def _conv1_kernel(reader) -> np.ndarray:
    """ResNet-50's 7x7 stem kernel (the only [7, 7, 3, 64] variable that is not an optimizer slot)."""
    shapes = reader.get_variable_to_shape_map()
    (name,) = [n for n, s in shapes.items() if s == [7, 7, 3, 64] and "OPTIMIZER_SLOT" not in n]
    return reader.get_tensor(name)
