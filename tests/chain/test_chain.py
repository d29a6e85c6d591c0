"""Chaining: fingerprints decide what reruns; kill -9 and rerun finishes; clear CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from orchestrator.plan.resolve import stage_dir
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head", "end_to_end"]


def cli(*args: str, env_cache: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRCNN_ALT_CACHE": str(env_cache)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw
    )


def done_times(run_dir: Path) -> dict[str, int]:
    return {n: (stage_dir(run_dir, n) / "DONE").stat().st_mtime_ns for n in STAGES}


@pytest.mark.slow
def test_changing_a_stage_reruns_it_and_downstream_only(alternating_run, compose_config, cache_dir, tmp_path):
    from orchestrator.app import run

    source, _ = alternating_run
    run_dir = tmp_path / "copy"
    shutil.copytree(source, run_dir)
    before = done_times(run_dir)
    run(compose_config([*FAST, "stage=all", "steps=4", "stages.s3_rpn_shared.lr=0.01"]), run_dir)
    after = done_times(run_dir)
    changed = {n for n in STAGES if before[n] != after[n]}
    assert changed == {"s3_rpn_shared", "s4_detector_head"}
    assert "lr: 0.01" in (stage_dir(run_dir, "s3_rpn_shared") / "pipeline.config").read_text()


@pytest.mark.slow
def test_kill_9_mid_stage_then_rerun_trains_every_stage_once(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    fast = [o for o in FAST if not o.startswith("train.checkpoint_every")]
    args = [
        *fast,
        "stage=all",
        "steps=4",
        "stages.s2_fast_rcnn.steps=60",
        "train.checkpoint_every=5",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "FRCNN_ALT_CACHE": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    marker = stage_dir(run_dir, "s2_fast_rcnn") / "checkpoints" / "ckpt-10.index"
    deadline = time.time() + 400
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "stage 2 never reached its second checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (stage_dir(run_dir, "s2_fast_rcnn") / "DONE").exists()
    s1_done = (stage_dir(run_dir, "s1_rpn") / "DONE").stat().st_mtime_ns
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (stage_dir(run_dir, "s1_rpn") / "DONE").stat().st_mtime_ns == s1_done  # not retrained
    s2 = json.loads((stage_dir(run_dir, "s2_fast_rcnn") / "metrics.json").read_text())
    assert s2["resumed_from_step"] >= 10 and s2["steps"] == 60 and s2["frozen_audit"]["passed"]
    for name in STAGES:
        d = stage_dir(run_dir, name)
        assert (d / "DONE").exists()
        tf.train.load_checkpoint(tf.train.latest_checkpoint(str(d / "checkpoints")))
    assert (run_dir / "comparison" / "report.md").exists()


def test_a_stage_whose_input_has_not_finished_fails_clearly(tmp_path, cache_dir):
    result = cli(*FAST, "stage=s3_rpn_shared", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert result.returncode == 2
    assert "stage s3_rpn_shared needs s2_fast_rcnn, which has not finished" in result.stderr + result.stdout
    assert not (stage_dir(tmp_path, "s3_rpn_shared") / "DONE").exists()


def test_a_misspelt_override_fails_naming_the_key(tmp_path, cache_dir):
    result = cli("train.lrr=0.1", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert result.returncode != 0
    assert "lrr" in result.stderr
    assert not (tmp_path / "alternating").exists()


def test_compare_before_training_fails_clearly(tmp_path, cache_dir):
    result = cli(*FAST, "stage=compare", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert (
        result.returncode == 2 and "stage=compare needs every stage finished" in result.stderr + result.stdout
    )
