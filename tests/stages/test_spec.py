"""Stage specs: typed at compose time, validated for what types cannot say."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from stages.spec import Command, Config, SpecError, to_object, validate_config


def typed(compose_config, overrides):
    cfg = to_object(compose_config(overrides))
    validate_config(cfg)
    return cfg


def test_default_config_is_the_paper_schedule(compose_config):
    cfg = typed(compose_config, [])
    assert isinstance(cfg, Config) and cfg.stage == Command.all
    assert cfg.schedule.stages == ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"]
    s1, s2, s3, s4 = (getattr(cfg.stages, n) for n in cfg.schedule.stages)
    assert s1.trained_groups == ("shared", "rpn") and s1.skips_second_stage
    assert s2.proposer_stage == "s1_rpn" and s2.init.shared == "backbone" and s2.frozen_groups == ("rpn",)
    assert s3.trained_groups == ("rpn",) and s3.init.rpn == "s1_rpn" and s3.init.shared == "s2_fast_rcnn"
    assert s4.frozen_groups == ("shared", "rpn") and s4.proposals == "self"
    assert cfg.stages.end_to_end.frozen_groups == () and not cfg.stages.end_to_end.skips_second_stage
    assert s1.loss_weights.detector_classification == 0 and s2.loss_weights.rpn_objectness == 0


def test_alternating_shared_starts_stage_two_from_stage_one(compose_config):
    cfg = typed(compose_config, ["schedule=alternating_shared"])
    s2 = cfg.stages.s2_fast_rcnn
    assert s2.proposals == "self" and s2.init.shared == "s1_rpn" and s2.init.rpn == "s1_rpn"


@pytest.mark.parametrize(
    "override, key",
    [
        ("stages.s1_rpn.learning_rat=0.1", "learning_rat"),
        ("train.lrr=0.1", "lrr"),
        ("stage=s5_extra", "stage"),
        ("stages.s1_rpn.trains=[shared,backbone]", "trains"),
        ("stages.s9.steps=3", "s9"),
    ],
)
def test_unknown_keys_groups_and_stages_fail_at_compose_time(compose_config, override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        to_object(compose_config([override]))
    text = str(info.value) + str(info.value.__cause__)
    assert key in text


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "stages.s1_rpn.init.rpn=s3_rpn_shared",
            "stages.s1_rpn.init.rpn='s3_rpn_shared' names a stage that does not run before",
        ),
        (
            "stages.s2_fast_rcnn.init.shared=imagenet",
            "stages.s2_fast_rcnn.init.shared='imagenet' is not an init source",
        ),
        (
            "stages.s2_fast_rcnn.proposals=frozen:s4_detector_head",
            "stages.s2_fast_rcnn.proposals='frozen:s4_detector_head'",
        ),
        ("schedule.stages=[s1_rpn,s7]", "schedule.stages: 's7' is not an alternating stage"),
        ("stages.s3_rpn_shared.trains=[]", "stages.s3_rpn_shared.trains is empty"),
        ("steps=0", "steps (0) must be a positive integer"),
    ],
)
def test_inconsistent_specs_name_key_and_value(compose_config, override, message):
    with pytest.raises(SpecError) as info:
        typed(compose_config, [override])
    assert message in str(info.value)


def test_input_stages_follow_init_and_proposer(compose_config):
    cfg = typed(compose_config, [])
    assert cfg.stages.s2_fast_rcnn.input_stages() == ("s1_rpn",)
    assert cfg.stages.s3_rpn_shared.input_stages() == ("s2_fast_rcnn", "s1_rpn")
    assert cfg.stages.end_to_end.input_stages() == ()


def test_a_users_stock_pipeline_config_is_the_base(compose_config, tmp_path, cache_dir):
    """model.pipeline_config=PATH: its model/train settings stay; data, classes, steps are ours."""
    from orchestrator.app import run
    from orchestrator.plan.resolve import PIPELINES_DIR
    from tests.conftest import FAST

    text = (PIPELINES_DIR / "tiny.config").read_text()
    text = text.replace("first_stage_max_proposals: 100", "first_stage_max_proposals: 77")
    text = text.replace("num_classes: 3", "num_classes: 90").replace(
        "momentum_optimizer_value: 0.9", "momentum_optimizer_value: 0.8"
    )
    (tmp_path / "zoo.config").write_text(text)
    run(
        compose_config([*FAST, "stage=plan", "steps=7", f"model.pipeline_config={tmp_path / 'zoo.config'}"]),
        tmp_path / "run",
    )
    out = (tmp_path / "run" / "alternating" / "s1_rpn" / "pipeline.config").read_text()
    assert "first_stage_max_proposals: 77" in out and "momentum_optimizer_value: 0.8" in out
    assert "num_classes: 3" in out and "num_steps: 7" in out and "PATH_TO_BE_CONFIGURED" not in out
    assert str(cache_dir) in out  # data paths point at our dataset
