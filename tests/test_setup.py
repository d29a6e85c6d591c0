"""The installed environment: what the README tells a newcomer to run must start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tensorboard_cli_starts_and_reads_our_event_files(tmp_path):
    """``tensorboard --logdir RUN`` (README) must start and find the scalars a stage writes.

    The CLI imports ``pkg_resources`` (tensorboard/default.py): a setuptools without it breaks
    the command while ``import tensorboard`` still works, so run the real executable.
    """
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path / "s1_rpn" / "train"))
    with writer.as_default():
        for step in range(3):
            tf.summary.scalar("Loss/total_loss", 1.0 / (step + 1), step=step)
    writer.close()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    result = subprocess.run(
        [str(tensorboard), "--inspect", "--logdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-2000:]
    assert "Loss/total_loss" in out and str(tmp_path / "s1_rpn" / "train") in out, out[-2000:]
    assert re.search(r"num_steps\s+3\n", out), out[-2000:]


def _setup(env: dict, tmp_path) -> subprocess.CompletedProcess:
    """scripts/setup.sh with ``env``; FRCNN_ALT_VENV points away from .venv so nothing real changes."""
    full = {**os.environ, "FRCNN_ALT_VENV": str(tmp_path / "venv"), **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=full, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_setup_refuses_an_unknown_stack_or_a_python_of_the_other_stack(tmp_path):
    unknown = _setup({"FRCNN_ALT_STACK": "newest"}, tmp_path)
    assert (
        unknown.returncode == 1
        and "FRCNN_ALT_STACK must be legacy or current (got 'newest')" in unknown.stderr
    )
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other, needs = ("current", "3.12/3.13") if version == "3.11" else ("legacy", "3.11")
    mismatch = _setup({"FRCNN_ALT_STACK": other, "PYTHON": sys.executable}, tmp_path)
    assert mismatch.returncode == 1
    assert f"FRCNN_ALT_STACK={other} needs Python {needs}; {sys.executable} is {version}" in mismatch.stderr
    assert not (tmp_path / "venv").exists()  # refused before creating anything
