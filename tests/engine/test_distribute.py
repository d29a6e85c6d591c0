"""train.strategy=mirrored on two logical CPU devices gives the single-device loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mirrored_loss_matches_single_device_on_the_same_batch(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "engine" / "distribute_check.py"), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line[7:])
    assert figures["replicas"] == [1, 2]
    assert figures["mirrored"] == pytest.approx(figures["single"], rel=1e-4)


def test_multi_worker_after_tensorflow_ran_is_refused_with_the_way_out():
    """MultiWorkerMirroredStrategy needs a process that has run nothing yet; say so, not crash."""
    import tensorflow as tf

    from orchestrator.cluster import ClusterError
    from orchestrator.engine import distribute
    from stages.spec import Strategy, TrainConfig

    tf.constant(1.0) + 1.0  # noqa: B018 - the eager context starts
    with pytest.raises(ClusterError, match="one process per worker"):
        distribute.start(TrainConfig(strategy=Strategy.multi_worker), None)
    assert distribute.start(TrainConfig(), None).strategy is None  # default: a strategy per stage


@pytest.mark.slow  # a fresh interpreter importing TensorFlow and the OD API: ~15 s
def test_the_entry_point_runs_no_tensorflow_before_the_strategy_is_made():
    """Everything ``__main__`` imports before ``distribute.start`` leaves the eager context unstarted."""
    code = (
        "import orchestrator.__main__, orchestrator.app, orchestrator.engine.distribute\n"
        "from orchestrator import compat\n"
        "print('STARTED' if compat.eager_context_started() else 'CLEAN')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "CLEAN"
