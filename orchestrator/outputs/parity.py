"""ONNX against SavedModel: the same detections on the val images, or the export fails.

Detections are matched, not compared by index: NMS may order near-equal scores differently in
two runtimes (measured on an untrained tiny export: the order changed after rank ~50 while every
detection still had its twin). Every reference detection at or above the score threshold needs a
candidate detection of the same class with IoU >= ``iou_min`` and a score within ``score_tol``;
then the same the other way round. When the candidate used all its slots (the exporter's maximum
detections), a reference detection within ``score_tol`` of the candidate's lowest score may have
been cut off by a near-tie and needs no twin (measured: 4 of 1,200 detections at threshold 0).
Likewise NMS between two near-tied boxes: when the candidate holds a same-class detection within
``score_tol`` of a reference detection that overlaps it beyond the detector's NMS IoU threshold,
which of the two NMS keeps is decided by float noise, so the reference detection needs no twin
(measured on TF 2.21: 15 of 1,079 detections at threshold 0, all of one class in one image, scores
0.189-0.193, each overlapping such a near-tie by IoU 0.65-0.71 against NMS's 0.6). The figures go
to ``export/parity.json``; a mismatch raises :class:`ParityError` naming the worst case.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from orchestrator.engine.evaluate import box_iou
from orchestrator.outputs.detectors import Detections, Detector

IOU_MIN = 0.98
SCORE_TOL = 0.01
NMS_IOU_SLACK = 1.0 - IOU_MIN  # twins may differ by this much IoU, so overlaps by about as much


@dataclass(frozen=True)
class Miss:
    """A detection of ``side`` without a twin in the other runtime's output."""

    image: str
    side: str  # which runtime had it: "saved_model" or "onnx"
    class_id: int
    score: float
    best_iou: float  # best IoU with a same-class detection of the other side (0: none)
    score_diff: float  # |score difference| to that detection (inf: none)

    def shortfall(self) -> float:
        """How far from passing, for naming the worst case (IoU gap plus score excess)."""
        return max(0.0, IOU_MIN - self.best_iou) + max(0.0, self.score_diff - SCORE_TOL)


def nms_near_tie(iou: np.ndarray, diffs: np.ndarray, same: np.ndarray, nms_iou: float | None) -> bool:
    """A same-class candidate within the score tolerance overlaps beyond NMS's IoU: either may win."""
    if nms_iou is None:
        return False
    return bool((same & (diffs <= SCORE_TOL) & (iou >= nms_iou - NMS_IOU_SLACK)).any())


def unmatched(
    reference: Detections,
    candidate: Detections,
    threshold: float,
    image: str,
    side: str,
    nms_iou: float | None = None,
) -> tuple[int, list[Miss], float, float, int]:
    """Reference detections >= threshold without a same-class twin in ``candidate``.

    ``nms_iou``: the detector's NMS IoU threshold (None: no near-tie exemption). Returns
    (checked, misses, worst IoU of the matched, worst score difference of the matched, NMS
    near-ties exempted).
    """
    keep = reference.scores >= threshold
    if candidate.full():  # a tie at the candidate's cut-off may drop a twin: not a mismatch
        keep &= reference.scores > candidate.scores.min() + SCORE_TOL
    checked, misses, worst_iou, worst_diff, ties = int(keep.sum()), [], 1.0, 0.0, 0
    ious = box_iou(reference.boxes[keep], candidate.boxes) if len(candidate.scores) else None
    for i, (cls, score) in enumerate(zip(reference.classes[keep], reference.scores[keep], strict=True)):
        same = candidate.classes == cls
        if ious is None or not same.any():
            misses.append(Miss(image, side, int(cls), float(score), 0.0, float("inf")))
            continue
        iou = np.where(same, ious[i], 0.0)
        close = iou >= IOU_MIN
        diffs = np.abs(candidate.scores - score)
        j = int(np.argmin(np.where(close, diffs, np.inf))) if close.any() else int(np.argmax(iou))
        if iou[j] < IOU_MIN or diffs[j] > SCORE_TOL:
            if nms_near_tie(ious[i], diffs, same, nms_iou):
                ties += 1
                continue
            misses.append(Miss(image, side, int(cls), float(score), float(iou[j]), float(diffs[j])))
        else:
            worst_iou, worst_diff = min(worst_iou, float(iou[j])), max(worst_diff, float(diffs[j]))
    return checked, misses, worst_iou, worst_diff, ties


class ParityError(RuntimeError):
    """The ONNX model does not detect what the SavedModel detects (not the user's input: ours)."""


def check(
    saved_model: Detector,
    onnx: Detector,
    images: Iterable[tuple[str, np.ndarray]],
    threshold: float,
    nms_iou: float | None = None,
) -> dict:
    """Both runtimes on every image, matched both ways; the figures parity.json records."""
    checked, misses, worst_iou, worst_diff, count, ties = 0, [], 1.0, 0.0, 0, 0
    for name, image in images:
        a, b = saved_model(image), onnx(image)
        count += 1
        for ref, cand, side in ((a, b, "saved_model"), (b, a, "onnx")):
            n, miss, iou, diff, tied = unmatched(ref, cand, threshold, name, side, nms_iou)
            checked, worst_iou, worst_diff = checked + n, min(worst_iou, iou), max(worst_diff, diff)
            ties += tied
            misses += miss
    worst = max(misses, key=Miss.shortfall) if misses else None
    return {
        "passed": not misses,
        "images": count,
        "score_threshold": threshold,
        "iou_min": IOU_MIN,
        "score_tolerance": SCORE_TOL,
        "nms_iou": nms_iou,
        "detections_checked": checked,
        "matched_worst_iou": worst_iou,
        "matched_worst_score_diff": worst_diff,
        "mismatches": len(misses),
        "nms_near_ties": ties,
        "worst": asdict(worst) if worst else None,
    }


def write_and_raise(figures: dict, path: Path, model: str) -> None:
    """Record the figures (passed or not); a failed check stops the export naming its worst case."""
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded[model] = figures
    path.write_text(json.dumps(recorded, indent=1))
    if not figures["passed"]:
        w = figures["worst"]
        raise ParityError(
            f"ONNX parity failed for {model}: {figures['mismatches']} detections without a twin; worst: "
            f"{w['side']} detection of class {w['class_id']} (score {w['score']:.3f}) in {w['image']}, best "
            f"same-class IoU {w['best_iou']:.3f} (need >= {IOU_MIN}), score difference {w['score_diff']:.3f} "
            f"(need <= {SCORE_TOL}); figures in {path}"
        )
