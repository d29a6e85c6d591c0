"""Stage spec + the real base pipeline (conf/pipelines/tiny.config) -> stage configs; no model build."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages import pipeline as pipelines
from stages.spec import ProposerSpec, to_object

TINY = Path(__file__).resolve().parents[2] / "conf" / "pipelines" / "tiny.config"
RUN = pipelines.RunInputs("/data/train.record", "/data/val.record", "/data/label_map.pbtxt", num_classes=5)


@pytest.fixture(scope="module")
def base():
    return pipelines.load_pipeline(TINY)


@pytest.fixture(scope="module")
def run_config(base):
    return pipelines.run_pipeline(base, RUN)


@pytest.fixture()
def stages_of(compose_config):
    """The typed stage specs of the real composed config with ``overrides``."""
    return lambda *overrides: to_object(compose_config(list(overrides))).stages


def test_run_pipeline_sets_data_and_classes_and_leaves_the_base_alone(base, run_config):
    frcnn = run_config.model.faster_rcnn
    assert frcnn.num_classes == 5 and frcnn.number_of_stages == 2
    assert run_config.train_config.batch_size == 4  # batch_size=None: the base's
    assert frcnn.image_resizer.fixed_shape_resizer.height == 128  # image_size=None: the base's
    assert list(run_config.train_input_reader.tf_record_input_reader.input_path) == ["/data/train.record"]
    assert list(run_config.eval_input_reader[0].tf_record_input_reader.input_path) == ["/data/val.record"]
    assert run_config.eval_input_reader[0].label_map_path == "/data/label_map.pbtxt"
    assert base.model.faster_rcnn.num_classes == 3 and "PATH_TO_BE_CONFIGURED" in str(base)
    with pytest.raises(ValueError, match="PATH_TO_BE_CONFIGURED"):
        pipelines.to_text(base)
    assert "PATH_TO_BE_CONFIGURED" not in pipelines.to_text(run_config)


def test_run_pipeline_sizes_and_extractor_override_the_base(base):
    inputs = pipelines.RunInputs(
        "/t", "/v", "/l", 5, batch_size=1, image_size=96, feature_extractor="x_keras"
    )
    config = pipelines.run_pipeline(base, inputs)
    resizer = config.model.faster_rcnn.image_resizer.fixed_shape_resizer
    assert config.train_config.batch_size == 1 and (resizer.height, resizer.width) == (96, 96)
    assert config.model.faster_rcnn.feature_extractor.type == "x_keras"


def test_rpn_stage_config_scales_losses_and_states_freezes_init_and_schedule(run_config, stages_of):
    s1 = stages_of().s1_rpn  # detector loss weights 0, cosine schedule
    inputs = pipelines.StageInputs(
        steps=50,
        lr=0.01,
        freeze_patterns=["^detector_"],
        train_patterns=["^block1_"],
        fine_tune_checkpoint="/ckpt/backbone",
        fine_tune_checkpoint_type="classification",
    )
    config = pipelines.stage_pipeline(run_config, s1, inputs)
    frcnn = config.model.faster_rcnn
    assert (frcnn.first_stage_localization_loss_weight, frcnn.first_stage_objectness_loss_weight) == (
        1.0,
        1.0,
    )
    assert (frcnn.second_stage_localization_loss_weight, frcnn.second_stage_classification_loss_weight) == (
        0,
        0,
    )
    train = config.train_config
    assert train.num_steps == 50
    assert list(train.freeze_variables) == ["^detector_"] and list(train.update_trainable_variables) == [
        "^block1_"
    ]
    assert (train.fine_tune_checkpoint, train.fine_tune_checkpoint_type) == (
        "/ckpt/backbone",
        "classification",
    )
    rate = train.optimizer.momentum_optimizer.learning_rate
    assert rate.WhichOneof("learning_rate") == "cosine_decay_learning_rate"
    cosine = rate.cosine_decay_learning_rate
    assert (cosine.total_steps, cosine.warmup_steps) == (50, 0)
    assert cosine.learning_rate_base == pytest.approx(0.01)  # a float32 field
    assert cosine.warmup_learning_rate == pytest.approx(0.01)  # no warmup: starts at the base rate
    assert (
        run_config.train_config.num_steps == 600 and not run_config.train_config.freeze_variables
    )  # untouched


def test_stage_config_warmup_constant_rate_and_detection_init(run_config, stages_of):
    stages = stages_of("stages.s4_detector_head.warmup_steps=80", "stages.end_to_end.lr_schedule=constant")
    warm = pipelines.stage_pipeline(
        run_config, stages.s4_detector_head, pipelines.StageInputs(steps=50, lr=0.02)
    )
    cosine = warm.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.warmup_steps == 50  # capped at the stage's steps
    assert cosine.warmup_learning_rate == pytest.approx(0.002)  # lr / 10
    assert not warm.train_config.HasField("fine_tune_checkpoint")
    e2e = pipelines.stage_pipeline(
        run_config,
        stages.end_to_end,
        pipelines.StageInputs(steps=9, lr=0.03, fine_tune_checkpoint="/runs/s1/ckpt-4"),
    )
    rate = e2e.train_config.optimizer.momentum_optimizer.learning_rate
    assert rate.WhichOneof("learning_rate") == "constant_learning_rate"
    assert rate.constant_learning_rate.learning_rate == pytest.approx(0.03)
    assert e2e.train_config.fine_tune_checkpoint_type == "detection"  # the default type
    frcnn = e2e.model.faster_rcnn
    assert (frcnn.second_stage_localization_loss_weight, frcnn.second_stage_classification_loss_weight) == (
        2,
        1,
    )


def test_without_paths_hashes_settings_not_locations(run_config, stages_of):
    s2 = stages_of().s2_fast_rcnn

    def text(run: pipelines.RunInputs, checkpoint: str, steps: int = 40) -> str:
        inputs = pipelines.StageInputs(steps=steps, lr=0.02, fine_tune_checkpoint=checkpoint)
        return pipelines.without_paths(
            pipelines.stage_pipeline(pipelines.run_pipeline(run_config, run), s2, inputs)
        )

    here = text(RUN, "/run_a/backbone/ckpt-1")
    moved = pipelines.RunInputs("/elsewhere/train.record", "/elsewhere/val.record", "/elsewhere/lm.pbtxt", 5)
    assert text(moved, "/run_b/backbone/ckpt-1") == here
    assert "/data/" not in here and "/run_a/" not in here and "num_steps: 40" in here
    assert text(RUN, "/run_a/backbone/ckpt-1", steps=41) != here
    assert text(pipelines.RunInputs("/t", "/v", "/l", num_classes=6), "/c") != here


def test_proposer_pipeline_overrides_only_what_the_spec_sets(run_config):
    kept = pipelines.proposer_pipeline(run_config, ProposerSpec())
    assert kept == run_config and kept is not run_config
    top_k = pipelines.proposer_pipeline(run_config, ProposerSpec(max_proposals=300))
    assert top_k.model.faster_rcnn.first_stage_max_proposals == 300
    assert top_k.model.faster_rcnn.first_stage_nms_iou_threshold == pytest.approx(0.7)
    both = pipelines.proposer_pipeline(run_config, ProposerSpec(max_proposals=50, nms_iou_threshold=0.5))
    assert both.model.faster_rcnn.first_stage_max_proposals == 50
    assert both.model.faster_rcnn.first_stage_nms_iou_threshold == pytest.approx(0.5)
    assert run_config.model.faster_rcnn.first_stage_max_proposals == 100  # the input is not changed
