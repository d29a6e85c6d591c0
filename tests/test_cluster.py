"""Which worker a process is, from TF_CONFIG or SLURM's environment; what each may write."""

from __future__ import annotations

import json

import pytest

from orchestrator import cluster
from orchestrator.cluster import ClusterError, Role

TWO = {"worker": ["localhost:2222", "localhost:2223"]}
SLURM = {
    "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_JOB_ID": "4711",
}  # fmt: skip


def tf_config(cluster_spec: dict, task_type: str, index: int) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": cluster_spec, "task": {"type": task_type, "index": index}})}


def test_worker_zero_is_the_chief_unless_the_cluster_names_one():
    assert cluster.role_from_env(tf_config(TWO, "worker", 0)) == Role("worker", 0, 2, True, "TF_CONFIG")
    assert not cluster.role_from_env(tf_config(TWO, "worker", 1)).is_chief
    with_chief = {"chief": ["h0:1"], **TWO}
    assert cluster.role_from_env(tf_config(with_chief, "chief", 0)) == Role("chief", 0, 3, True, "TF_CONFIG")
    assert not cluster.role_from_env(tf_config(with_chief, "worker", 0)).is_chief
    assert cluster.role_from_env({}) is None


def test_slurm_tasks_are_workers_by_rank_and_one_task_is_no_cluster():
    assert cluster.role_from_env(SLURM) == Role("worker", 1, 2, False, "SLURM")
    assert cluster.role_from_env({**SLURM, "SLURM_PROCID": "0"}).is_chief
    assert cluster.role_from_env({**SLURM, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert cluster.slurm_port_base(None, SLURM) == 24711
    assert cluster.slurm_port_base(9000, SLURM) == 9000


def test_a_broken_tf_config_or_a_cluster_without_multi_worker_is_one_clear_error():
    with pytest.raises(ClusterError, match="TF_CONFIG is not a cluster description"):
        cluster.role_from_env({"TF_CONFIG": '{"cluster": {}}'})
    with pytest.raises(ClusterError, match="describes 2 workers but train.strategy=default"):
        cluster.check_strategy("default", cluster.role_from_env(tf_config(TWO, "worker", 1)))
    cluster.check_strategy("multi_worker", cluster.role_from_env(tf_config(TWO, "worker", 1)))
    cluster.check_strategy("default", None)


def test_only_the_chief_writes_hydra_files_the_others_their_own_log(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(TWO, "worker", 1)["TF_CONFIG"])
    assert cluster._hydra_subdir(".hydra") is None and cluster._log_name("__main__") == "worker-1"
    monkeypatch.setenv("TF_CONFIG", tf_config(TWO, "worker", 0)["TF_CONFIG"])
    assert cluster._hydra_subdir(".hydra") == ".hydra" and cluster._log_name("__main__") == "__main__"
    assert cluster._hydra_subdir(".hydra", "export") == ".hydra/export"
    assert cluster._hydra_subdir(".hydra", "s2_fast_rcnn") == ".hydra"


def test_slurm_environment_becomes_the_cluster_tensorflow_connects(monkeypatch):
    """TensorFlow's own SlurmClusterResolver, as engine/distribute.py builds it (no GPU query)."""
    from orchestrator.engine import distribute
    from stages.spec import TrainConfig

    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    resolver = distribute._cluster_resolver(TrainConfig(), cluster.role_from_env())
    assert resolver.cluster_spec().as_dict() == {"worker": ["node1:24711", "node2:24711"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.num_accelerators() == {}  # a CPU node: no notional GPU reaches the strategy


def test_workers_that_disagree_on_the_run_stop_with_the_fix_instead_of_waiting_forever():
    from orchestrator.app import _same_as_chief
    from orchestrator.engine.distribute import Worker

    worker = Worker(None, cluster.role_from_env(tf_config(TWO, "worker", 1)))
    _same_as_chief({"run directory": "/shared/r1"}, {"run directory": "/shared/r1"}, worker)
    with pytest.raises(
        ClusterError, match="worker:1's run directory differs from the chief's .*same hydra.run.dir"
    ):
        _same_as_chief({"run directory": "/shared/r1"}, {"run directory": "outputs/12-00-01"}, worker)
