"""How a stage produces the proposals its second stage trains on: the meta-arch extension.

``FasterRCNNMetaArch.predict`` is ``_predict_first_stage`` then ``_predict_second_stage``. We
call those two halves ourselves ("Stages" in ``docs/architecture.md``) to get three behaviours
without editing the package, all in this one module:

* ``own`` - stock ``predict`` (end_to_end, stage 4, ``proposals: self``);
* ``rpn only`` - the first stage alone: RPN-only stages skip the second stage entirely while the
  model (and so its checkpoint) keeps both stages;
* ``frozen proposer`` - a second, fully frozen ``FasterRCNNMetaArch`` (the paper's stage-1
  network) produces RPN box encodings, objectness and anchors; the trained detector crops its
  *own* features with them and keeps the OD API's own NMS-then-minibatch sampling and losses.
  The proposer's NMS function (its top-k and IoU) replaces the detector's while it runs;
* ``cached`` - frozen parts' outputs computed once per image (``orchestrator/engine/cache.py``)
  and replayed: shared features in place of the shared convs' call, and an NMS output
  (:func:`first_stage_nms`) in place of the NMS. Everything after them (minibatch sampling,
  cropping, the detector, the RPN head of stage 3, the losses) stays stock.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import tensorflow as tf

PredictFn = Callable[[tf.Tensor, tf.Tensor], dict]
EVAL_PROPOSALS = 300  # RPN proposals kept per image at evaluation, as the paper tests


@contextlib.contextmanager
def swapped(obj, attr: str, value) -> Iterator[None]:
    """Temporarily replace ``obj.attr`` (used at trace time, inside a ``tf.function``).

    A method (not in the instance's ``__dict__``) is shadowed and then un-shadowed, so nothing
    is left behind on the instance.
    """
    own = attr in vars(obj)
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        if own:
            setattr(obj, attr, old)
        else:
            delattr(obj, attr)


def keeping(model, count: int):
    """``model``'s first-stage NMS keeping ``count`` proposals (a context, at trace time).

    The OD API builds that NMS as a ``functools.partial`` whose sizes come from
    ``first_stage_max_proposals``; its thresholds stay as configured.
    """
    nms = functools.partial(model._first_stage_nms_fn, max_size_per_class=count, max_total_size=count)
    return swapped(model, "_first_stage_nms_fn", nms)


def as_inference(model):
    """``model``'s first stage as an inference model runs it, whatever it was built for (a
    context, at trace time): anchors clipped to the image (training removes those that cross
    its border instead, so a training model proposes from other anchors) and no minibatch
    sampling after the NMS."""
    return swapped(model, "_is_training", False)


def own_predict(model) -> PredictFn:
    return lambda images, true_shapes: model.predict(images, true_shapes)


def rpn_only_predict(model) -> PredictFn:
    def predict(images, true_shapes):
        return model._predict_first_stage(images)

    return predict


def loss(model, prediction_dict: dict, true_shapes: tf.Tensor, first_stage_only: bool) -> dict:
    """``model.loss``; RPN losses only when the second stage was skipped."""
    if not first_stage_only:
        return model.loss(prediction_dict, true_shapes)
    with swapped(model, "_number_of_stages", 1):
        return model.loss(prediction_dict, true_shapes)


def features_to_crop(model, images: tf.Tensor) -> list:
    """The shared convs' output (``rpn_features_to_crop``) as a list of feature levels."""
    features, _ = model._extract_proposal_features(images)
    return features if isinstance(features, list) else [features]


def proposer_first_stage(proposer, images: tf.Tensor) -> dict:
    """The frozen proposer's RPN outputs for a batch (box encodings, objectness, anchors)."""
    out = proposer._predict_first_stage(images)
    return {
        "rpn_box_encodings": out["rpn_box_encodings"],
        "rpn_objectness_predictions_with_background": out["rpn_objectness_predictions_with_background"],
        "anchors": out["anchors"],
    }


def frozen_proposer_predict(detector, proposer) -> PredictFn:
    """Detector second stage on the proposer's RPN outputs (paper step 2)."""

    def predict(images, true_shapes):
        rpn = proposer_first_stage(proposer, images)
        features = features_to_crop(detector, images)
        return _second_stage(detector, rpn, features, images, true_shapes, proposer._first_stage_nms_fn)

    return predict


def _second_stage(model, rpn: dict, features: list, images, true_shapes, nms_fn) -> dict:
    """``model``'s second stage on ``rpn`` outputs and ``features``, with ``nms_fn`` as its NMS."""
    image_shape = tf.shape(images)
    with swapped(model, "_first_stage_nms_fn", nms_fn):
        second = model._predict_second_stage(
            rpn["rpn_box_encodings"],
            rpn["rpn_objectness_predictions_with_background"],
            features,
            rpn["anchors"],
            image_shape,
            true_shapes,
        )
    prediction = dict(rpn, image_shape=image_shape, rpn_features_to_crop=features)
    prediction.update(second)
    return prediction


def first_stage_nms(model, rpn: dict, images: tf.Tensor, true_shapes: tf.Tensor) -> tuple:
    """(boxes, scores, num): the NMS output of ``model``'s first stage on ``rpn`` outputs.

    Exactly what the detector's NMS step hands on: ``model``'s own ``_postprocess_rpn``
    decodes, clips and suppresses as in :func:`frozen_proposer_predict`; the NMS call is
    recorded, and ``_is_training`` is off for the call so the minibatch sampling after it
    (which needs groundtruth) does not run. Boxes are in absolute coordinates of the resized
    image, as the NMS returns them.
    """
    nms, seen = model._first_stage_nms_fn, {}

    def recording(*args, **kwargs):
        seen["out"] = nms(*args, **kwargs)
        return seen["out"]

    with swapped(model, "_first_stage_nms_fn", recording), swapped(model, "_is_training", False):
        model._postprocess_rpn(
            rpn["rpn_box_encodings"],
            rpn["rpn_objectness_predictions_with_background"],
            rpn["anchors"],
            model._image_batch_shape_2d(tf.shape(images)),
            true_shapes,
        )
    boxes, scores, _, _, _, num = seen["out"]
    return boxes, scores, num


def cached_predict(model, lookup: Callable[..., dict] | None, first_stage_only: bool) -> PredictFn:
    """The stage's prediction with its frozen parts' outputs: ``cached``, when the batch carries
    them (``orchestrator/engine/cache_input.py``), else from ``lookup(images, keys)`` (``keys``:
    the record-and-flip keys of ``cache.mode=force``; None: the images' own).

    ``features/<level>``: the shared convs' output, in place of calling them (stages 3, 4).
    ``proposals/*``: an NMS output, replayed in place of the NMS (stage 2: the frozen
    proposer's; stage 4: the stage's own frozen RPN's). The RPN fields of such a prediction
    are one placeholder anchor: those stages' RPN loss weights are 0 (:mod:`stages.cache`
    refuses otherwise), so their RPN loss is exactly 0 either way. Cached features without
    cached proposals (frozen shared convs, an RPN that trains) run the stock ``predict``.
    """

    def predict(images, true_shapes, keys=None, cached=None):
        cached = cached or lookup(images, keys)
        levels = sorted((k for k in cached if k.startswith("features/")), key=lambda k: int(k.split("/")[1]))
        features = [cached[k] for k in levels] or None
        if "proposals/boxes" not in cached:
            with swapped(model, "_extract_proposal_features", lambda _images: (features, {})):
                if first_stage_only:
                    return model._predict_first_stage(images)
                return model.predict(images, true_shapes)
        batch = tf.shape(images)[0]
        rpn = {
            "rpn_box_encodings": tf.zeros([batch, 1, 4]),
            "rpn_objectness_predictions_with_background": tf.zeros([batch, 1, 2]),
            "anchors": tf.constant([[0.0, 0.0, 1.0, 1.0]]),
        }
        boxes, scores, num = (cached[f"proposals/{k}"] for k in ("boxes", "scores", "num"))

        def replay(*_args, **_kwargs):
            return boxes, scores, tf.zeros_like(scores), None, {}, num

        return _second_stage(
            model, rpn, features or features_to_crop(model, images), images, true_shapes, replay
        )

    return predict
