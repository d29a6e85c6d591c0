"""The installed environment: what the README tells a newcomer to run must start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


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
