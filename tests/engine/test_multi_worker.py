"""train.strategy=multi_worker with real processes: two workers on this machine's loopback.

The pipeline is made deterministic across the split (BatchNorm frozen, every anchor and
proposal sampled, no augmentation, as tests/engine/distribute_check.py does for mirrored), so
two workers with one image each must give the first-step loss of one process with both.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from stages import pipeline as pipelines
from tests.engine import workers
from tests.helpers import tiny_pipeline

pytestmark = pytest.mark.slow

STAGES = ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    config, path = tiny_pipeline(tmp_path_factory.mktemp("mw"))  # its data paths: the run's replace them
    frcnn = config.model.faster_rcnn
    frcnn.first_stage_minibatch_size = 100000
    frcnn.second_stage_batch_size = frcnn.first_stage_max_proposals
    frcnn.feature_extractor.batch_norm_trainable = False  # batch statistics differ per worker
    config.train_config.ClearField("data_augmentation_options")
    return pipelines.write_pipeline(config, path)


def metrics(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "alternating" / stage / "metrics.json").read_text())


def test_two_workers_train_the_chain_once_and_start_where_one_process_does(tmp_path, cache_dir, pipeline):
    run_dir, scratch = tmp_path / "run", tmp_path / "tmp"
    scratch.mkdir()
    args = workers.overrides(run_dir, pipeline, "stage=alternating", "steps=2", "train.strategy=multi_worker")
    procs = workers.launch_workers(args, cache_dir, tmp_path / "logs", extra_env={"TMPDIR": str(scratch)})
    codes = workers.wait_all(procs, timeout=900)
    assert codes == [0, 0], "\n".join(p.tail() for p in procs)

    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [".frcnn-alt.lock", ".hydra", "__main__.log", "alternating", "summary", "worker-1.log"]
    )  # the non-chief wrote its own log and nothing else
    assert sorted(p.name for p in (run_dir / "alternating").iterdir()) == STAGES  # no .partial left
    assert "worker:1 trains a per-replica batch of 1 of global 2" in (run_dir / "worker-1.log").read_text()
    for stage in STAGES:
        m = metrics(run_dir, stage)
        assert (run_dir / "alternating" / stage / "DONE").is_file()
        assert m["distribution"] == {
            "strategy": "multi_worker", "workers": 2, "replicas": 2, "global_batch": 2, "per_replica_batch": 1
        }  # fmt: skip
        assert m["frozen_audit"]["passed"], m["frozen_audit"]
        assert m.get("proposer_audit", {"passed": True})["passed"]
        assert m["steps"] == 2
    assert not list(scratch.glob("frcnn-alt-*"))  # the non-chief's local checkpoints are gone

    single = tmp_path / "single"
    ref = workers.launch(
        "single", workers.overrides(single, pipeline, "stage=s1_rpn", "steps=2"), workers.environment(cache_dir),
        tmp_path / "logs",
    )  # fmt: skip
    assert workers.wait_all([ref], timeout=600) == [0], ref.tail()
    one = metrics(single, "s1_rpn")["first_step_losses"]["Loss/total_loss"]
    two = metrics(run_dir, "s1_rpn")["first_step_losses"]["Loss/total_loss"]
    assert two == pytest.approx(one, rel=1e-4)


@pytest.mark.parametrize(
    ("victim", "sig"),
    [(1, signal.SIGKILL), (0, signal.SIGTERM)],  # a worker lost; the chief stopped by the cluster
    ids=["worker-killed", "chief-terminated"],
)
def test_a_lost_worker_stops_the_other_with_one_line_and_both_resume(
    tmp_path, cache_dir, pipeline, victim, sig
):
    run_dir = tmp_path / "run"
    args = workers.overrides(
        run_dir,
        pipeline,
        "stage=s1_rpn",
        "steps=200",  # long enough to be mid-stage when killed (a fast machine trains 10+ steps a second)
        "train.strategy=multi_worker",
        "train.checkpoint_every=2",
    )
    procs = workers.launch_workers(args, cache_dir, tmp_path / "logs")
    checkpoints = run_dir / "alternating" / "s1_rpn.partial" / "checkpoints"
    # Any checkpoint from step 4 on: older ones are deleted as newer ones are kept, so one exact
    # name can come and go between two polls.
    workers.wait_for((checkpoints, "ckpt-*.index"), 600, procs, accept=lambda p: int(p.stem[5:]) >= 4)
    survivor = procs[1 - victim]
    workers.kill([procs[victim]], sig)  # SIGTERM: our handler must run, not TensorFlow's (it swallowed it)
    if sig == signal.SIGTERM:
        assert procs[victim].popen.returncode == 143, procs[victim].tail()
        assert "interrupted during s1_rpn training" in procs[victim].tail()
    code = workers.wait_all([survivor], timeout=180)[0]
    log = survivor.tail(6000)
    assert code == 2, log
    assert "ClusterError: lost contact with another worker while training s1_rpn" in log
    assert "restart every worker with the same command" in log and "Traceback" not in log
    assert not (run_dir / "alternating" / "s1_rpn" / "DONE").exists()
    if sig == signal.SIGTERM:
        return  # resuming is the same either way: checked once

    again = workers.launch_workers(args, cache_dir, tmp_path / "logs", tag="-again")
    assert workers.wait_all(again, timeout=600) == [0, 0], "\n".join(p.tail() for p in again)
    m = json.loads((run_dir / "alternating" / "s1_rpn" / "metrics.json").read_text())
    assert m["steps"] == 200 and m["resumed_from_step"] >= 4
    assert m["frozen_audit"]["passed"]
