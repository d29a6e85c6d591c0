"""Stage specs: typed at compose time, validated for what types cannot say."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from stages.errors import UserError
from stages.spec import (
    STAGE_NAMES,
    Command,
    Config,
    SpecError,
    Stages,
    register_configs,
    to_object,
    validate_config,
)
from tests.conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow  # stage=plan builds the model to read its module groups
def test_a_users_stock_pipeline_config_is_the_base(compose_config, tmp_path, cache_dir):
    """model.pipeline_config=PATH: its model/train settings stay; data, classes, steps are ours."""
    from orchestrator.app import run
    from orchestrator.plan.configs import PIPELINES_DIR
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
    out = (tmp_path / "run" / "plan" / "s1_rpn.config").read_text()
    assert "first_stage_max_proposals: 77" in out and "momentum_optimizer_value: 0.8" in out
    assert "num_classes: 3" in out and "num_steps: 7" in out and "PATH_TO_BE_CONFIGURED" not in out
    assert str(cache_dir) in out  # data paths point at our dataset


@pytest.mark.parametrize(
    "override, named, fix",
    [
        ("model.batch_size=0", "model.batch_size=0 is out of range", "model.batch_size=2"),
        ("model.batch_size=-1", "model.batch_size=-1 is out of range", "null for the base pipeline's"),
        ("model.image_size=16", "model.image_size=16 is out of range", "must be >= 32"),
        ("train.lr=-1", "train.lr=-1.0 is out of range", "train.lr=0.02"),
        ("train.lr=0", "train.lr=0.0 is out of range", "train.lr=0.02"),
        ("train.lr=nan", "train.lr=nan is out of range", "finite number > 0"),
        ("train.lr=inf", "train.lr=inf is out of range", "finite number > 0"),
        ("stages.s2_fast_rcnn.lr=0", "stages.s2_fast_rcnn.lr=0.0 is out of range", "null for train.lr"),
        ("stages.end_to_end.lr=-0.01", "stages.end_to_end.lr=-0.01 is out of range", "null for train.lr"),
        ("train.checkpoint_every=0", "train.checkpoint_every=0 is out of range", "checkpoint_every=200"),
        ("train.log_every=0", "train.log_every=0 is out of range", "train.log_every=25"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints=0 is out of range", "keep_checkpoints=3"),
        ("train.steps_per_loop=0", "train.steps_per_loop=0 is out of range", "steps_per_loop=10"),
        ("budget.total=3", "budget.total=3 is out of range", "at least one step per stage"),
        ("budget.split=[1,1,1]", "budget.split=[1.0, 1.0, 1.0] must give one weight", "budget=paper"),
        ("budget.split=[1,0,1,1]", "budget.split=[1.0, 0.0, 1.0, 1.0] must give one weight", "[1,1,1,1]"),
        ("eval.max_images=0", "eval.max_images=0 is out of range", "null for the whole val split"),
        ("data.num_train=0", "data.num_train=0 is out of range", "data.num_train=512"),
        ("data.num_val=0", "data.num_val=0 is out of range", "data.num_val=64"),
        ("data.image_size=31", "data.image_size=31 is out of range", "must be >= 32"),
        ("backbone.pretrain_steps=0", "backbone.pretrain_steps=0 is out of range", "pretrain_backbone=false"),
        ("predict.score_threshold=1.5", "predict.score_threshold=1.5 is out of range", "in [0, 1]"),
        ("predict.score_threshold=-0.1", "predict.score_threshold=-0.1 is out of range", "in [0, 1]"),
        ("stages.s1_rpn.warmup_steps=-5", "stages.s1_rpn.warmup_steps=-5 is out of range", "warmup_steps=0"),
        (
            "stages.s2_fast_rcnn.proposer.max_proposals=0",
            "stages.s2_fast_rcnn.proposer.max_proposals=0 is out of range",
            "max_proposals=300",
        ),
        (
            "stages.s2_fast_rcnn.proposer.nms_iou_threshold=0",
            "stages.s2_fast_rcnn.proposer.nms_iou_threshold=0.0 is out of range",
            "in (0, 1]",
        ),
        (
            "stages.s4_detector_head.proposer.nms_iou_threshold=1.5",
            "stages.s4_detector_head.proposer.nms_iou_threshold=1.5 is out of range",
            "nms_iou_threshold=0.7",
        ),
        ("data.bad_boxes=drop", "data.bad_boxes='drop' is not a policy", "error | skip | clip"),
    ],
)
def test_out_of_range_numbers_fail_at_compose_time_naming_key_value_and_fix(
    compose_config, override, named, fix
):
    with pytest.raises(SpecError) as info:
        typed(compose_config, [override])
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert message.startswith(named), message
    assert fix in message, message


def test_values_on_the_range_edges_are_accepted(compose_config):
    edges = [
        "model.batch_size=1",
        "model.image_size=32",
        "train.lr=1e-9",
        "stages.s1_rpn.lr=1e-9",
        "train.checkpoint_every=1",
        "train.log_every=1",
        "train.keep_checkpoints=1",
        "train.steps_per_loop=1",
        "eval.max_images=1",
        "data.num_train=1",
        "data.num_val=1",
        "data.image_size=32",
        "backbone.pretrain_steps=1",
        "predict.score_threshold=0",
        "stages.s1_rpn.warmup_steps=0",
        "stages.s2_fast_rcnn.proposer.max_proposals=1",
        "stages.s2_fast_rcnn.proposer.nms_iou_threshold=1",
        "data.bad_boxes=clip",
    ]
    cfg = typed(compose_config, edges)
    assert cfg.model.batch_size == 1 and cfg.train.lr == 1e-9 and cfg.predict.score_threshold == 0
    assert cfg.stages.s2_fast_rcnn.proposer.nms_iou_threshold == 1 and cfg.data.bad_boxes == "clip"
    assert (
        typed(compose_config, ["predict.score_threshold=1", "data.bad_boxes=skip"]).predict.score_threshold
        == 1
    )


def test_an_out_of_range_value_is_one_line_and_exit_2_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "train.lr=-1", "stage=plan", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "train.lr=-1.0" in line]
    assert len(errors) == 1 and "SpecError" in errors[0] and "Traceback" not in result.stderr


def test_stage_names_are_spelled_once(compose_config):
    """STAGE_NAMES and Command come from the Stages fields; conf/ must have one YAML and default each."""
    assert STAGE_NAMES == tuple(Stages.__dataclass_fields__) and STAGE_NAMES[-1] == "end_to_end"
    commands = [c.value for c in Command]
    assert commands == ["all", "alternating", "plan", *STAGE_NAMES, "compare", "export", "predict"]
    assert all(isinstance(c, str) and c == c.value for c in Command)
    assert pickle.loads(pickle.dumps(Command.s3_rpn_shared)) is Command.s3_rpn_shared
    assert sorted(p.stem for p in (ROOT / "conf" / "stages").glob("*.yaml")) == sorted(STAGE_NAMES)
    defaults = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
    stage_defaults = [
        next(iter(d)) for d in defaults if isinstance(d, dict) and next(iter(d)).startswith("stages@")
    ]
    assert stage_defaults == [f"stages@stages.{n}" for n in STAGE_NAMES]
    for name in STAGE_NAMES:
        cfg = typed(compose_config, [f"stage={name}"])
        assert cfg.stage is Command[name] and getattr(cfg.stages, name).name == name


def test_hparams_search_is_a_group_of_the_defaults_list():
    """-m hparams_search=rpn_lambda_optuna (README) composes: at most the optional plugin is missing."""
    register_configs()
    GlobalHydra.instance().clear()
    overrides = ["hparams_search=rpn_lambda_optuna"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
            with pytest.raises(MissingConfigException) as info:
                compose(config_name="config", overrides=overrides, return_hydra_config=True)
            assert "hydra/sweeper/optuna" in str(info.value)
            assert "No match in the defaults list" not in str(info.value)
        else:
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            assert cfg.hydra.sweeper.direction == "maximize" and "train.lr" in cfg.hydra.sweeper.params
        cfg = compose(config_name="config", overrides=[])
    assert "hparams_search" not in cfg and cfg.stage == "all"
