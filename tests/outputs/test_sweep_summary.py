"""sweep_summary.{md,csv} with the seed groups, and the groups' HParams sessions, on a hand-written sweep."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from orchestrator.outputs import sweep
from tests.outputs.test_study import make_sweep, table_row, write_job

WINNER = "stage=all,train.lr=0.01"


@pytest.fixture()
def swept(tmp_path) -> Path:
    return make_sweep(tmp_path / "sweep")


def test_summary_keeps_one_row_per_job_and_adds_one_row_per_group(swept):
    rows = sweep.write_summary(swept, hparams=False)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "8", "10"]  # numeric order
    text = (swept / "sweep_summary.md").read_text()
    assert "## Seed groups: mean [95% CI]; diff = alternating minus end_to_end, paired by seed" in text
    assert table_row(text, "stage=all train.lr=0.01") == [
        "stage=all train.lr=0.01",
        "0 1 2",
        "0 1 2",
        "0.600 [0.550, 0.650]",
        "0.940 [0.890, 0.990]",
        "0.550 [0.507, 0.593]",
        "0.860 [0.835, 0.885]",
        "0.050 [0.025, 0.075]",
        "0.080 [0.055, 0.105]",
    ]
    assert table_row(text, "stage=all train.lr=0.05")[3:] == [
        "0.400",
        "0.700",
        "0.450",
        "0.750",
        "-0.050",
        "-0.050",
    ]
    assert "| 3 | stage=all seed=3 train.lr=0.01 | failed | RuntimeError: boom |" in text
    jobs = list(csv.DictReader(open(swept / "sweep_summary.csv")))
    assert [r["group"] for r in jobs[:4]] == [WINNER] * 4
    groups = list(csv.DictReader(open(swept / "sweep_summary_groups.csv")))
    assert [g["group"] for g in groups] == [WINNER, "stage=all,train.lr=0.02", "stage=all,train.lr=0.05"]
    assert float(groups[0]["diff/mAP@0.5_ci_low"]) == pytest.approx(0.0551586, abs=1e-6)
    assert groups[2]["alternating/mAP_sd"] == "" and groups[2]["diff/mAP_n"] == "1"
    assert (swept / "study" / "curves.png").exists()


def test_no_comparison_means_no_study_and_no_group_table(tmp_path):
    write_job(tmp_path, 0, ["stage=plan", "seed=0"])
    sweep.write_summary(tmp_path, hparams=False)
    assert "Seed groups" not in (tmp_path / "sweep_summary.md").read_text()
    assert not (tmp_path / "study").exists() and not (tmp_path / "sweep_summary_groups.csv").exists()


def test_a_broken_study_does_not_stop_the_summary(swept, monkeypatch):
    def broken(sweep_dir):
        raise ValueError("bad curve")

    monkeypatch.setattr(sweep.study, "write_study", broken)
    rows = sweep.write_summary(swept, hparams=False)
    assert len(rows) == 9 and "Seed groups" not in (swept / "sweep_summary.md").read_text()


def plugin_data(directory: Path, tag: str) -> plugin_data_pb2.HParamsPluginData:
    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    return plugin_data_pb2.HParamsPluginData.FromString(acc.SummaryMetadata(tag).plugin_data.content)


def scalars(directory: Path) -> dict[str, float]:
    import tensorflow as tf

    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["tensors"] if not t.startswith("_hparams_")]
    return {t: float(tf.make_ndarray(acc.Tensors(t)[-1].tensor_proto)) for t in tags}


def test_each_group_is_one_hparams_session_with_the_mean_metrics(swept):
    sweep.write_summary(swept)
    sweep.write_summary(swept)  # rewritten after every job: still one session, one event file
    session = swept / "study" / WINNER
    assert len(list(session.glob("events.out.tfevents.*"))) == 1
    start = plugin_data(session, "_hparams_/session_start_info").session_start_info
    assert start.hparams["seed"].string_value == "mean"
    assert start.hparams["train.lr"].string_value == "0.01"
    assert start.group_name == f"{swept.name}/study/{WINNER}"
    values = scalars(session)
    assert values["alternating/mAP"] == pytest.approx(0.6)
    assert values["end_to_end/mAP@0.5"] == pytest.approx(0.86)
    assert values["diff/mAP@0.5_ci_high"] == pytest.approx(0.1048414, abs=1e-6)
    assert values["diff/mAP_n"] == 3
    assert "diff/mAP_ci_low" not in scalars(swept / "study" / "stage=all,train.lr=0.05")  # one seed
    experiment = plugin_data(swept, "_hparams_/experiment").experiment
    seeds = next(h for h in experiment.hparam_infos if h.name == "seed")
    assert "mean" in [v.string_value for v in seeds.domain_discrete.values]
    assert "diff/mAP@0.5" in [m.name.tag for m in experiment.metric_infos]
