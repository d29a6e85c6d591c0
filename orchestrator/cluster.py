"""Which worker this process is in a multi-worker run, read from the environment (no TensorFlow).

Several hosts run the same command (``train.strategy=multi_worker``), each told its place by
``TF_CONFIG`` (as ``model_main_tf2.py`` users do) or by SLURM (one task per worker: ``srun``
sets ``SLURM_PROCID`` and ``SLURM_STEP_NUM_TASKS``). The chief follows
``MultiWorkerMirroredStrategy``'s rule: the ``chief`` task if the cluster has one, else worker
0. Only the chief writes the run directory; the others write their own log
(``worker-<i>.log``) there and nothing else (``docs/architecture.md``, "Several machines").

Hydra writes ``.hydra/`` and the job log before any of our code runs, so two resolvers decide
those paths per process (registered by :func:`register_resolvers`, used in ``conf/config.yaml``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import OmegaConf

from stages.errors import UserError
from stages.spec import TRAINS_NOTHING, Command


class ClusterError(UserError):
    """The cluster description is wrong, or a worker was lost: nothing the code can fix alone."""


@dataclass(frozen=True)
class Role:
    """This process's task in the cluster."""

    task_type: str  # "chief" or "worker"
    index: int
    count: int  # tasks that train (chief + workers)
    is_chief: bool
    source: str  # "TF_CONFIG" or "SLURM"

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.index}"

    @property
    def log_name(self) -> str:
        return f"{self.task_type}-{self.index}"


def _from_tf_config(text: str) -> Role:
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(
            f"TF_CONFIG is not a cluster description ({type(exc).__name__}: {exc}); expected e.g. "
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    count = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and not cluster.get("chief"))
    return Role(task_type, index, count, is_chief, "TF_CONFIG")


def role_from_env(env: Mapping[str, str] | None = None) -> Role | None:
    """This process's role, or None outside a cluster (no ``TF_CONFIG``, not a SLURM task)."""
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        return _from_tf_config(env["TF_CONFIG"])
    tasks = env.get("SLURM_STEP_NUM_TASKS")  # set by srun; a batch script's own SLURM_NTASKS is not a step
    if tasks and int(tasks) > 1 and "SLURM_PROCID" in env:
        index = int(env["SLURM_PROCID"])
        return Role("worker", index, int(tasks), index == 0, "SLURM")
    return None


def slurm_port_base(configured: int | None, env: Mapping[str, str]) -> int:
    """``train.port_base``, else one derived from the job id: two jobs on a node do not collide."""
    if configured is not None:
        return configured
    return 20000 + int(env.get("SLURM_JOB_ID") or 0) % 20000


def check_strategy(strategy: str, role: Role | None) -> None:
    """Several tasks without ``multi_worker`` would each train alone into one run directory."""
    if role is not None and role.count > 1 and strategy != "multi_worker":
        raise ClusterError(
            f"{role.source} describes {role.count} workers but train.strategy={strategy}: every "
            "worker would train alone into the same run directory. Pass train.strategy=multi_worker "
            f"to all of them (or unset {role.source} for a one-machine run)."
        )


def is_follower(env: Mapping[str, str] | None = None) -> bool:
    """A non-chief worker of a multi-worker run (it writes only its own log).

    A broken ``TF_CONFIG`` counts as no cluster here: the entry point then reports it in one line.
    """
    try:
        role = role_from_env(env)
    except ClusterError:
        return False
    return role is not None and role.count > 1 and not role.is_chief


def _hydra_subdir(default: str = ".hydra", stage=Command.all) -> str | None:
    """Where Hydra writes this command's config: nowhere on a non-chief worker; for a command
    that trains nothing (export, predict, compare, plan), ``.hydra/<command>/``.

    Hydra rewrites ``.hydra/overrides.yaml`` on every command in a run directory, so a later
    ``stage=export`` in a sweep job would otherwise file the job under the export's overrides:
    ``.hydra/`` keeps those of the command that trained (read by the sweep summary and study).
    """
    if is_follower():
        return None
    command = Command(stage)  # the typed config hands over the member; a string works too
    return f"{default}/{command.value}" if command in TRAINS_NOTHING else default


def _log_name(default: str) -> str:
    return role_from_env().log_name if is_follower() else default


def register_resolvers() -> None:
    """``${frcnn_alt_hydra_subdir:.hydra}`` and ``${frcnn_alt_log_name:<job name>}`` per process.

    Not cached, so each process (each submitit task too) evaluates them with its own environment.
    """
    for name, fn in (("frcnn_alt_hydra_subdir", _hydra_subdir), ("frcnn_alt_log_name", _log_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
