"""The comparison report from hand-written ``metrics.json`` files: totals, curves, verdicts."""

from __future__ import annotations

import json

import pytest

from orchestrator.layout import stage_dir
from orchestrator.outputs import report

ALTERNATING = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"]


def point(step: int, cpu: float, map50: float | None = None) -> dict:
    detector = {} if map50 is None else {"mAP": map50 / 2, "mAP@0.5": map50}
    return {"step": step, "train_cpu_seconds": cpu, "AR@100": 0.4, **detector}


def metrics(steps: int, wall: float, cpu: float, curve: list[dict], audit: bool = True, **extra) -> dict:
    return {
        "steps": steps,
        "wall_seconds": wall,
        "train_cpu_seconds": cpu,
        "eval_cpu_seconds": 1.0,
        "step_time_ms_median": 12.5,
        "frozen_audit": {"passed": audit, "frozen_groups": [], "changed": []},
        "AR@100": 0.4,
        "recall@300_iou0.7": 0.3,
        "curve": curve,
        **extra,
    }


def write_run(tmp_path, e2e_cpu: float = 75.0, e2e_wall: float = 80.0, s3_audit: bool = True) -> dict:
    """Alternating: 100 steps, 100 CPU s, final mAP@0.5 0.5. end_to_end: 100 steps, final 0.6."""
    e2e_curve = [point(50, e2e_cpu / 2, 0.3), point(100, e2e_cpu, 0.6)]
    rows = {
        "s1_rpn": metrics(10, 10.0, 10.0, [point(10, 10.0)]),
        "s2_fast_rcnn": metrics(
            20, 20.0, 20.0, [point(10, 10.0, 0.1), point(20, 20.0, 0.4)], mAP=0.2, **{"mAP@0.5": 0.4}
        ),
        "s3_rpn_shared": metrics(30, 30.0, 30.0, [point(30, 30.0)], audit=s3_audit),
        "s4_detector_head": metrics(40, 40.0, 40.0, [point(40, 40.0, 0.5)], mAP=0.25, **{"mAP@0.5": 0.5}),
        "end_to_end": metrics(100, e2e_wall, e2e_cpu, e2e_curve, mAP=0.3, **{"mAP@0.5": 0.6}),
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
    data = report.collect(ALTERNATING, write_run(tmp_path))
    alt = data["alternating"]
    assert (alt["steps"], alt["wall_seconds"], alt["train_cpu_seconds"], alt["eval_cpu_seconds"]) == (
        100,
        100.0,
        100.0,
        4.0,
    )
    assert (alt["mAP"], alt["mAP@0.5"]) == (0.25, 0.5)
    assert data["end_to_end"]["mAP"] == 0.3 and data["end_to_end_cpu_saving"] == 0.25
    assert data["stages"]["s1_rpn"]["mAP"] is None and data["stages"]["s1_rpn"]["loss_curve"] == []
    text = report.markdown(data)
    assert table_row(text, "**alternating total**") == [
        "**alternating total**", "100", "100.0", "4.0", "100.0", "-", "0.250", "0.500", "0.400", "0.300", "",
    ]  # fmt: skip
    assert table_row(text, "s1_rpn") == [
        "s1_rpn",
        "10",
        "10.0",
        "1.0",
        "10.0",
        "12.5",
        "-",
        "-",
        "0.400",
        "0.300",
        "passed",
    ]
    assert "end_to_end used 25% less training CPU time than the 4 alternating stages" in text
    assert "wall time: 20% less" in text


def test_curves_are_cumulative_over_the_stages_of_a_method(tmp_path):
    curve = report.collect(ALTERNATING, write_run(tmp_path))["curves"]["alternating"]
    assert [(p["stage"], p["step"], p["train_cpu_seconds"]) for p in curve] == [
        ("s1_rpn", 10, 10.0),
        ("s2_fast_rcnn", 20, 20.0),
        ("s2_fast_rcnn", 30, 30.0),
        ("s3_rpn_shared", 60, 60.0),
        ("s4_detector_head", 100, 100.0),
    ]
    assert [p["mAP@0.5"] for p in curve] == [None, 0.1, 0.4, None, 0.5]


def test_verdicts_at_equal_steps_and_at_equal_cpu_time(tmp_path):
    data = report.collect(ALTERNATING, write_run(tmp_path, e2e_cpu=200.0))
    v = data["verdicts"]
    assert v["equal_steps"] == (
        "At equal steps (100 alternating, 100 end_to_end), mAP@0.5 is 0.500 for alternating and 0.600 "
        "for end_to_end (end_to_end ahead by 0.100)."
    )
    # end_to_end's curve (0.3 at 100 CPU s, 0.6 at 200) read at alternating's 100 CPU s: 0.3
    (sentence,) = v["equal_cpu"]
    assert "At equal training CPU time (100 CPU s, all of alternating's training)" in sentence
    assert (
        "0.500 for alternating and 0.300 for end_to_end" in sentence
        and "alternating ahead by 0.200" in sentence
    )
    assert "end_to_end used 100% more training CPU time" in v["time"]


def test_read_curve_at_interpolates_inside_the_curve_only():
    curve = [point(1, 10.0, 0.2), point(2, 20.0), point(3, 30.0, 0.6)]
    assert report.read_curve_at(curve, 20.0, "mAP@0.5") == pytest.approx(0.4)  # skips the RPN-only point
    assert report.read_curve_at(curve, 5.0, "mAP@0.5") is None
    assert report.read_curve_at(curve, 31.0, "mAP@0.5") is None


def test_crossing_points_of_the_two_curves():
    alternating = [point(100, 0, 0.2), point(200, 0, 0.8)]
    end_to_end = [point(100, 0, 0.4), point(200, 0, 0.6)]
    assert report.crossings(alternating, end_to_end) == [{"step": 150, "ahead_after": "alternating"}]
    assert report.crossings(alternating, [point(100, 0, 0.1), point(200, 0, 0.2)]) == []


def test_a_failed_audit_shows_and_files_are_written(tmp_path):
    dirs = write_run(tmp_path / "run", s3_audit=False)
    text = report.write_report(ALTERNATING, dirs, tmp_path / "run")
    assert table_row(text, "s3_rpn_shared")[-1] == "FAILED"
    assert [table_row(text, n)[-1] for n in ("s1_rpn", "s2_fast_rcnn", "s4_detector_head", "end_to_end")] == [
        "passed"
    ] * 4
    out = tmp_path / "run" / "comparison"
    assert json.loads((out / "comparison.json").read_text())["verdicts"]["equal_steps"].startswith(
        "At equal steps"
    )
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
