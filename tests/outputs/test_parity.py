"""The ONNX parity rule on hand-made detections: matched by class and IoU, not by position."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.outputs import parity
from orchestrator.outputs.detectors import Detections


def dets(*rows: tuple[int, float, tuple[float, float, float, float]]) -> Detections:
    return Detections(
        boxes=np.array([r[2] for r in rows], dtype=np.float32).reshape(-1, 4),
        classes=np.array([r[0] for r in rows], dtype=np.int64),
        scores=np.array([r[1] for r in rows], dtype=np.float32),
    )


A = dets((1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9)), (1, 0.2, (0.0, 0.0, 0.2, 0.2)))


def run(reference: Detections, candidate: Detections, threshold: float = 0.3, nms_iou=None) -> dict:
    return parity.check(lambda _: reference, lambda _: candidate, [("img.png", None)], threshold, nms_iou)


def test_the_same_detections_in_another_order_pass():
    reordered = dets(
        (2, 0.8, (0.5, 0.5, 0.9, 0.9)), (1, 0.9, (0.1, 0.1, 0.5, 0.5)), (1, 0.2, (0.0, 0.0, 0.2, 0.2))
    )
    figures = run(A, reordered)
    assert figures["passed"] and figures["mismatches"] == 0
    assert figures["detections_checked"] == 4  # two above 0.3 on each side
    assert figures["matched_worst_iou"] == pytest.approx(1.0)


def test_a_moved_box_fails_on_iou_and_names_its_class():
    moved = dets((1, 0.9, (0.12, 0.1, 0.52, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9)))
    figures = run(A, moved)
    assert not figures["passed"]
    worst = figures["worst"]
    assert worst["class_id"] == 1 and 0.85 < worst["best_iou"] < parity.IOU_MIN


def test_a_score_off_by_more_than_the_tolerance_fails():
    figures = run(A, dets((1, 0.88, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9))))
    assert not figures["passed"] and figures["worst"]["score_diff"] == pytest.approx(0.02, abs=1e-6)


def test_a_wrong_class_or_an_extra_detection_fails_from_either_side():
    relabelled = dets((3, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9)))
    assert run(A, relabelled)["mismatches"] == 2  # class 1 missing in onnx, class 3 missing in the SavedModel
    extra = dets(
        (1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9)), (2, 0.7, (0.0, 0.6, 0.3, 0.9))
    )
    figures = run(A, extra)
    assert figures["worst"]["side"] == "onnx" and figures["worst"]["score"] == pytest.approx(0.7)


def test_detections_below_the_threshold_need_no_twin():
    assert run(A, dets((1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9))))["passed"]
    assert run(dets(), dets())["passed"]


def test_a_failed_check_is_recorded_then_raised_naming_the_worst_case(tmp_path):
    figures = run(A, dets((2, 0.8, (0.5, 0.5, 0.9, 0.9))))
    path = tmp_path / "export" / "parity.json"
    with pytest.raises(
        parity.ParityError, match=r"alternating: 1 detections .* class 1 \(score 0.900\) in img.png"
    ):
        parity.write_and_raise(figures, path, "alternating")
    assert json.loads(path.read_text())["alternating"]["mismatches"] == 1


def test_a_detection_at_a_full_candidates_cut_off_needs_no_twin():
    full = Detections(A.boxes[:2], A.classes[:2], A.scores[:2], capacity=2)  # cut before the 0.2 one
    reference = dets(
        (1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.5, 0.5, 0.9, 0.9)), (1, 0.795, (0.0, 0.0, 0.2, 0.2))
    )
    assert run(reference, full, 0.0)["mismatches"] == 0  # 0.795 is within 0.01 of full's last score 0.8
    assert (
        run(reference, Detections(full.boxes, full.classes, full.scores), 0.0)["mismatches"] == 1
    )  # not full


def test_nms_near_ties_need_no_twin_but_a_lone_or_clear_winner_does():
    """Two overlapping boxes 0.001 apart: NMS (IoU 0.6) may keep either one in either runtime."""
    kept_a = dets((1, 0.500, (0.1, 0.1, 0.5, 0.5)))
    kept_b = dets((1, 0.499, (0.1, 0.14, 0.5, 0.54)))  # IoU 0.82 with kept_a's box
    assert run(kept_a, kept_b, 0.0, nms_iou=0.6)["nms_near_ties"] == 2
    assert run(kept_a, kept_b, 0.0, nms_iou=0.6)["passed"]
    assert run(kept_a, kept_b, 0.0)["mismatches"] == 2  # no NMS threshold known: no exemption
    assert run(kept_a, kept_b, 0.0, nms_iou=0.9)["mismatches"] == 2  # overlap below NMS's IoU
    clear = dets((1, 0.45, (0.1, 0.14, 0.5, 0.54)))  # 0.05 apart: not a near-tie
    assert run(kept_a, clear, 0.0, nms_iou=0.6)["mismatches"] == 2
