"""Shared fixtures: composing the real Hydra config and one small real run of every stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import orchestrator  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
from stages.spec import register_configs

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# Small, fast settings for real runs of the tiny model (a size, not a fake).
FAST = [
    "budget=equal",  # steps=N: N for each alternating stage, as these tests' checkpoints expect
    "data.num_train=48",
    "data.num_val=6",
    "backbone.pretrain_steps=40",
    "eval.max_images=6",
    "train.log_every=2",
    "train.checkpoint_every=2",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["FRCNN_ALT_CACHE"] = str(path)
    return path


def compose_cfg(overrides: list[str] | None = None):
    """The real composed config (typed by stages.spec) with ``overrides``."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture()
def compose_config():
    return compose_cfg


@pytest.fixture(scope="session")
def alternating_run(tmp_path_factory, cache_dir):
    """One real ``stage=all`` on the tiny model, 4 steps a stage: shared by the slow tests."""
    from orchestrator.app import run

    run_dir = tmp_path_factory.mktemp("run_all")
    cfg = compose_cfg([*FAST, "stage=all", "steps=4", f"data.cache_dir={cache_dir}"])
    final = run(cfg, run_dir)
    return run_dir, final
