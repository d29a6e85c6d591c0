"""Resuming falls back past checkpoints that do not read back: real files, real damage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import tensorflow as tf

from orchestrator.engine import runner
from tests.helpers import spec_of, stage_run


def _save(directory: Path, numbers: list[int]) -> tf.train.CheckpointManager:
    """Small real checkpoints ``ckpt-N`` written by a CheckpointManager, as the runner does."""
    value = tf.Variable(tf.random.normal([256, 64], seed=1))
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step, value=value), str(directory), 10)
    for n in numbers:
        step.assign(n)
        manager.save(checkpoint_number=n)
    return manager


def _data(directory: Path, n: int) -> Path:
    return directory / f"ckpt-{n}.data-00000-of-00001"


def _listed(directory: Path) -> list[str]:
    state = tf.train.get_checkpoint_state(str(directory))
    return [Path(p).name for p in state.all_model_checkpoint_paths] if state else []


def test_a_truncated_newest_checkpoint_is_logged_deleted_and_the_older_one_chosen(tmp_path, caplog):
    _save(tmp_path, [2, 4])
    os.truncate(_data(tmp_path, 4), _data(tmp_path, 4).stat().st_size // 2)
    (tmp_path / "ckpt-6_temp").mkdir()  # a save killed half-way
    (tmp_path / "ckpt-6_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="orchestrator.engine.runner"):
        chosen = runner.resume_point(tmp_path, "s1_rpn")
    assert chosen == str(tmp_path / "ckpt-2")
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "ckpt-4.data-00000-of-00001" in warning and "IndexError: Read less bytes than requested" in warning
    assert not list(tmp_path.glob("ckpt-4*")) and not (tmp_path / "ckpt-6_temp").exists()
    assert tf.train.latest_checkpoint(str(tmp_path)) == chosen and _listed(tmp_path) == ["ckpt-2"]


def test_a_flipped_byte_fails_its_checksum_and_a_missing_index_is_skipped(tmp_path, caplog):
    _save(tmp_path, [2, 4, 6])
    data = bytearray(_data(tmp_path, 6).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _data(tmp_path, 6).write_bytes(bytes(data))
    (tmp_path / "ckpt-4.index").unlink()
    with caplog.at_level(logging.WARNING, logger="orchestrator.engine.runner"):
        assert runner.resume_point(tmp_path, "s2") == str(tmp_path / "ckpt-2")
    messages = [r.getMessage() for r in caplog.records]
    assert "ckpt-6.data-00000-of-00001" in messages[0] and "Checksum does not match" in messages[0]
    assert "ckpt-4.index" in messages[1] and "NotFoundError" in messages[1]
    assert _listed(tmp_path) == ["ckpt-2"] and not list(tmp_path.glob("ckpt-[46]*"))


def test_when_no_checkpoint_reads_back_the_state_file_goes_and_the_stage_starts_afresh(tmp_path, caplog):
    _save(tmp_path, [2])
    os.truncate(_data(tmp_path, 2), 10)
    with caplog.at_level(logging.WARNING, logger="orchestrator.engine.runner"):
        assert runner.resume_point(tmp_path, "s3") is None
    assert "no checkpoint reads back; starting the stage afresh" in caplog.text
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_complete_checkpoint_the_state_file_missed_is_resumed_and_listed(tmp_path):
    manager = _save(tmp_path, [2])
    manager.checkpoint.write(str(tmp_path / "ckpt-4"))  # killed before the state update
    assert runner.resume_point(tmp_path) == str(tmp_path / "ckpt-4")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-4")
    assert _listed(tmp_path) == ["ckpt-2", "ckpt-4"]
    assert 'model_checkpoint_path: "ckpt-4"' in (tmp_path / "checkpoint").read_text()  # relative


def test_an_intact_directory_is_left_as_it_is(tmp_path):
    _save(tmp_path, [2, 4])
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert runner.resume_point(tmp_path) == str(tmp_path / "ckpt-4")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_stage_resumes_from_the_checkpoint_before_a_truncated_one_and_finishes(
    tmp_path, compose_config, caplog
):
    spec = spec_of(compose_config, "s1_rpn")
    run = stage_run(tmp_path, spec, steps=4)  # checkpoints at 2 and 4
    runner.train_stage(run)
    os.truncate(_data(run.checkpoint_dir, 4), _data(run.checkpoint_dir, 4).stat().st_size // 3)
    with caplog.at_level(logging.INFO, logger="orchestrator.engine.runner"):
        metrics = runner.train_stage(run)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    assert set(metrics["init"].values()) == {f"resume {run.checkpoint_dir}/ckpt-2"}
    assert "skipping checkpoint" in caplog.text and "ckpt-4.data-00000-of-00001" in caplog.text
    assert metrics["frozen_audit"]["passed"]
    final = tf.train.latest_checkpoint(str(run.checkpoint_dir))
    assert final.endswith("ckpt-4") and runner._unreadable(Path(final)) is None  # written anew, whole
