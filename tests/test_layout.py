"""The run layout: DONE hand-over records, atomic swaps, the run directory's lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.layout import (
    RunDirBusy,
    RunDirUnwritable,
    StageFiles,
    promote,
    read_json,
    recover_promotion,
    run_dir_lock,
    write_json,
)


def finished_stage(directory: Path, step: int, marker: str) -> StageFiles:
    files = StageFiles(directory)
    files.checkpoints.mkdir(parents=True)
    (files.checkpoints / f"ckpt-{step}.index").write_text(marker)
    write_json(files.metrics, {"marker": marker})
    files.write_done({"fingerprint": marker}, str(files.checkpoints / f"ckpt-{step}"))
    return files


def test_done_names_its_checkpoint_relative_so_it_survives_the_swap(tmp_path):
    final = StageFiles(tmp_path / "alternating" / "s1_rpn")
    work = finished_stage(final.partial.directory, 7, "new")
    assert read_json(work.done)["checkpoint"] == "checkpoints/ckpt-7"
    promote(work, final)
    record = final.read_done()
    assert record.fingerprint == "new" and record.checkpoint == str(final.checkpoints / "ckpt-7")
    assert record.checkpoint_id and not work.directory.exists()


def test_a_swap_replaces_the_old_stage_only_when_the_new_one_is_finished(tmp_path):
    final = finished_stage(tmp_path / "s1_rpn", 4, "old")
    work = finished_stage(final.partial.directory, 9, "new")
    promote(work, final)
    assert final.read_metrics() == {"marker": "new"}
    assert not (tmp_path / "s1_rpn.replaced").exists()


def test_a_swap_cut_between_its_two_renames_is_completed_on_the_next_run(tmp_path):
    final = StageFiles(tmp_path / "s1_rpn")
    finished_stage(final.partial.directory, 9, "new")  # old stage already renamed away
    recover_promotion(final)
    assert final.read_done().fingerprint == "new"
    unfinished = StageFiles(tmp_path / "s2_fast_rcnn")
    unfinished.partial.directory.mkdir()
    recover_promotion(unfinished)  # no DONE in the work dir: nothing to promote
    assert not unfinished.directory.exists()


def test_write_json_leaves_no_temp_file(tmp_path):
    write_json(tmp_path / "a" / "metrics.json", {"x": 1})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["metrics.json"]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from orchestrator.layout import run_dir_lock
    with run_dir_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_writer_stops_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"in use by another frcnn-alt process \\(PID {holder.pid}\\)"):
            with run_dir_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_dir_lock(tmp_path):  # the OS dropped the dead holder's lock
        assert (tmp_path / ".frcnn-alt.lock").read_text().strip().isdigit()


def test_an_unwritable_run_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RunDirUnwritable, match="hydra.run.dir=.*a_file/run.*cannot write there"):
        with run_dir_lock(blocker / "run"):
            pass
