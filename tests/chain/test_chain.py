"""Chaining: fingerprints decide what reruns, finished stages are never lost, one writer per run."""

from __future__ import annotations

import hashlib
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
import yaml

from orchestrator.layout import stage_dir
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


def tree_digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the hash of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def finished_copy(alternating_run, tmp_path) -> Path:
    source, _ = alternating_run
    run_dir = tmp_path / "copy"
    shutil.copytree(source, run_dir)
    return run_dir


@pytest.mark.slow
def test_changing_a_stage_reruns_it_and_downstream_only(finished_copy, compose_config):
    from orchestrator.app import run

    before = done_times(finished_copy)
    run(compose_config([*FAST, "stage=all", "steps=4", "stages.s3_rpn_shared.lr=0.01"]), finished_copy)
    after = done_times(finished_copy)
    assert {n for n in STAGES if before[n] != after[n]} == {"s3_rpn_shared", "s4_detector_head"}
    s3 = stage_dir(finished_copy, "s3_rpn_shared")
    assert "lr: 0.01" in (s3 / "pipeline.config").read_text()
    s4_config = (stage_dir(finished_copy, "s4_detector_head") / "pipeline.config").read_text()
    s3_done = json.loads((s3 / "DONE").read_text())
    assert f'fine_tune_checkpoint: "{s3 / s3_done["checkpoint"]}"' in s4_config  # handed over from DONE
    assert not list(finished_copy.glob("alternating/*.partial"))


@pytest.mark.slow
def test_an_input_finished_under_other_settings_is_refused_and_nothing_is_deleted(finished_copy, cache_dir):
    s4 = stage_dir(finished_copy, "s4_detector_head")
    before = tree_digest(s4)
    result = cli(
        *FAST, "stage=s4_detector_head", "steps=3", f"hydra.run.dir={finished_copy}", env_cache=cache_dir
    )
    assert result.returncode == 2, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "the s3_rpn_shared finished in" in output and "was trained with other settings" in output
    assert "Traceback" not in output
    assert tree_digest(s4) == before and not s4.with_name(s4.name + ".partial").exists()


@pytest.mark.slow
def test_a_failed_rerun_leaves_the_finished_stage_exactly_as_it_was(finished_copy, compose_config):
    from orchestrator.app import run
    from orchestrator.engine.runner import NonFiniteLoss

    s4 = stage_dir(finished_copy, "s4_detector_head")
    before = tree_digest(s4)
    broken = [
        *FAST,
        "stage=s4_detector_head",
        "steps=4",
        "stages.s4_detector_head.loss_weights.detector_classification=nan",
    ]
    with pytest.raises(NonFiniteLoss):
        run(compose_config(broken), finished_copy)
    assert tree_digest(s4) == before
    assert (s4.with_name(s4.name + ".partial") / "stage.json").exists()  # the failed attempt, apart


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
    s2 = stage_dir(run_dir, "s2_fast_rcnn")
    marker = s2.with_name(s2.name + ".partial") / "checkpoints" / "ckpt-10.index"
    deadline = time.time() + 400
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "stage 2 never reached its second checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (s2 / "DONE").exists()
    s1_done = (stage_dir(run_dir, "s1_rpn") / "DONE").stat().st_mtime_ns
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )  # the killed process's run-dir lock died with it
    assert result.returncode == 0, result.stderr[-3000:]
    assert (stage_dir(run_dir, "s1_rpn") / "DONE").stat().st_mtime_ns == s1_done  # not retrained
    metrics = json.loads((s2 / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 10 and metrics["steps"] == 60 and metrics["frozen_audit"]["passed"]
    # Its proposals cache and val proposals were complete before the kill (built before step 1):
    # reused, so no proposer network was built, for training or evaluation (none to audit).
    assert metrics["cache"]["reused"] and not Path(metrics["cache"]["directory"]).exists()
    assert metrics["cache"]["val_proposals"]["reused"] and metrics["eval"]["eval_proposals"] == "cached"
    assert "proposer_audit" not in metrics
    assert not json.loads((stage_dir(run_dir, "s3_rpn_shared") / "metrics.json").read_text())["cache"][
        "reused"
    ]
    for name in STAGES:
        d = stage_dir(run_dir, name)
        done = json.loads((d / "DONE").read_text())
        tf.train.load_checkpoint(str(d / done["checkpoint"]))
    assert (run_dir / "comparison" / "report.md").exists()


@pytest.mark.slow
def test_a_second_process_on_the_same_run_dir_stops_at_once_naming_the_first(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*FAST, "stage=all", "steps=400", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "FRCNN_ALT_CACHE": str(cache_dir)}
    first = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        lock = run_dir / ".frcnn-alt.lock"
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid)
        second = cli(*args, env_cache=cache_dir, timeout=120)
        assert second.returncode == 2
        assert f"in use by another frcnn-alt process (PID {first.pid})" in second.stdout + second.stderr
        assert first.poll() is None  # the first run goes on untouched
    finally:
        first.kill()
        first.wait()


def test_a_stage_whose_input_has_not_finished_fails_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    result = cli(*FAST, "stage=s3_rpn_shared", f"hydra.run.dir={tmp_path / 'run'}", env_cache=cache)
    assert result.returncode == 2
    assert "stage s3_rpn_shared needs s2_fast_rcnn, which has not finished" in result.stderr + result.stdout
    assert not cache.exists()  # no data generated, no backbone pre-trained
    assert not (tmp_path / "run" / "alternating").exists()


def test_a_misspelt_override_fails_naming_the_key(tmp_path, cache_dir):
    result = cli("train.lrr=0.1", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert result.returncode != 0
    assert "lrr" in result.stderr
    assert not (tmp_path / "alternating").exists()


def test_compare_before_training_fails_clearly(tmp_path, cache_dir):
    result = cli(*FAST, "stage=compare", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert result.returncode == 2
    assert "stage=compare needs s1_rpn finished; it has no DONE" in result.stderr + result.stdout


def test_a_later_command_that_trains_nothing_keeps_the_training_commands_overrides(tmp_path, cache_dir):
    """Sweep summaries and the seed study file a job by ``.hydra/overrides.yaml``: an export or
    compare run later in the job's directory must not rewrite it."""
    trained = ["stage=all", "seed=2", "train.lr=0.01"]
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(trained))
    result = cli(*FAST, "stage=compare", f"hydra.run.dir={tmp_path}", env_cache=cache_dir)
    assert result.returncode == 2  # nothing trained here yet; what matters is what Hydra wrote
    assert yaml.safe_load((tmp_path / ".hydra" / "overrides.yaml").read_text()) == trained
    compare = yaml.safe_load((tmp_path / ".hydra" / "compare" / "overrides.yaml").read_text())
    assert "stage=compare" in compare


def test_an_unwritable_run_dir_is_one_line(tmp_path, cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("stage=plan", f"hydra.run.dir={blocker}/run", env_cache=cache_dir)
    assert result.returncode == 2
    assert "hydra.run.dir=" in result.stderr and "cannot write there" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
