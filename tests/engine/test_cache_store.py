"""Where a cache lives: complete or absent, keyed by what it depends on, placed by budget (no model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.engine.cache_store import _HOST, Budget, CacheContext, TooLarge, Writer, cache_key, load
from stages.pipeline import load_pipeline

TINY = Path(__file__).resolve().parents[2] / "conf" / "pipelines" / "tiny.config"


def _fill(directory: Path, float16: bool = False, rows: int = 4) -> Writer:
    writer = Writer(directory, capacity=rows, float16=float16)
    for start in range(0, rows, 2):
        keys = np.arange(start, start + 2, dtype=np.int64)
        writer.append(
            keys,
            {
                "features/0": (np.full((2, 3, 3, 2), start) + keys[:, None, None, None] / 10).astype(
                    np.float32
                ),
                "proposals/num": np.full((2,), start, np.int32),
            },
        )
    return writer


def test_a_cache_appears_only_when_complete_and_reads_back(tmp_path):
    directory = tmp_path / "s3-key"
    writer = _fill(directory)
    assert load(directory) is None and not directory.exists()  # rows written, not committed
    writer.commit({"stage": "s3", "flips": 2})
    keys, arrays, meta = load(directory)
    np.testing.assert_array_equal(keys, np.arange(4))
    assert arrays["features/0"].shape == (4, 3, 3, 2) and arrays["features/0"][3, 0, 0, 0] == pytest.approx(
        2.3
    )
    assert meta["flips"] == 2 and meta["rows"] == 4 and not list(tmp_path.glob("*.partial-*"))


def test_float16_applies_to_features_only(tmp_path):
    writer = _fill(tmp_path / "c", float16=True)
    writer.commit({"flips": 1})
    _, arrays, _ = load(tmp_path / "c")
    assert arrays["features/0"].dtype == np.float16 and arrays["proposals/num"].dtype == np.int32


def test_a_build_that_yields_fewer_images_than_counted_is_not_published(tmp_path):
    writer = _fill(tmp_path / "c", rows=4)
    writer.capacity = 6  # as if two records were never read
    with pytest.raises(RuntimeError, match="yielded 4 images, 6 counted"):
        writer.commit({"flips": 1})
    writer.discard()
    assert load(tmp_path / "c") is None and list(tmp_path.iterdir()) == []


def test_a_dead_processs_partial_cache_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f"c.partial-{_HOST}-{int(dead.stdout)}"  # that process has exited
    live = tmp_path / f"c.partial-{_HOST}-{os.getppid()}"  # pytest's parent: alive, maybe building
    elsewhere = tmp_path / f"c.partial-other_node-{int(dead.stdout)}"  # another node's: unknowable here
    for partial in (stale, live, elsewhere):
        partial.mkdir()
    _fill(tmp_path / "c").commit({"flips": 1})
    assert not stale.exists() and live.exists() and elsewhere.exists()


def test_a_second_copy_of_a_complete_cache_yields_to_the_first(tmp_path):
    first, second = _fill(tmp_path / "c"), None
    first.commit({"flips": 1, "who": "first"})
    second = _fill(tmp_path / "c")
    second.commit({"flips": 1, "who": "second"})
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["who"] == "first"
    assert not second.partial.exists()


def test_the_key_changes_with_what_a_cached_value_depends_on_and_only_that(tmp_path):
    pipeline = load_pipeline(TINY)
    configs = {
        "model": pipeline.model,
        "train_input_config": pipeline.train_input_reader,
        "train_config": pipeline.train_config,
        "eval_input_configs": list(pipeline.eval_input_reader),
    }
    context = CacheContext(tmp_path, data="d1", code="c1")
    base = cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), False)
    assert base == cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), False)
    changed = [
        cache_key(context, {"shared": "w2"}, configs, ("features",), (False, True), False),
        cache_key(
            CacheContext(tmp_path, "d2", "c1"), {"shared": "w1"}, configs, ("features",), (False, True), False
        ),
        cache_key(
            CacheContext(tmp_path, "d1", "c2"), {"shared": "w1"}, configs, ("features",), (False, True), False
        ),
        cache_key(context, {"shared": "w1"}, configs, ("features", "proposals"), (False, True), False),
        cache_key(context, {"shared": "w1"}, configs, ("features",), (False,), False),
        cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), True),
        cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), False, by_record=True),
        cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), False, val_proposals=300),
        cache_key(context, {"shared": "w1"}, configs, ("features",), (False, True), False, val_proposals=100),
    ]
    assert len({base, *changed}) == 1 + len(changed)
    trained_differently = type(pipeline.train_config)()
    trained_differently.CopyFrom(pipeline.train_config)
    trained_differently.optimizer.momentum_optimizer.learning_rate.constant_learning_rate.learning_rate = 0.5
    other = {**configs, "train_config": trained_differently}
    assert cache_key(context, {"shared": "w1"}, other, ("features",), (False, True), False) == base


@pytest.mark.parametrize(
    ("mib", "free", "expected"),
    [(10, 1000, "memory"), (100, 1000, "disk"), (600, 1000, "too large"), (100, 50, "too large")],
)
def test_a_cache_goes_to_memory_then_disk_then_nowhere(mib, free, expected):
    budget = Budget(memory_mb=64, disk_mb=512)
    if expected == "too large":
        with pytest.raises(TooLarge):
            budget.place(mib * 2**20, free_disk_mb=free)
    else:
        assert budget.place(mib * 2**20, free_disk_mb=free) == expected
