"""The installed environment: what the README tells a newcomer to run must start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_tensorboard_cli_imports():
    """tensorboard 2.15 needs pkg_resources: the pinned setuptools must provide it."""
    tensorboard = Path(sys.executable).with_name("tensorboard")
    result = subprocess.run([str(tensorboard), "--version_tb"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("2.15"), result.stderr[-500:]
