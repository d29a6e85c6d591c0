"""Which stages train on cached frozen outputs, and the one line saying why not (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.cache import (
    ALLOWED,
    FEATURES,
    PHOTOMETRIC,
    PROPOSALS,
    augmentation_steps,
    flip_states,
    parts,
    stage_cache,
)
from stages.pipeline import copy_pipeline, load_pipeline
from stages.spec import CacheConfig, CacheMode, Strategy, to_object

TINY = Path(__file__).resolve().parents[2] / "conf" / "pipelines" / "tiny.config"

AUTO = CacheConfig()


@pytest.fixture(scope="module")
def stage_two_pipeline():
    """tiny.config as stage 2 gets it: RPN loss weights multiplied by 0."""
    config = load_pipeline(TINY)
    config.model.faster_rcnn.first_stage_localization_loss_weight = 0.0
    config.model.faster_rcnn.first_stage_objectness_loss_weight = 0.0
    return config


@pytest.fixture(scope="module")
def specs(request):
    from tests.conftest import compose_cfg

    return to_object(compose_cfg([])).stages


def _with_steps(config, *steps: str):
    out = copy_pipeline(config)
    for name in steps:
        getattr(out.train_config.data_augmentation_options.add(), name).SetInParent()
    return out


def test_allowed_steps_are_real_od_api_steps():
    assert ALLOWED | PHOTOMETRIC <= set(augmentation_steps())
    assert (
        len(augmentation_steps()) >= 39
    )  # every step the installed OD API knows is either allowed or blocks


def test_stage_two_caches_both_flips_by_default(stage_two_pipeline, specs):
    decision = stage_cache(specs.s2_fast_rcnn, stage_two_pipeline, AUTO, Strategy.default)
    assert decision.on and decision.flips == (False, True) and decision.parts == (PROPOSALS,)
    assert "proposals of frozen s1_rpn" in decision.why and "unflipped and flipped" in decision.why


def test_what_each_stage_caches_follows_from_its_spec(specs, compose_config):
    assert parts(specs.s2_fast_rcnn) == (PROPOSALS,)
    assert parts(specs.s3_rpn_shared) == (FEATURES,)  # its RPN trains: only the shared convs are fixed
    assert parts(specs.s4_detector_head) == (FEATURES, PROPOSALS)  # shared convs and RPN both frozen
    assert parts(specs.s1_rpn) == parts(specs.end_to_end) == ()
    with_detector_loss = to_object(
        compose_config(["stages.s3_rpn_shared.loss_weights.detector_localization=1"])
    )
    assert parts(with_detector_loss.stages.s3_rpn_shared) == (FEATURES,)  # its RPN trains: proposals live
    shared = to_object(compose_config(["schedule=alternating_shared"])).stages
    assert parts(shared.s2_fast_rcnn) == ()  # trains its shared convs and proposes for itself


def test_features_alone_do_not_need_zero_rpn_weights(stage_two_pipeline, specs):
    config = _rpn_weight(stage_two_pipeline)
    assert stage_cache(specs.s3_rpn_shared, config, AUTO, Strategy.default).on
    s4 = stage_cache(specs.s4_detector_head, config, AUTO, Strategy.default)
    assert not s4.on and "RPN loss weights are not 0" in s4.why
    assert s4.why.startswith(
        "s4_detector_head: frozen shared features and proposals of its frozen RPN computed every"
    )


@pytest.mark.parametrize("name", ["s1_rpn", "end_to_end"])
def test_stages_that_train_their_shared_convs_have_nothing_to_cache(stage_two_pipeline, specs, name):
    assert stage_cache(getattr(specs, name), stage_two_pipeline, AUTO, Strategy.default) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: _with_steps(c, "random_crop_image"),
            "data_augmentation_options[1] random_crop_image changes",
        ),
        (
            lambda c: _with_steps(c, "random_adjust_brightness"),
            "[1] random_adjust_brightness changes the image's colours randomly",
        ),
        (
            lambda c: _with_steps(c, "random_horizontal_flip"),
            "[1] random_horizontal_flip: a second horizontal flip",
        ),
        (lambda c: _keep_aspect(c), "image_resizer is not a fixed_shape_resizer"),
        (lambda c: _rpn_weight(c), "RPN loss weights are not 0"),
    ],
)
def test_what_would_make_cached_proposals_inexact_turns_caching_off(
    stage_two_pipeline, specs, change, expected
):
    decision = stage_cache(specs.s2_fast_rcnn, change(stage_two_pipeline), AUTO, Strategy.default)
    assert not decision.on
    assert decision.why.startswith("s2_fast_rcnn: proposals of frozen s1_rpn computed every step: ")
    assert expected in decision.why


def test_deterministic_and_label_only_steps_keep_caching_on(stage_two_pipeline, specs):
    config = _with_steps(stage_two_pipeline, "normalize_image", "random_jitter_boxes")
    assert stage_cache(specs.s2_fast_rcnn, config, AUTO, Strategy.default).on


def test_off_and_multi_worker_turn_caching_off(stage_two_pipeline, specs):
    off = stage_cache(
        specs.s2_fast_rcnn, stage_two_pipeline, CacheConfig(mode=CacheMode.off), Strategy.default
    )
    assert not off.on and off.why.endswith("cache.mode=off")
    multi = stage_cache(specs.s2_fast_rcnn, stage_two_pipeline, AUTO, Strategy.multi_worker)
    assert not multi.on and "train.strategy=multi_worker" in multi.why


def test_flip_states_follow_the_flip_probability(stage_two_pipeline):
    train = copy_pipeline(stage_two_pipeline).train_config
    assert flip_states(train) == (False, True)  # the proto's default probability, 0.5
    train.data_augmentation_options[0].random_horizontal_flip.probability = 1.0
    assert flip_states(train) == (True,)
    train.data_augmentation_options[0].random_horizontal_flip.probability = 0.0
    assert flip_states(train) == (False,)
    del train.data_augmentation_options[:]
    assert flip_states(train) == (False,)


def _keep_aspect(config):
    out = copy_pipeline(config)
    out.model.faster_rcnn.image_resizer.keep_aspect_ratio_resizer.min_dimension = 128
    return out


def _rpn_weight(config):
    out = copy_pipeline(config)
    out.model.faster_rcnn.first_stage_objectness_loss_weight = 1.0
    return out


FORCE = CacheConfig(mode=CacheMode.force)


def test_force_caches_under_colour_augmentation_and_says_it_is_approximate(stage_two_pipeline, specs):
    config = _with_steps(stage_two_pipeline, "random_adjust_brightness", "random_adjust_hue")
    assert not stage_cache(specs.s3_rpn_shared, config, AUTO, Strategy.default).on
    forced = stage_cache(specs.s3_rpn_shared, config, FORCE, Strategy.default)
    assert forced.on and forced.flips == (False, True)
    assert forced.approximate == (
        "data_augmentation_options[1] random_adjust_brightness",
        "data_augmentation_options[2] random_adjust_hue",
    )
    assert "APPROXIMATE (cache.mode=force): computed without data_augmentation_options[1]" in forced.why


def test_force_without_colour_augmentation_is_the_exact_cache(stage_two_pipeline, specs):
    forced = stage_cache(specs.s2_fast_rcnn, stage_two_pipeline, FORCE, Strategy.default)
    assert forced.on and forced.approximate == () and "APPROXIMATE" not in forced.why


def test_force_still_refuses_what_moves_pixels(stage_two_pipeline, specs):
    config = _with_steps(stage_two_pipeline, "random_adjust_brightness", "random_crop_image")
    forced = stage_cache(specs.s3_rpn_shared, config, FORCE, Strategy.default)
    assert not forced.on
    assert "[2] random_crop_image changes the image randomly" in forced.why
    assert "cache.mode=force cannot cache it either" in forced.why
