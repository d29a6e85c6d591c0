"""The inner training step: tape, gradients of the trained variables only, apply.

Everything around it (checkpoints, summaries, evaluation) lives in :mod:`orchestrator.engine.runner`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from orchestrator.engine.cache_input import cached_entries
from orchestrator.engine.cache_keys import CACHE_KEY
from orchestrator.odapi import fields, proposals
from orchestrator.odapi.builder import provide_groundtruth


def compute_losses(model, predict: proposals.PredictFn, features, labels, first_stage_only: bool) -> dict:
    """Loss dict with ``Loss/total_loss`` (losses + regularisation of trained variables)."""
    provide_groundtruth(model, labels)
    images = features[fields.InputDataFields.image]
    true_shapes = features[fields.InputDataFields.true_image_shape]
    given = {}
    if cached := cached_entries(features):  # a batch of cache rows (its image: zeros of its shape)
        given["cached"] = cached
    elif (keys := features.get(CACHE_KEY)) is not None:  # cache.mode=force: which entry each image reads
        given["keys"] = keys
    prediction = predict(images, true_shapes, **given)
    losses = proposals.loss(model, prediction, true_shapes, first_stage_only)
    regularization = [r for r in model.regularization_losses() if r is not None]
    if regularization:
        losses["Loss/regularization_loss"] = tf.add_n(regularization)
    losses["Loss/total_loss"] = tf.add_n(list(losses.values()))
    return losses


def make_train_step(
    model,
    optimizer,
    predict: proposals.PredictFn,
    first_stage_only: bool,
    clip_norm: float | None,
    num_replicas: int = 1,
) -> Callable:
    """A per-replica step: only ``model.trainable_variables`` (frozen groups excluded) get gradients."""

    def step(features, labels):
        # As model_lib_v2.eager_train_step: BatchNorm of trained groups runs in training mode.
        tf.keras.backend.set_learning_phase(True)
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            losses = compute_losses(model, predict, features, labels, first_stage_only)
            scaled = losses["Loss/total_loss"] / num_replicas
        gradients = tape.gradient(scaled, variables)
        if clip_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
        optimizer.apply_gradients(zip(gradients, variables, strict=False))
        return losses

    return step
