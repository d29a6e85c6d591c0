"""Stage 2 on cached proposals trains exactly as on the live frozen proposer (real tiny stages)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.engine import cache as cache_lib
from orchestrator.engine.runner import Proposer, build_frozen_proposer
from orchestrator.engine.step import compute_losses
from orchestrator.layout import StageFiles
from orchestrator.odapi import builder, fields, proposals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage_two(alternating_run):
    """Stage 2's detector (its final weights), its frozen proposer, and the proposals cache."""
    run_dir, _ = alternating_run
    s1, s2 = (
        StageFiles(run_dir / "alternating" / "s1_rpn"),
        StageFiles(run_dir / "alternating" / "s2_fast_rcnn"),
    )
    configs = builder.load_configs(s2.pipeline)
    tf.keras.backend.clear_session()
    detector = builder.build_model(configs, is_training=True)
    data = iter(builder.train_dataset(configs, detector))
    first = next(data)
    builder.ensure_built(detector, *first)
    tf.train.Checkpoint(model=detector).restore(
        str(s2.directory / s2.read_done().checkpoint)
    ).expect_partial()
    proposer = Proposer("s1_rpn", s2.proposer, str(s1.directory / s1.read_done().checkpoint))
    proposer_model, _ = build_frozen_proposer(proposer, *first)
    cached = cache_lib.build_proposal_cache("s2_fast_rcnn", proposer_model, configs, (False, True))
    return detector, proposer_model, cached, data


def test_the_cache_holds_every_training_image_in_both_flips(stage_two, alternating_run):
    _, _, cached, _ = stage_two
    run_dir, _ = alternating_run
    images = len(list(tf.data.TFRecordDataset(_train_files(run_dir))))
    assert len(cached.keys) == 2 * images == len(np.unique(cached.keys))
    assert cached.boxes.shape == (2 * images, 100, 4) and (cached.num > 0).all()


def test_cached_proposals_equal_the_live_proposers_on_shuffled_flipped_batches(stage_two):
    detector, proposer, cached, data = stage_two
    lookup = cache_lib.ProposalLookup(cached)
    for _ in range(3):  # 12 images drawn with random flips: both flip states, but for 2^-11
        features, _ = next(data)
        images = features[fields.InputDataFields.image]
        live = proposals.proposer_nms(proposer, images, features[fields.InputDataFields.true_image_shape])
        for got, want in zip(lookup(images), live, strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


def test_a_batch_on_cached_proposals_has_the_live_losses_and_gradients(stage_two):
    detector, proposer, cached, data = stage_two
    features, labels = next(data)
    lookup = cache_lib.ProposalLookup(cached)
    live = _losses_and_gradients(
        detector, proposals.frozen_proposer_predict(detector, proposer), features, labels
    )
    replayed = _losses_and_gradients(
        detector, proposals.cached_proposals_predict(detector, lookup), features, labels
    )
    assert live[0].keys() == replayed[0].keys()
    assert live[0]["Loss/BoxClassifierLoss/classification_loss"] > 0
    for key, value in live[0].items():
        np.testing.assert_allclose(replayed[0][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    trained = [i for i, g in enumerate(live[1]) if g is not None]
    assert trained and [i for i, g in enumerate(replayed[1]) if g is not None] == trained
    for i in trained:
        np.testing.assert_allclose(replayed[1][i], live[1][i], rtol=1e-4, atol=1e-6)


def test_an_image_not_in_the_cache_stops_the_step(stage_two):
    _, _, cached, data = stage_two
    features, _ = next(data)
    lookup = cache_lib.ProposalLookup(cached)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in the proposal cache"):
        lookup(features[fields.InputDataFields.image] + 1.0)


def test_the_chains_stage_two_trained_on_its_cache(alternating_run):
    run_dir, _ = alternating_run
    metrics = json.loads((run_dir / "alternating" / "s2_fast_rcnn" / "metrics.json").read_text())
    images = len(list(tf.data.TFRecordDataset(_train_files(run_dir))))
    assert metrics["cache"]["entries"] == 2 * images and metrics["cache"]["place"] == "memory"
    assert metrics["proposer_audit"]["passed"] and metrics["frozen_audit"]["passed"]
    assert metrics["train_cpu_seconds"] >= metrics["cache"]["build_cpu_seconds"] > 0


def _losses_and_gradients(model, predict, features, labels) -> tuple[dict, list]:
    """Eagerly, from the same random seed: the k-th random op (minibatch sampling) draws alike."""
    tf.random.set_seed(7)
    tf.keras.backend.set_learning_phase(True)
    with tf.GradientTape() as tape:
        losses = compute_losses(model, predict, features, labels, first_stage_only=False)
    gradients = tape.gradient(losses["Loss/total_loss"], model.trainable_variables)
    return (
        {k: float(v) for k, v in losses.items()},
        [None if g is None else tf.convert_to_tensor(g).numpy() for g in gradients],
    )


def _train_files(run_dir) -> list[str]:
    configs = builder.load_configs(run_dir / "alternating" / "s2_fast_rcnn" / "pipeline.config")
    return list(configs["train_input_config"].tf_record_input_reader.input_path)
