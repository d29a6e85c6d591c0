"""``python -m orchestrator stage=...``: the Hydra entry point, nothing else (STYLE.md item 1)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from stages.spec import register_configs

register_configs()
log = logging.getLogger("orchestrator")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from orchestrator.app import run
    from orchestrator.errors import USER_ERRORS

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    store = Path(hydra_cfg.sweep.dir) / "stage_store" if multirun else None
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir), stage_store=store)
    except USER_ERRORS as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        if multirun:
            raise  # Hydra marks this job failed and the sweep summary reports it
        sys.exit(2)


if __name__ == "__main__":
    main()
