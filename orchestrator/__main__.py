"""``python -m orchestrator stage=...`` (or the ``frcnn-alt`` command): the Hydra entry point.

User errors (:class:`~stages.errors.UserError`) become one log line and exit code 2; SIGINT and
SIGTERM (:class:`~orchestrator.engine.interrupts.Interrupted`) one line and exit code 130 / 143;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from orchestrator.engine import interrupts
from orchestrator.plan.stage_plan import preflight
from orchestrator.resources import CONF_DIR
from stages.errors import UserError
from stages.spec import register_configs, to_object

register_configs()
log = logging.getLogger("orchestrator")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    store = Path(hydra_cfg.sweep.dir) / "stage_store" if multirun else None
    label = f"stage={getattr(cfg.stage, 'value', cfg.stage)}"
    with interrupts.trap(label):  # before TensorFlow's import: seconds long
        try:
            preflight(
                to_object(cfg), Path(hydra_cfg.runtime.output_dir)
            )  # mistakes in ~2 s, before TensorFlow loads
            from orchestrator.app import run

            return run(cfg, Path(hydra_cfg.runtime.output_dir), stage_store=store)
        except UserError as exc:
            log.error("%s: %s", type(exc).__name__, exc)
            if multirun:
                raise  # Hydra marks this job failed and the sweep summary reports it
            sys.exit(2)
        except interrupts.Interrupted as exc:
            interrupts.exit_with(exc, log)  # a sweep stops too: the user asked to stop


if __name__ == "__main__":
    main()
