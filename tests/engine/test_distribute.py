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
