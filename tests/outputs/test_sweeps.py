"""Real Hydra multiruns: per-job run layouts, shared upstream stages, summary, HParams."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]


def multirun(sweep_dir: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRCNN_ALT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "orchestrator", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def hparams_tags(directory: Path) -> set[str]:
    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"])


@pytest.mark.slow
def test_parallel_joblib_sweep_shares_upstream_stages_and_summarises(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = multirun(
        sweep, cache_dir, *FAST, "stage=all", "steps=4", "stages.s4_detector_head.lr=0.01,0.02",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [sweep / "0", sweep / "1"]
    for job in jobs:
        assert (job / "comparison" / "comparison.json").exists()
        for stage in ("alternating/s1_rpn", "alternating/s4_detector_head", "end_to_end"):
            assert (job / stage / "DONE").exists()
    for stage in ("s1_rpn", "s2_fast_rcnn", "s3_rpn_shared"):
        reused = [
            "reused_from" in json.loads((j / "alternating" / stage / "metrics.json").read_text())
            for j in jobs
        ]
        assert sorted(reused) == [False, True], f"{stage} should train once and be reused once"
    s4 = [
        "reused_from" in json.loads((j / "alternating/s4_detector_head/metrics.json").read_text())
        for j in jobs
    ]
    assert s4 == [False, False]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert {r["overrides"].split()[-1] for r in rows} == {
        "stages.s4_detector_head.lr=0.01",
        "stages.s4_detector_head.lr=0.02",
    }
    assert all(float(r["alternating/mAP@0.5"]) >= 0 and r["end_to_end/mAP"] != "" for r in rows)
    assert "| 1 |" in (sweep / "sweep_summary.md").read_text()
    assert "_hparams_/experiment" in hparams_tags(sweep)
    for job in jobs:
        assert {"_hparams_/session_start_info", "alternating/mAP"} <= hparams_tags(job / "hparams")


@pytest.mark.slow  # stage=plan builds the model to read its module groups
def test_a_failed_job_is_reported_and_the_others_summarised(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = multirun(sweep, cache_dir, *FAST, "stage=plan", "data=shapes,tfrecord")
    assert result.returncode != 0  # Hydra's basic sweeper re-raises the failed job at the end
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "DataValidationError: data.train=None matches no file" in rows[1]["error"]
    assert (sweep / "0" / "plan" / "s1_rpn.config").exists()


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = multirun(
        sweep, cache_dir, *FAST, "stage=plan", "model=tiny,resnet50", "hydra/launcher=submitit_local"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    text = (sweep / "1" / "plan" / "s1_rpn.config").read_text()
    assert "faster_rcnn_resnet50_keras" in text


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$CAPTURE/submission.sh"
echo "Submitted batch job 4242"
"""
FAKE_SACCT = """#!/bin/sh
printf 'JobID|State|NodeList\\n4242_0|FAILED|node1\\n4242_1|FAILED|node1\\n'
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "extra", "nodes"),
    [("slurm_cluster", [], "1"), ("slurm_multi_worker", ["train.strategy=multi_worker"], "2")],
)
def test_slurm_cluster_launcher_submits_what_the_config_asks(tmp_path, cache_dir, launcher, extra, nodes):
    """``hydra/launcher=slurm_cluster`` through the real Hydra launcher and submitit's SLURM executor.

    There is no cluster here: stand-ins on PATH (``srun`` only needs to exist) keep the batch
    script submitit wrote (``sbatch``) and report the jobs failed (``sacct``), so the sweep ends
    (non-zero) instead of waiting. The script is what SLURM would have run: resources, time, array and setup lines.
    """
    bin_dir, capture = tmp_path / "bin", tmp_path / "capture"
    bin_dir.mkdir()
    capture.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "FRCNN_ALT_CACHE": str(cache_dir), "CAPTURE": str(capture),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
    cmd = [sys.executable, "-m", "orchestrator", "-m", "stage=plan", "seed=0,1", f"hydra/launcher={launcher}",
           "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    script = (capture / "submission.sh").read_text()
    for line in (
        "#SBATCH --time=240",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --mem=32GB",
        "#SBATCH --partition=gpu",
        "#SBATCH --array=0-1%2",  # two jobs: array_parallelism 16 capped at the job count
        "#SBATCH --job-name=frcnn-alt",
        "export FRCNN_ALT_CACHE=$HOME/.cache/frcnn-alt",
    ):
        assert line in script.splitlines(), f"{line!r} not in the batch script:\n{script}"
    assert "submitit.core._submit" in script
    assert result.returncode != 0  # the stand-in sacct said the jobs failed
