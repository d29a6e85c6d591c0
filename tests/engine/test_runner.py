"""The stage runner on the tiny model: audit, resume, NaN guard, per-group restores."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.engine import runner
from orchestrator.engine.audit import AuditError
from orchestrator.odapi import restore
from orchestrator.odapi.tiny_extractor import build_backbone
from stages.groups import ModuleGroups, pin_batch_norm, resolve_groups
from stages.spec import GROUPS
from tests.helpers import built_model, spec_of, stage_run, tiny_pipeline

pytestmark = pytest.mark.slow


def test_unfreezing_one_batchnorm_layer_fails_the_audit(tmp_path, compose_config, monkeypatch):
    spec = spec_of(compose_config, "s4_detector_head")  # shared + rpn frozen, second stage runs
    original = ModuleGroups.set_trainable

    def leaky(self, trained):
        original(self, trained)
        shared = self.modules["shared"][0]
        shared.trainable = True  # Keras: a frozen parent would override its children
        for layer in shared.layers:
            layer.trainable = layer.name == "block1_bn"  # one BN layer un-frozen: its stats move
            if layer.trainable:
                pin_batch_norm(layer, frozen=False)  # ... and back in training mode, as if never frozen

    monkeypatch.setattr(ModuleGroups, "set_trainable", leaky)
    run = stage_run(tmp_path, spec, steps=2)
    with pytest.raises(AuditError, match="block1_bn/moving_mean"):
        runner.train_stage(run)
    assert not (run.directory / "metrics.json").exists()


def test_interrupted_stage_resumes_from_its_last_checkpoint(tmp_path, compose_config, monkeypatch):
    spec = spec_of(compose_config, "s3_rpn_shared")
    run = stage_run(tmp_path, spec, steps=6)
    real_check = runner._check_finite

    def crash_at_5(run_, step, losses, manager):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")
        real_check(run_, step, losses, manager)

    monkeypatch.setattr(runner, "_check_finite", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        runner.train_stage(run)
    assert tf.train.latest_checkpoint(str(run.checkpoint_dir)).endswith("ckpt-4")
    monkeypatch.setattr(runner, "_check_finite", real_check)
    metrics = runner.train_stage(run)
    assert metrics["resumed_from_step"] == 4 and metrics["steps"] == 6
    assert set(metrics["init"].values()) == {f"resume {run.checkpoint_dir}/ckpt-4"}
    assert metrics["frozen_audit"]["passed"] and metrics["frozen_audit"]["variables_checked"] == 24


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, compose_config):
    spec = spec_of(compose_config, "end_to_end")
    good = stage_run(tmp_path, spec, steps=2)
    runner.train_stage(good)
    nan_spec = dataclasses.replace(
        spec, loss_weights=dataclasses.replace(spec.loss_weights, rpn_objectness=float("nan"))
    )
    bad = stage_run(tmp_path, nan_spec, steps=4)
    with pytest.raises(runner.NonFiniteLoss, match="non-finite loss at step 3.*ckpt-2"):
        runner.train_stage(bad)
    assert tf.train.latest_checkpoint(str(bad.checkpoint_dir)).endswith("ckpt-2")


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_detection_checkpoint_with_other_class_count_restores_all_but_the_class_head(tmp_path):
    _, other_path = tiny_pipeline(tmp_path / "other", num_classes=5)
    _, source_model, _ = built_model(other_path)
    source = tf.train.Checkpoint(model=source_model).write(str(tmp_path / "five_classes"))
    source_groups = resolve_groups(source_model)
    _, path = tiny_pipeline(tmp_path / "mine")
    _, model, _ = built_model(path)
    groups = resolve_groups(model)
    report = restore.initialize(model, groups, {g: restore.Source("coco", source) for g in GROUPS})
    for group in ("shared", "rpn", "detector_features"):
        for a, b in zip(
            _values(groups.variables[group]), _values(source_groups.variables[group]), strict=True
        ):
            assert np.array_equal(a, b)
        assert report[group] == f"coco ({source})"
    box_mine = model._mask_rcnn_box_predictor._box_prediction_head.variables
    box_src = source_model._mask_rcnn_box_predictor._box_prediction_head.variables
    assert all(np.array_equal(a, b) for a, b in zip(_values(box_mine), _values(box_src), strict=True))
    assert (
        "class predictor fresh" in report["detector_head"]
        and "box predictor from coco" in report["detector_head"]
    )
    cls = model._mask_rcnn_box_predictor._class_prediction_head.variables
    assert cls[0].shape[-1] == 4  # 3 classes + background, fresh


def test_user_classification_backbone_initialises_only_the_groups_that_ask(tmp_path):
    backbone = build_backbone(train_batch_norm=True)
    for v in backbone.variables:
        v.assign(tf.random.normal(v.shape, seed=1))
    path = tf.train.Checkpoint(feature_extractor=backbone).write(str(tmp_path / "imagenet_like"))
    _, pipeline = tiny_pipeline(tmp_path)
    _, model, _ = built_model(pipeline)
    groups = resolve_groups(model)
    before = _values(groups.variables["detector_features"])
    sources = {g: restore.Source("fresh") for g in GROUPS} | {"shared": restore.Source("backbone", path)}
    report = restore.initialize(model, groups, sources)
    expected = {v.name.split("/")[0] + "/" + v.name.split("/")[1]: v.numpy() for v in backbone.variables}
    for v in groups.variables["shared"]:
        key = "/".join(v.name.split("/")[:2])
        assert np.array_equal(v.numpy(), expected[key]), v.name
    assert all(
        np.array_equal(a, b)
        for a, b in zip(before, _values(groups.variables["detector_features"]), strict=True)
    )
    assert report["shared"].startswith("backbone (") and "classification" in report["shared"]
    assert report["rpn"] == "fresh (random init)"


def test_a_checkpoint_that_does_not_fit_names_what_is_missing(tmp_path):
    other = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    path = tf.train.Checkpoint(feature_extractor=other).write(str(tmp_path / "wrong"))
    _, pipeline = tiny_pipeline(tmp_path)
    _, model, _ = built_model(pipeline)
    groups = resolve_groups(model)
    with pytest.raises(restore.RestoreError, match="cannot restore the classification backbone from .*wrong"):
        restore.initialize(model, groups, {"shared": restore.Source("backbone", path)})
    bogus = tmp_path / "not_a_checkpoint"
    bogus.write_text("hello")
    with pytest.raises(
        restore.RestoreError, match="backbone.checkpoint=.*not_a_checkpoint: not a TensorFlow checkpoint"
    ):
        restore.Source("backbone", str(bogus)).kind()


def test_metrics_record_group_counts_and_audit(tmp_path, compose_config):
    spec = spec_of(compose_config, "s1_rpn")
    metrics = runner.train_stage(stage_run(tmp_path, spec, steps=2))
    saved = json.loads((tmp_path / "stage" / "metrics.json").read_text())
    assert saved["variables"]["detector_head"] == {"trained": 0, "total": 4}
    assert saved["variables"]["rpn"] == {"trained": 6, "total": 6}
    assert metrics["frozen_audit"]["frozen_groups"] == ["detector_features", "detector_head"]
