"""Anytime evaluation: a curve while training, CPU seconds kept apart, training unchanged by it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from orchestrator.engine import runner
from orchestrator.engine.anytime import AnytimeCurve
from orchestrator.engine.evaluate import Evaluator
from orchestrator.layout import StageFiles
from tests.helpers import built_model, spec_of, stage_run, tiny_pipeline


def test_a_resumed_stage_keeps_its_curve_and_cpu_up_to_the_resumed_checkpoint(tmp_path):
    files = StageFiles(tmp_path)
    curve = AnytimeCurve(files, every=2, evaluate=None, step_offset=0, start=0)
    curve.train(lambda: sum(range(200_000)))
    assert curve.train_cpu > 0
    curve.add(2, {"AR@100": 0.1, "eval_images": 4})
    curve.checkpointed(2)
    at_two = curve.train_cpu
    curve.train(lambda: sum(range(200_000)))
    curve.add(4, {"AR@100": 0.2})
    resumed = AnytimeCurve(files, every=2, evaluate=None, step_offset=0, start=2)
    assert resumed.train_cpu == pytest.approx(at_two, abs=1e-3)
    assert [p["step"] for p in resumed.points] == [2]
    assert resumed.points[0] == {"step": 2, "train_cpu_seconds": round(at_two, 2), "AR@100": 0.1}
    fresh = AnytimeCurve(files, every=2, evaluate=None, step_offset=0, start=0)
    assert fresh.points == [] and fresh.train_cpu == 0.0


def test_due_only_at_multiples_before_the_final_step(tmp_path):
    curve = AnytimeCurve(StageFiles(tmp_path), every=3, evaluate=lambda prefix: {}, step_offset=0, start=0)
    assert [s for s in range(1, 10) if curve.due(s, 9)] == [3, 6]
    off = AnytimeCurve(StageFiles(tmp_path), every=None, evaluate=lambda prefix: {}, step_offset=0, start=0)
    assert not any(off.due(s, 9) for s in range(1, 10))


@pytest.mark.slow
def test_periodic_evaluation_leaves_the_training_state_untouched(tmp_path):
    """Evaluation reads the live weights through its own model and its own input pipeline:
    every training variable (BatchNorm statistics included) is bit-identical after it."""
    _, path = tiny_pipeline(tmp_path)
    _, model, _ = built_model(path)
    before = [v.numpy().copy() for v in model.variables]
    evaluator = Evaluator(path, detector=True, max_images=2)
    curve = AnytimeCurve(StageFiles(tmp_path / "stage"), every=2, evaluate=evaluator, step_offset=10, start=0)
    point = curve.evaluate_now(2, model)
    assert point["step"] == 2 and 0.0 <= point["mAP@0.5"] <= 1.0 and curve.eval_cpu > 0
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables, strict=True))
    assert (tmp_path / "stage" / "eval").is_dir()  # TensorBoard scalars at step_offset + step


@pytest.mark.slow
def test_a_stage_with_periodic_evaluation_keeps_its_checkpoints_and_records_a_curve(tmp_path, compose_config):
    spec = spec_of(compose_config, "s2_fast_rcnn", [])
    spec = dataclasses.replace(spec, proposals="self")  # no proposer stage in this test
    run = stage_run(tmp_path, spec, steps=6, checkpoint_every=3)
    evaluator = Evaluator(run.pipeline_path, detector=True, max_images=2)
    metrics = runner.train_stage(dataclasses.replace(run, evaluate=evaluator, eval_every=2))
    assert [p["step"] for p in metrics["curve"]] == [2, 4]
    cpu = [p["train_cpu_seconds"] for p in metrics["curve"]]
    assert 0 < cpu[0] < cpu[1] < metrics["train_cpu_seconds"]
    assert metrics["eval_cpu_seconds"] > 0
    names = sorted(p.name for p in run.checkpoint_dir.glob("ckpt-*.index"))
    assert names == ["ckpt-3.index", "ckpt-6.index"]  # evaluation wrote no checkpoint of its own
