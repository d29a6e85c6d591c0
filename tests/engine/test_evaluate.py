"""Proposal recall arithmetic on hand-made boxes (no model): IoU, best IoU per box, AR@100."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.engine.evaluate import IOUS, best_ious, box_iou, proposal_recall

SQUARE = [0.0, 0.0, 2.0, 2.0]  # (ymin, xmin, ymax, xmax), area 4


def test_box_iou_on_hand_computed_pairs():
    a = np.array([SQUARE, [0.0, 0.0, 1.0, 1.0]])
    b = np.array(
        [
            [1.0, 1.0, 3.0, 3.0],  # SQUARE: overlap 1x1, union 4 + 4 - 1 = 7
            SQUARE,  # identical to SQUARE
            [2.0, 2.0, 3.0, 3.0],  # touches SQUARE at a corner only
            [0.0, 0.0, 1.0, 2.0],  # SQUARE: its top half, 2 / 4
        ]
    )
    expected = np.array(
        [
            [1 / 7, 1.0, 0.0, 0.5],
            [0.0, 1 / 4, 0.0, 1 / 2],  # unit square: inside SQUARE (1/4) and half of the last box
        ]
    )
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    np.testing.assert_allclose(box_iou(b, a), expected.T, atol=1e-12)  # symmetric


def test_box_iou_of_empty_boxes_is_zero_not_nan():
    point = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(point, point).tolist() == [[0.0]]


def test_best_ious_looks_only_at_the_top_k_proposals():
    groundtruth = np.array([SQUARE, [5.0, 5.0, 6.0, 6.0]])
    proposals = np.array([[1.0, 1.0, 3.0, 3.0], SQUARE, [5.0, 5.0, 6.0, 6.5]])
    np.testing.assert_allclose(best_ious(proposals, groundtruth, k=1), [1 / 7, 0.0])
    np.testing.assert_allclose(best_ious(proposals, groundtruth, k=2), [1.0, 0.0])
    np.testing.assert_allclose(best_ious(proposals, groundtruth, k=3), [1.0, 1 / 1.5])
    assert best_ious(proposals, np.zeros((0, 4)), k=3).shape == (0,)
    assert best_ious(np.zeros((0, 4)), groundtruth, k=3).tolist() == [0.0, 0.0]


def test_proposal_recall_averages_over_the_ten_coco_thresholds():
    assert len(IOUS) == 10 and IOUS[0] == pytest.approx(0.5) and IOUS[-1] == pytest.approx(0.95)
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    per_image = [
        (box.copy(), box),  # found exactly: IoU 1
        (np.array([[0.0, 0.0, 10.0, 6.2]]), box),  # IoU 0.62: recalled at 0.5, 0.55, 0.6 only
    ]
    # AR@100 = (3 thresholds x 2/2 + 7 thresholds x 1/2) / 10 = 0.65
    assert proposal_recall(per_image) == pytest.approx(
        {"AR@100": 0.65, "recall@300_iou0.5": 1.0, "recall@300_iou0.7": 0.5}
    )


def test_recall_at_300_sees_proposals_that_ar_at_100_does_not():
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    far = np.tile([[50.0, 50.0, 60.0, 60.0]], (150, 1))
    proposals = np.concatenate([far, box])  # the match is proposal 151
    assert proposal_recall([(proposals, box)]) == {
        "AR@100": 0.0,
        "recall@300_iou0.5": 1.0,
        "recall@300_iou0.7": 1.0,
    }


def test_no_groundtruth_gives_zero_recall():
    zeros = {"AR@100": 0.0, "recall@300_iou0.5": 0.0, "recall@300_iou0.7": 0.0}
    assert proposal_recall([]) == zeros
    assert proposal_recall([(np.array([SQUARE]), np.zeros((0, 4)))]) == zeros
