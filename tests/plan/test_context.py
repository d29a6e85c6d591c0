"""Readiness of input stages, and hand-over from DONE records, before any model is built."""

from __future__ import annotations

import pytest

from orchestrator.layout import write_json
from orchestrator.odapi.restore import Source
from orchestrator.plan.configs import fine_tune_fields, group_sources
from orchestrator.plan.context import RunContext, StageNotReady
from orchestrator.plan.stage_plan import stage_plans
from stages.spec import to_object
from tests.conftest import FAST


def typed(compose_config, cache_dir, overrides=()):
    return to_object(compose_config([*FAST, f"data.cache_dir={cache_dir}", *overrides]))


def fake_done(directory, fingerprint: str, step: int = 4) -> None:
    """A DONE record as a finished stage writes it (the checkpoint file itself is not read here)."""
    write_json(directory / "DONE", {"fingerprint": fingerprint, "checkpoint": f"checkpoints/ckpt-{step}"})


def test_a_missing_input_fails_before_data_or_models(compose_config, tmp_path):
    cfg = typed(compose_config, tmp_path / "never_created_cache")
    with pytest.raises(StageNotReady, match="stage s3_rpn_shared needs s2_fast_rcnn, which has not finished"):
        RunContext.create(cfg, tmp_path / "run", ["s3_rpn_shared"])
    assert not (tmp_path / "never_created_cache").exists()  # no data generated, nothing built


def test_an_input_finished_under_other_settings_is_refused(compose_config, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    cfg = typed(compose_config, cache_dir, ["steps=10"])
    fake_done(stage_plans(cfg, run_dir)["s1_rpn"].files.directory, "trained-with-20-steps")
    with pytest.raises(StageNotReady, match="the s1_rpn finished in .* was trained with other settings"):
        RunContext.create(cfg, run_dir, ["s2_fast_rcnn"])


def test_inputs_are_handed_over_from_their_done_records(compose_config, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    cfg = typed(compose_config, cache_dir)
    expected = RunContext.create(cfg, run_dir, []).fingerprints
    plans = stage_plans(cfg, run_dir)
    fake_done(plans["s1_rpn"].files.directory, expected["s1_rpn"], step=20)  # not ckpt-{steps}
    fake_done(plans["s2_fast_rcnn"].files.directory, expected["s2_fast_rcnn"], step=3)
    ctx = RunContext.create(cfg, run_dir, ["s3_rpn_shared"])
    finished = {n: ctx.finished_input("s3_rpn_shared", n).checkpoint for n in ("s1_rpn", "s2_fast_rcnn")}
    assert finished["s1_rpn"] == str(run_dir / "alternating/s1_rpn/checkpoints/ckpt-20")
    sources = group_sources(plans["s3_rpn_shared"], finished, backbone="/bb/backbone")
    assert sources["rpn"] == Source("s1_rpn", finished["s1_rpn"])
    assert sources["shared"] == Source(
        "s2_fast_rcnn", str(run_dir / "alternating/s2_fast_rcnn/checkpoints/ckpt-3")
    )


def test_group_sources_and_fine_tune_fields(compose_config, tmp_path):
    plans = stage_plans(to_object(compose_config([])), tmp_path)
    s1 = group_sources(plans["s1_rpn"], {}, backbone="/bb/backbone")
    assert s1["shared"] == Source("backbone", "/bb/backbone") and s1["rpn"] == Source("fresh")
    assert fine_tune_fields(plans["s1_rpn"].spec, s1, "classification") == ("/bb/backbone", "classification")
    no_backbone = group_sources(plans["s1_rpn"], {}, backbone=None)
    assert no_backbone["shared"].path is None and fine_tune_fields(
        plans["s1_rpn"].spec, no_backbone, "x"
    ) == (None, None)
    s4 = group_sources(plans["s4_detector_head"], {"s3_rpn_shared": "/r/s3/ckpt-9"}, backbone=None)
    assert fine_tune_fields(plans["s4_detector_head"].spec, s4, "classification") == ("/r/s3/ckpt-9", "full")
    s3 = group_sources(plans["s3_rpn_shared"], {"s1_rpn": "/s1/c", "s2_fast_rcnn": "/s2/c"}, backbone=None)
    assert fine_tune_fields(plans["s3_rpn_shared"].spec, s3, "classification") == ("/s2/c", "detection")
    planning = group_sources(plans["s3_rpn_shared"], {"s1_rpn": None, "s2_fast_rcnn": None}, backbone=None)
    assert planning["rpn"] == Source("s1_rpn (when it finishes)")
