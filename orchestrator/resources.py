"""Where the shipped configs live, installed or in a checkout.

A wheel carries ``conf/`` as package data at ``orchestrator/conf`` (see ``pyproject.toml``), so
an installed ``frcnn-alt`` finds its configs from any working directory; a checkout (editable
install, tests) uses the top-level ``conf/`` it was cloned with.
"""

from __future__ import annotations

from pathlib import Path


def _conf_dir() -> Path:
    installed = Path(__file__).resolve().parent / "conf"
    return (
        installed if (installed / "config.yaml").is_file() else Path(__file__).resolve().parents[1] / "conf"
    )


CONF_DIR = _conf_dir()
PIPELINES_DIR = CONF_DIR / "pipelines"
