"""``python -m orchestrator stage=...`` (or the ``frcnn-alt`` command): the Hydra entry point.

User errors (:class:`~stages.errors.UserError`) become one log line and exit code 2; SIGINT and
SIGTERM (:class:`~orchestrator.engine.interrupts.Interrupted`) one line and exit code 130 / 143;
anything else is a bug and keeps its traceback. The distribution strategy is made here, before
TensorFlow runs anything (``train.strategy=multi_worker`` needs that; :mod:`orchestrator.engine.distribute`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from orchestrator import cluster
from orchestrator.engine import interrupts
from orchestrator.plan.stage_plan import preflight
from orchestrator.resources import CONF_DIR
from stages.errors import UserError
from stages.spec import register_configs, to_object, validate_config

register_configs()
cluster.register_resolvers()
log = logging.getLogger("orchestrator")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    store = Path(hydra_cfg.sweep.dir) / "stage_store" if multirun else None
    label = f"stage={getattr(cfg.stage, 'value', cfg.stage)}"
    with interrupts.trap(label):  # before TensorFlow's import: seconds long
        worker = None
        try:
            config, run_dir = to_object(cfg), Path(hydra_cfg.runtime.output_dir)
            role = cluster.role_from_env()
            cluster.check_strategy(config.train.strategy.value, role)
            if cluster.is_follower():
                validate_config(config)  # the chief checks the run directory; this worker only follows
            else:
                preflight(config, run_dir)  # mistakes in ~2 s, before TensorFlow loads
            from orchestrator.app import run
            from orchestrator.engine import distribute

            worker = distribute.start(config.train, role)  # before TensorFlow runs anything
            interrupts.reinstall()  # TensorFlow's coordination service takes SIGTERM for itself
            value = run(config, run_dir, stage_store=store, worker=worker)
        except UserError as exc:
            log.error("%s: %s", type(exc).__name__, exc)
            if multirun:
                if worker is not None:
                    worker.close()
                raise  # Hydra marks this job failed and the sweep summary reports it
            _exit(2, worker)
        except interrupts.Interrupted as exc:
            if worker is not None:
                worker.close()
            interrupts.exit_with(exc, log)  # a sweep stops too: the user asked to stop
        if worker and worker.multi and not multirun:  # a sweep job returns: Hydra records its status
            _exit(0, worker)
        return value


def _exit(code: int, worker) -> None:
    """Leave; a multi-worker process skips interpreter teardown, which can block in TensorFlow's
    coordination shutdown while another worker is gone or still busy."""
    if worker is None or not worker.multi:
        sys.exit(code)
    worker.close()
    interrupts.flush_and_exit(code)


if __name__ == "__main__":
    main()
