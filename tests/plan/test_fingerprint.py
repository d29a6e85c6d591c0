"""Stage fingerprints and the code version: what retrains, and what must not."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.plan.fingerprint import (
    ROOT,
    TRAINING_CODE,
    RunIdentity,
    code_version_of,
    stage_fingerprints,
)
from orchestrator.plan.stage_plan import stage_plans
from stages.spec import to_object

IDENTITY = RunIdentity(data="d1", backbone="b1", base_pipeline="model {}", code="c1")


def fingerprints(compose_config, overrides, identity=IDENTITY):
    cfg = to_object(compose_config(overrides))
    return stage_fingerprints(cfg, stage_plans(cfg, Path("/run")), identity)


def changed(a: dict, b: dict) -> set[str]:
    return {n for n in a if a[n] != b[n]}


def test_a_stage_change_changes_it_and_its_consumers_only(compose_config):
    base = fingerprints(compose_config, [])
    assert changed(base, fingerprints(compose_config, ["stages.s3_rpn_shared.lr=0.01"])) == {
        "s3_rpn_shared",
        "s4_detector_head",
    }
    assert changed(base, fingerprints(compose_config, ["stages.s1_rpn.steps=7"])) == {
        "s1_rpn",
        "s2_fast_rcnn",
        "s3_rpn_shared",
        "s4_detector_head",
        "end_to_end",  # its default steps are the alternating total
    }
    assert changed(base, fingerprints(compose_config, ["stages.end_to_end.lr=0.5"])) == {"end_to_end"}


def test_run_wide_inputs_change_every_stage_and_cadence_changes_none(compose_config):
    base = fingerprints(compose_config, [])
    everything = set(base)
    assert changed(base, fingerprints(compose_config, ["seed=1"])) == everything
    assert changed(base, fingerprints(compose_config, ["model.batch_size=2"])) == everything
    other_data = RunIdentity("d2", "b1", "model {}", "c1")
    assert changed(base, fingerprints(compose_config, [], other_data)) == everything
    assert (
        changed(base, fingerprints(compose_config, ["train.log_every=7", "train.checkpoint_every=9"]))
        == set()
    )


def test_only_approximate_caching_changes_the_stages_that_cache(compose_config):
    base = fingerprints(compose_config, [])
    assert changed(base, fingerprints(compose_config, ["cache.mode=off", "cache.memory_mb=1"])) == set()
    caching = {"s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"}
    assert changed(base, fingerprints(compose_config, ["cache.mode=force"])) == caching
    assert changed(base, fingerprints(compose_config, ["cache.float16=true"])) == caching


def copy_code(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for entry in [*TRAINING_CODE, "orchestrator/outputs", "orchestrator/chain"]:
        if (ROOT / entry).is_file():
            (root / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / entry, root / entry)
        else:
            shutil.copytree(ROOT / entry, root / entry, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_editing_report_code_keeps_the_code_version(tmp_path):
    root = copy_code(tmp_path)
    before = code_version_of(root, TRAINING_CODE)
    report = root / "orchestrator" / "outputs" / "report.py"
    report.write_text(report.read_text() + "\n# a reworded comparison sentence\n")
    chain = root / "orchestrator" / "chain" / "chain.py"
    chain.write_text(chain.read_text() + "\n# a clearer log line\n")
    assert code_version_of(root, TRAINING_CODE) == before


def test_editing_training_code_in_a_nested_folder_changes_it(tmp_path):
    root = copy_code(tmp_path)
    before = code_version_of(root, TRAINING_CODE)
    nested = root / "orchestrator" / "engine" / "kernels" / "fused.py"
    nested.parent.mkdir()
    nested.write_text("STEP = 1\n")
    after_new_file = code_version_of(root, TRAINING_CODE)
    assert after_new_file != before
    nested.write_text("STEP = 2\n")
    assert code_version_of(root, TRAINING_CODE) != after_new_file


def test_editing_the_compatibility_module_changes_it(tmp_path):
    root = copy_code(tmp_path)
    before = code_version_of(root, TRAINING_CODE)
    compat = root / "orchestrator" / "compat.py"
    compat.write_text(compat.read_text() + "\n# another patch\n")
    assert code_version_of(root, TRAINING_CODE) != before
