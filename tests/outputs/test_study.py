"""The seed study on known inputs: statistics, grouping, curves, crossings, and a hand-written sweep.

Expected figures are computed by hand (t(0.975, 2) = 4.302653, t(0.975, 1) = 12.706205).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from orchestrator.outputs import study

T2 = 4.302652729749464  # t(0.975, 2 dof): three seeds
T1 = 12.706204736174707  # t(0.975, 1 dof): two seeds


# ---------------------------------------------------------------- statistics


def test_summarize_three_values_uses_student_t_with_n_minus_1_dof():
    s = study.summarize([1.0, 2.0, 3.0])
    assert (s["n"], s["mean"], s["sd"]) == (3, 2.0, 1.0)
    assert s["half_width"] == pytest.approx(T2 / math.sqrt(3))  # 2.484138
    assert s["half_width"] == pytest.approx(2.484138, abs=1e-6)
    assert (s["low"], s["high"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_summarize_single_value_has_a_mean_and_no_interval():
    assert study.summarize([0.7]) == {
        "n": 1,
        "mean": 0.7,
        "sd": None,
        "half_width": None,
        "low": None,
        "high": None,
    }


def test_summarize_skips_missing_and_non_finite_values():
    s = study.summarize([None, 1.0, float("nan"), 3.0])
    assert (s["n"], s["mean"]) == (2, 2.0)
    assert s["half_width"] == pytest.approx(T1)  # sd sqrt(2), n 2: t * sqrt(2) / sqrt(2)
    assert study.summarize([])["mean"] is None


def test_identical_values_give_a_zero_width_interval_not_nan():
    s = study.summarize([0.5, 0.5, 0.5])
    assert (s["sd"], s["low"], s["high"]) == (0.0, 0.5, 0.5)


def test_paired_differences_keep_only_jobs_with_both_values():
    assert study.paired_differences([0.5, None, 0.7, 0.9], [0.4, 0.3, None, 1.0]) == pytest.approx(
        [0.1, -0.1]
    )


def test_verdict_names_the_winner_with_the_interval():
    diff = study.summarize([0.08, 0.07, 0.09])
    assert study.verdict("mAP@0.5", diff) == (
        "mAP@0.5: alternating is ahead of end_to_end by 0.080 (paired difference alternating minus "
        "end_to_end +0.080, 95% CI [+0.055, +0.105], n=3 seeds)."
    )
    behind = study.verdict("mAP", study.summarize([-0.08, -0.07, -0.09]))
    assert behind.startswith("mAP: end_to_end is ahead of alternating by 0.080 ")
    assert "95% CI [-0.105, -0.055]" in behind


def test_verdict_says_no_significant_difference_when_the_interval_crosses_zero():
    text = study.verdict("mAP", study.summarize([-0.02, 0.02, 0.05]))
    assert text == (
        "mAP: no significant difference between alternating and end_to_end "
        "(paired difference +0.017, 95% CI [-0.071, +0.104], n=3 seeds)."
    )


def test_verdict_for_one_seed_makes_no_claim():
    text = study.verdict("mAP", study.summarize([0.05]))
    assert "single seed" in text and "no confidence interval" in text and "+0.050" in text
    assert "nothing to compare" in study.verdict("mAP", study.summarize([]))


# ---------------------------------------------------------------- grouping


def test_jobs_that_differ_only_in_seed_share_a_group():
    a = study.group_key(["stage=all", "seed=0", "train.lr=0.01"])
    b = study.group_key(["train.lr=0.01", "++seed=1", "stage=all"])
    assert a == b == ("stage=all", "train.lr=0.01")
    assert study.group_key(["stage=all", "seed=0", "train.lr=0.02"]) != a
    assert study.seed_of(["stage=all", "++seed=1"]) == "1"
    assert study.seed_of(["stage=all"]) is None


def test_group_id_is_file_name_safe_and_short():
    assert study.group_id(("stage=all", "train.lr=0.01")) == "stage=all,train.lr=0.01"
    assert study.group_id(()) == "all"
    assert study.group_id(("data.train=/a b/c*.tfrecord",)) == "data.train=_a_b_c_.tfrecord"
    long = study.group_id(tuple(f"stages.s{i}.loss_weights.rpn_objectness=0.{i}" for i in range(9)))
    assert len(long) == 79 and "/" not in long


# ---------------------------------------------------------------- curves


def test_curve_points_skip_nulls_and_sort_by_step():
    points = [
        {"stage": "s2", "step": 2000, "mAP": 0.3, "mAP@0.5": 0.6},
        {"stage": "s1", "step": 1000, "mAP": None, "mAP@0.5": None},
        {"stage": "s4", "step": 4000, "mAP": 0.5},
    ]
    assert study.curve_points(points, "mAP@0.5") == [(2000.0, 0.6)]
    assert study.curve_points(points, "mAP") == [(2000.0, 0.3), (4000.0, 0.5)]
    assert study.curve_points(None, "mAP") == []


def test_mean_curve_interpolates_onto_the_first_curves_steps():
    curve = study.mean_curve([[(0, 0.0), (10, 1.0)], [(0, 1.0), (5, 2.0), (10, 3.0)]])
    assert curve["n"] == 2 and curve["step"] == [0, 10]
    assert curve["mean"] == pytest.approx([0.5, 2.0])
    # step 0: values 0 and 1 (sd 0.7071); step 10: 1 and 3 (sd 1.4142); half-width t * sd / sqrt(2)
    assert curve["low"][0] == pytest.approx(0.5 - T1 * 0.5)
    assert curve["high"][1] == pytest.approx(2.0 + T1)


def test_mean_curve_never_extrapolates_and_survives_one_seed():
    curve = study.mean_curve([[(0, 0.0), (5, 1.0), (10, 2.0)], [(2, 0.0), (10, 2.0)]])
    assert curve["step"] == [5, 10]
    assert curve["mean"] == pytest.approx([(1.0 + 0.75) / 2, 2.0])
    single = study.mean_curve([[(0, 0.1), (10, 0.2)], []])
    assert single["n"] == 1 and single["low"] == [None, None]
    assert study.mean_curve([[], []]) is None


def curve(steps, values):
    return {"n": 3, "step": steps, "mean": values}


def test_crossing_by_linear_interpolation_on_the_common_steps():
    alternating = curve([1500, 2000, 3000, 4000], [0.5, 0.6, 0.8, 0.9])
    end_to_end = curve([1000, 2000, 3000, 4000], [0.6, 0.7, 0.75, 0.85])
    # common range 1500..4000; differences -0.15, -0.1, +0.05, +0.05: crossing between 2000 and 3000
    (cross,) = study.crossings(alternating, end_to_end)
    assert cross["step"] == pytest.approx(2000 + 1000 * 0.1 / 0.15)  # 2666.67
    assert cross["value"] == pytest.approx(0.6 + 0.2 * (2 / 3))  # 0.7333
    assert cross["ahead_after"] == "alternating"


def test_crossings_both_ways_through_a_touch_point_and_none():
    a = curve([0, 10, 20, 30], [0.0, 1.0, 1.0, 0.0])
    b = curve([0, 30], [0.5, 0.5])
    steps = [c["step"] for c in study.crossings(a, b)]
    assert steps == pytest.approx([5.0, 25.0])
    assert [c["ahead_after"] for c in study.crossings(a, b)] == ["alternating", "end_to_end"]
    touch = curve([0, 10, 20], [0.4, 0.5, 0.4])
    assert study.crossings(touch, b) == []  # touches 0.5 at step 10, never above it
    through = curve([0, 10, 20], [0.4, 0.5, 0.6])
    assert [c["step"] for c in study.crossings(through, b)] == [10]
    assert study.crossings(curve([0, 10], [0.1, 0.2]), b) == []
    assert study.crossings(None, b) == []


# ---------------------------------------------------------------- a whole sweep


def comparison(alt: tuple, e2e: tuple, curves: bool = True, cpu: tuple | None = None) -> dict:
    """comparison.json of one job: final (mAP, mAP@0.5) per method; curves end at the finals."""
    data = {
        "alternating": {"steps": 4000, "mAP": alt[0], "mAP@0.5": alt[1], "wall_seconds": 180.0},
        "end_to_end": {"steps": 4000, "mAP": e2e[0], "mAP@0.5": e2e[1], "wall_seconds": 150.0},
    }
    if cpu:
        data["alternating"]["train_cpu_seconds"], data["end_to_end"]["train_cpu_seconds"] = cpu
    if curves:
        alt_points = [("s1_rpn", 1000, None, None), ("s2_fast_rcnn", 2000, 0.3, 0.6)]
        alt_points += [("s3_rpn_shared", 3000, None, None), ("s4_detector_head", 4000, *alt)]
        e2e_points = [(1000, 0.2, 0.5), (2000, 0.4, 0.7), (3000, 0.5, 0.8), (4000, *e2e)]
        data["curves"] = {
            "alternating": [
                {"stage": s, "step": n, "train_cpu_seconds": n / 10, "mAP": m, "mAP@0.5": m5, "AR@100": 0.5}
                for s, n, m, m5 in alt_points
            ],
            "end_to_end": [
                {"stage": "end_to_end", "step": n, "mAP": m, "mAP@0.5": m5, "AR@100": 0.4}
                for n, m, m5 in e2e_points
            ],
        }
    return data


def write_job(
    sweep: Path, num: int, overrides: list[str], status: str | None = "completed", data=None
) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is not None:
        error = "RuntimeError: boom" if status == "failed" else ""
        (job / "job_status.json").write_text(json.dumps({"status": status, "error": error, "wall_s": 9.0}))
    if data is not None:
        (job / "comparison").mkdir()
        (job / "comparison" / "comparison.json").write_text(json.dumps(data))
    return job


def make_sweep(sweep: Path) -> Path:
    """Group lr=0.01: a clear winner; lr=0.02: no significant difference; lr=0.05: one seed, old format.

    Plus a failed job (whose stray comparison must not count), a running job and a plan-only job.
    """
    winner = [((0.58, 0.94), (0.53, 0.86)), ((0.60, 0.92), (0.56, 0.85)), ((0.62, 0.96), (0.56, 0.87))]
    cpu = [(300.0, 410.0), (310.0, 400.0), (320.0, 420.0)]
    for seed, ((alt, e2e), c) in enumerate(zip(winner, cpu, strict=True)):
        write_job(
            sweep, seed, ["stage=all", f"seed={seed}", "train.lr=0.01"], data=comparison(alt, e2e, cpu=c)
        )
    write_job(
        sweep, 3, ["stage=all", "seed=3", "train.lr=0.01"], "failed", comparison((0.0, 0.0), (1.0, 1.0))
    )
    noise = [((0.50, 0.80), (0.52, 0.84)), ((0.55, 0.85), (0.53, 0.83)), ((0.60, 0.90), (0.55, 0.86))]
    for seed, (alt, e2e) in enumerate(noise):
        write_job(sweep, 4 + seed, ["stage=all", f"seed={seed}", "train.lr=0.02"], data=comparison(alt, e2e))
    write_job(sweep, 7, ["stage=all", "seed=1", "train.lr=0.05"], status=None)
    write_job(sweep, 8, ["stage=plan", "seed=0", "train.lr=0.05"])
    old = comparison((0.40, 0.70), (0.45, 0.75), curves=False)
    write_job(sweep, 10, ["stage=all", "seed=0", "train.lr=0.05"], data=old)
    return sweep


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row starting with ``first_cell`` (the metric table comes first)."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def section(text: str, heading: str) -> str:
    return text.split(f"## Group `{heading}`")[1].split("## Group")[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict, str]:
    sweep = make_sweep(tmp_path_factory.mktemp("sweep"))
    result = study.write_study(sweep)
    return sweep, result, (sweep / "study" / "report.md").read_text()


def test_write_study_counts_used_skipped_and_running_jobs(written):
    _, result, text = written
    assert result["used"] == ["0", "1", "2", "4", "5", "6", "10"]
    assert [s["job"] for s in result["skipped"]] == ["3", "8"]
    assert result["skipped"][0]["reason"] == "failed: RuntimeError: boom"
    assert result["skipped"][1]["reason"] == "no comparison/comparison.json"
    assert result["running"] == ["7"]
    assert "7 jobs used in 3 groups; 2 skipped (job 3: failed: RuntimeError: boom; " in text
    assert "1 still running." in text


def test_report_tables_of_the_clear_winner(written):
    _, result, text = written
    group = section(text, "stage=all train.lr=0.01")
    assert "Jobs 0, 1, 2; seeds 0, 1, 2." in group
    assert table_row(group, "alternating") == ["alternating", "3", "0.600", "0.020", "[0.550, 0.650]"] + [
        "0.940",
        "0.020",
        "[0.890, 0.990]",
    ]
    assert table_row(group, "end_to_end")[2:] == [
        "0.550",
        "0.017",
        "[0.507, 0.593]",
        "0.860",
        "0.010",
        "[0.835, 0.885]",
    ]
    paired = table_row(group, "alternating minus end_to_end (paired)")
    assert paired[1:] == ["3", "+0.050", "0.010", "[0.025, 0.075]", "+0.080", "0.010", "[0.055, 0.105]"]
    assert table_row(group, "alternating")[:1] == ["alternating"]
    assert "| end_to_end | 4000 ± 0 | 410.0 ± 10.0 | 150.0 ± 0.0 |" in group
    assert "**Verdict.** mAP: alternating is ahead of end_to_end by 0.050 " in group
    assert (
        "mAP@0.5: alternating is ahead of end_to_end by 0.080 (paired difference alternating minus " in group
    )
    assert "95% CI [+0.055, +0.105], n=3 seeds)." in group
    # mean curves: alternating (2000, 0.6), (4000, 0.94); end_to_end 0.7 / 0.8 / 0.86 at 2000 / 3000 / 4000.
    # Differences -0.1, -0.03, +0.08: crossing at 3000 + 1000 * 0.03 / 0.11 = 3272.7, alternating 0.8164.
    (cross,) = result["groups"][0]["crossings"]
    assert cross["step"] == pytest.approx(3000 + 1000 * 0.03 / 0.11)
    assert "cross at step 3273 (mAP@0.5 0.816; alternating ahead after it)." in group


def test_report_says_no_significant_difference_when_the_interval_crosses_zero(written):
    _, _, text = written
    group = section(text, "stage=all train.lr=0.02")
    assert (
        "mAP: no significant difference between alternating and end_to_end (paired difference +0.017, "
        in group
    )
    assert "95% CI [-0.071, +0.104], n=3 seeds)." in group
    assert "mAP@0.5: no significant difference" in group
    assert "| alternating | 4000 ± 0 | - | 180.0 ± 0.0 |" in group  # no CPU keys: "-"


def test_a_single_seed_gives_means_without_interval_or_nan(written):
    sweep, result, text = written
    group = section(text, "stage=all train.lr=0.05")
    assert "Single seed: means only" in group
    assert table_row(group, "alternating")[1:] == ["1", "0.400", "-", "-", "0.700", "-", "-"]
    assert "single seed: no confidence interval" in group
    assert "No curves in these jobs' comparison.json (older format)" in group
    assert "nan" not in text.lower()
    assert result["groups"][2]["curves"] is None
    json.loads((sweep / "study" / "study.json").read_text(), parse_constant=pytest.fail)  # no NaN in JSON


def test_study_json_holds_the_curves_and_the_png_exists(written):
    sweep, _, _ = written
    saved = json.loads((sweep / "study" / "study.json").read_text())
    winner = saved["groups"][0]
    assert winner["group_id"] == "stage=all,train.lr=0.01"
    assert winner["curves"]["alternating"]["mAP@0.5"]["step"] == [2000.0, 4000.0]
    assert winner["curves"]["end_to_end"]["mAP@0.5"]["mean"] == pytest.approx([0.5, 0.7, 0.8, 0.86])
    assert winner["curves"]["alternating"]["mAP"]["low"][1] == pytest.approx(0.6 - T2 * 0.02 / math.sqrt(3))
    png = sweep / "study" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_comparison_yet_writes_an_empty_study_without_a_plot(tmp_path):
    write_job(tmp_path, 0, ["stage=all", "seed=0"], status=None)
    result = study.write_study(tmp_path)
    assert result["groups"] == [] and result["running"] == ["0"]
    assert (
        "0 jobs used in 0 groups; 0 skipped; 1 still running."
        in (tmp_path / "study" / "report.md").read_text()
    )
    assert not (tmp_path / "study" / "curves.png").exists()


def test_a_running_jobs_half_written_comparison_is_not_read(tmp_path):
    job = write_job(tmp_path, 0, ["stage=all", "seed=0"], status=None)
    (job / "comparison").mkdir()
    (job / "comparison" / "comparison.json").write_text('{"alternating": {"mAP"')
    assert study.read_job(job)["state"] == "running"
    (job / "job_status.json").write_text('{"status": "compl')
    assert study.read_job(job)["reason"].startswith("unreadable: ")


def test_a_job_is_filed_under_the_command_that_trained_in_it(tmp_path):
    """A later export in the job's directory writes .hydra/export/ (orchestrator/cluster.py); a
    job that trained nothing has only its command's subdirectory."""
    from orchestrator.outputs.study import job_dirs, read_job

    trained = write_job(tmp_path, 0, ["stage=all", "seed=2"])
    (trained / ".hydra" / "export").mkdir()
    (trained / ".hydra" / "export" / "overrides.yaml").write_text(yaml.safe_dump(["stage=export"]))
    plan_only = tmp_path / "1" / ".hydra" / "plan"
    plan_only.mkdir(parents=True)
    (plan_only / "overrides.yaml").write_text(yaml.safe_dump(["stage=plan", "seed=1"]))
    (tmp_path / "not_a_job").mkdir()
    assert [d.name for d in job_dirs(tmp_path)] == ["0", "1"]
    assert read_job(trained)["overrides"] == ["stage=all", "seed=2"]
    assert read_job(tmp_path / "1")["overrides"] == ["stage=plan", "seed=1"]
