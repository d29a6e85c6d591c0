"""Evaluation on the val split: COCO mAP (the OD API's COCO evaluator) and proposal recall.

Detector stages and ``end_to_end`` report ``mAP``, ``mAP@0.5`` and the recall of their RPN's
proposals; RPN stages report proposal recall only (``AR@100``, ``recall@300_iou0.5``,
``recall@300_iou0.7``). Evaluation keeps 300 RPN proposals per image, as the paper does at
test time.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.engine import interrupts
from orchestrator.engine.cache import CacheLookup, FrozenCache
from orchestrator.layout import StageFiles
from orchestrator.odapi import builder, fields, label_map_util, proposals
from orchestrator.odapi.proposals import EVAL_PROPOSALS

log = logging.getLogger(__name__)
IOUS = np.arange(0.5, 0.951, 0.05)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of [N,4] and [M,4] boxes (ymin, xmin, ymax, xmax)."""
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def best_ious(proposals: np.ndarray, groundtruth: np.ndarray, k: int) -> np.ndarray:
    """For each ground-truth box, its best IoU with the top-``k`` proposals."""
    if len(groundtruth) == 0:
        return np.zeros(0)
    if len(proposals) == 0:
        return np.zeros(len(groundtruth))
    return box_iou(groundtruth, proposals[:k]).max(axis=1)


def proposal_recall(per_image: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """AR@100 (mean recall over IoU 0.5:0.95) and recall@300 at IoU 0.5 / 0.7."""
    b100 = np.concatenate([best_ious(p, g, 100) for p, g in per_image] or [np.zeros(0)])
    b300 = np.concatenate([best_ious(p, g, 300) for p, g in per_image] or [np.zeros(0)])
    if b100.size == 0:
        return {"AR@100": 0.0, "recall@300_iou0.5": 0.0, "recall@300_iou0.7": 0.0}
    return {
        "AR@100": float(np.mean([(b100 >= t).mean() for t in IOUS])),
        "recall@300_iou0.5": float((b300 >= 0.5).mean()),
        "recall@300_iou0.7": float((b300 >= 0.7).mean()),
    }


def _coco_evaluator(label_map: str):
    from object_detection.metrics import coco_evaluation

    categories = label_map_util.create_categories_from_labelmap(label_map)
    return coco_evaluation.CocoDetectionEvaluator(categories)


def load_for_eval(pipeline_path: Path, checkpoint: str | None = None):
    """Inference-mode model keeping 300 proposals; restored from ``checkpoint`` when given.

    The restore is deferred until the model's variables exist (its first call).
    """
    configs = builder.load_configs(pipeline_path)
    configs["model"].faster_rcnn.first_stage_max_proposals = EVAL_PROPOSALS
    model = builder.build_model(configs, is_training=False)
    if checkpoint is not None:
        tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return configs, model


@dataclass
class ValProposals:
    """A proposer stage's val proposals, computed once with its training cache.

    The runner fills ``cache`` while its frozen proposer exists to build the training cache
    (or finds both complete on disk: then no proposer is built at all); the stage's
    :class:`Evaluator`, built later, then replays them instead of building the proposer again.
    Left empty (caching off or refused), the evaluator runs the proposer live.
    """

    cache: FrozenCache | None = None


class EvaluationStopped(Exception):
    """A stop was requested while the training loop evaluated: the loop saves and stops."""


class Evaluator:
    """Evaluates checkpoints of one stage on its val split; builds model and input once.

    Periodic evaluation during training calls it many times: the inference model, the traced
    inference function and the input pipeline are built on the first call only, and each call
    restores the given checkpoint's weights into the same model.

    ``proposer`` (pipeline.config, checkpoint): a stage trained on a frozen network's
    proposals (paper step 2) is evaluated on that network's proposals too: replayed from
    ``val_proposals`` when they were computed with the training cache, else from the network.
    """

    def __init__(
        self,
        pipeline_path: Path,
        detector: bool,
        max_images: int | None = None,
        proposer: tuple[Path, str] | None = None,
        val_proposals: ValProposals | None = None,
    ) -> None:
        tf.keras.backend.set_learning_phase(False)
        self.configs, self.model = load_for_eval(pipeline_path)
        predict, self.proposals = proposals.own_predict(self.model), "own"
        if proposer is not None and val_proposals is not None and val_proposals.cache is not None:
            lookup = CacheLookup(val_proposals.cache)
            predict, self.proposals = (
                proposals.cached_predict(self.model, lookup, first_stage_only=False),
                "cached",
            )
        elif proposer is not None:
            predict = proposals.frozen_proposer_predict(self.model, load_for_eval(*proposer)[1])
            self.proposals = "proposer"
        self.detector, self.label_map = detector, self.configs["eval_input_configs"][0].label_map_path
        dataset = builder.eval_dataset(self.configs, self.model)
        self.dataset = dataset.take(max_images) if max_images else dataset
        model = self.model

        @tf.function
        def infer(images, true_shapes):
            prediction = predict(images, true_shapes)
            detections = model.postprocess(prediction, true_shapes)
            return prediction["proposal_boxes_normalized"], prediction["num_proposals"], detections

        self._infer = infer

    def __call__(self, checkpoint: str) -> dict:
        """Metrics of ``checkpoint``: proposal recall, and COCO mAP for detector stages."""
        tf.keras.backend.set_learning_phase(False)
        tf.train.Checkpoint(model=self.model).restore(checkpoint).expect_partial()
        coco = _coco_evaluator(self.label_map) if self.detector else None
        recall_inputs = []
        batches = tqdm(self.dataset, desc="eval", unit="img", mininterval=2.0, leave=False)
        for index, (features, labels) in enumerate(batches):
            if interrupts.requested():  # periodic evaluation inside the training loop
                raise EvaluationStopped()
            boxes, count, detections = self._infer(
                features[fields.InputDataFields.image], features[fields.InputDataFields.true_image_shape]
            )
            gt = _groundtruth(labels)
            recall_inputs.append((boxes[0, : int(count[0])].numpy(), gt["boxes"]))
            if coco is not None:
                _add_to_coco(coco, index, gt, detections, features)
        metrics = proposal_recall(recall_inputs)
        if coco is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its whole table
                coco_metrics = coco.evaluate()
            metrics["mAP"] = float(coco_metrics["DetectionBoxes_Precision/mAP"])
            metrics["mAP@0.5"] = float(coco_metrics["DetectionBoxes_Precision/mAP@.50IOU"])
        metrics["eval_images"] = len(recall_inputs)
        metrics["eval_proposals"] = self.proposals  # own RPN, a live frozen proposer, or cached
        return metrics


def _groundtruth(labels: dict) -> dict:
    n = int(labels[fields.InputDataFields.num_groundtruth_boxes][0])
    boxes = labels[fields.InputDataFields.groundtruth_boxes][0, :n].numpy()
    classes = np.argmax(labels[fields.InputDataFields.groundtruth_classes][0, :n].numpy(), axis=1) + 1
    return {"boxes": boxes, "classes": classes}


def _add_to_coco(coco, image_id: int, gt: dict, detections: dict, features: dict) -> None:
    height, width = features[fields.InputDataFields.original_image_spatial_shape][0].numpy()
    scale = np.array([height, width, height, width], dtype=np.float32)
    coco.add_single_ground_truth_image_info(
        image_id,
        {
            fields.InputDataFields.groundtruth_boxes: gt["boxes"] * scale,
            fields.InputDataFields.groundtruth_classes: gt["classes"],
        },
    )
    n = int(detections["num_detections"][0])
    coco.add_single_detected_image_info(
        image_id,
        {
            fields.DetectionResultFields.detection_boxes: detections["detection_boxes"][0, :n].numpy()
            * scale,
            fields.DetectionResultFields.detection_scores: detections["detection_scores"][0, :n].numpy(),
            fields.DetectionResultFields.detection_classes: detections["detection_classes"][0, :n]
            .numpy()
            .astype(np.int64)
            + 1,
        },
    )


def write_eval_summaries(directory: Path, metrics: dict, step: int) -> None:
    """Scalars under ``<stage>/eval`` for TensorBoard."""
    writer = tf.summary.create_file_writer(str(StageFiles(directory).eval_events))
    with writer.as_default():
        for key, value in metrics.items():
            if isinstance(value, float):
                tf.summary.scalar(f"eval/{key}", value, step=step)
    writer.flush()
