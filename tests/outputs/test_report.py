"""The comparison report from hand-written ``metrics.json`` files: totals, sentence, audit column."""

from __future__ import annotations

import json

import pytest

from orchestrator.layout import stage_dir
from orchestrator.outputs import report

ALTERNATING = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"]


def metrics(steps: int, wall: float, audit: bool = True, **extra) -> dict:
    return {
        "steps": steps,
        "wall_seconds": wall,
        "step_time_ms_median": 12.5,
        "frozen_audit": {"passed": audit, "frozen_groups": [], "changed": []},
        "AR@100": 0.4,
        "recall@300_iou0.7": 0.3,
        **extra,
    }


def write_run(tmp_path, end_to_end_wall: float, s3_audit: bool = True) -> dict:
    rows = {
        "s1_rpn": metrics(10, 10.0),
        "s2_fast_rcnn": metrics(20, 20.0, **{"mAP": 0.2, "mAP@0.5": 0.4}),
        "s3_rpn_shared": metrics(30, 30.0, audit=s3_audit),
        "s4_detector_head": metrics(40, 40.0, **{"mAP": 0.25, "mAP@0.5": 0.5}),
        "end_to_end": metrics(100, end_to_end_wall, **{"mAP": 0.3, "mAP@0.5": 0.6}),
    }
    dirs = {}
    for name, data in rows.items():
        dirs[name] = stage_dir(tmp_path, name)
        dirs[name].mkdir(parents=True)
        (dirs[name] / "metrics.json").write_text(json.dumps(data))
    return dirs


def table_row(text: str, first_cell: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_totals_sum_the_alternating_stages_and_take_the_last_stages_metrics(tmp_path):
    data = report.collect(ALTERNATING, write_run(tmp_path, end_to_end_wall=75.0))
    assert data["alternating"] == {
        "steps": 100,
        "wall_seconds": 100.0,
        "mAP": 0.25,
        "mAP@0.5": 0.5,
        "AR@100": 0.4,
        "recall@300_iou0.7": 0.3,
    }
    assert data["end_to_end"]["steps"] == 100 and data["end_to_end"]["mAP"] == 0.3
    assert data["end_to_end_time_saving"] == 0.25
    assert data["stages"]["s1_rpn"]["mAP"] is None and data["stages"]["s1_rpn"]["loss_curve"] == []
    text = report.markdown(data)
    assert table_row(text, "**alternating total**") == [
        "**alternating total**",
        "100",
        "100.0",
        "-",
        "0.250",
        "0.500",
        "0.400",
        "0.300",
        "",
    ]
    assert table_row(text, "**end_to_end total**")[:3] == ["**end_to_end total**", "100", "75.0"]
    assert table_row(text, "s1_rpn") == ["s1_rpn", "10", "10.0", "12.5", "-", "-", "0.400", "0.300", "passed"]
    assert "end_to_end took 25% less wall time than the 4 alternating stages at equal total steps" in text


def test_a_slower_end_to_end_says_more_and_a_failed_audit_shows(tmp_path):
    data = report.collect(ALTERNATING, write_run(tmp_path, end_to_end_wall=120.0, s3_audit=False))
    assert data["end_to_end_time_saving"] == pytest.approx(-0.2)
    text = report.markdown(data)
    assert "end_to_end took 20% more wall time than the 4 alternating stages" in text
    assert table_row(text, "s3_rpn_shared")[-1] == "FAILED"
    assert [table_row(text, n)[-1] for n in ("s1_rpn", "s2_fast_rcnn", "s4_detector_head", "end_to_end")] == [
        "passed"
    ] * 4
