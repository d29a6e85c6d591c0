"""Hydra callbacks that run before Hydra itself touches the output directory.

Hydra creates ``hydra.run.dir`` (or ``hydra.sweep.dir``) before our task starts, and a path
it cannot create ends in a Hydra traceback. ``OutputDirCheck`` tries first and, on failure,
prints one line naming the key and exits 2 (registered in ``conf/config.yaml``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from orchestrator import cluster


def writable_dir_problem(path: Path) -> str | None:
    """None if ``path`` can be created and written, else the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".frcnn-alt-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class OutputDirCheck(Callback):
    def _check(self, key: str, value: str) -> None:
        if cluster.is_follower():
            return  # the chief checks (and writes) the shared run directory
        problem = writable_dir_problem(Path(value))
        if problem:
            print(
                f"error: {key}={value!r}: cannot write there ({problem}); pick a writable directory",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
