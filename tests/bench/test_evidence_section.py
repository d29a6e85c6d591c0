"""The defaults' evidence read from a sweep directory on disk, as Hydra and our jobs leave it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bench import evidence
from orchestrator.resources import CONF_DIR
from tests.outputs import test_evidence
from tests.outputs.test_evidence import sweep

MACHINE = {"cores": 2, "tensorflow": "2.15.1"}


def write_sweep(root: Path, jobs: list[dict], names: list[str] | None = None) -> Path:
    # the last -m command's, as Hydra leaves it: a later candidate's sweep rewrote it
    task = ["stage=all", "seed=0", "data=shapes", "budget=late"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    for number, job in enumerate(jobs):
        d = root / (names[number] if names else str(number))
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job["overrides"]))
        (d / "comparison").mkdir()
        (d / "comparison" / "comparison.json").write_text(json.dumps(job["comparison"]))
        if number < len(jobs) - 1:  # the last job is still running
            (d / "job_status.json").write_text(json.dumps({"status": "completed"}))
    return root


def with_the_config_s_defaults(jobs: list[dict]) -> tuple[list[dict], str, str]:
    """The hand-made sweep's defaults (``budget=equal``, end_to_end ``lr=null``) spelt as conf/
    composes them now."""
    spelt = evidence.defaults()
    budget, e2e = f"budget={spelt['budget']}", f"stages.end_to_end.lr={spelt['stages.end_to_end.lr']}"
    mapping = {"budget=equal": budget, "stages.end_to_end.lr=null": e2e}
    for job in jobs:
        job["overrides"] = [mapping.get(o, o) for o in job["overrides"]]
    return jobs, budget, e2e


def test_a_sweep_on_disk_becomes_a_table_per_dataset_and_a_verdict_per_method(tmp_path):
    jobs, budget, e2e_default = with_the_config_s_defaults(sweep(0.05, -0.1))
    results = {"machine": MACHINE, "evidence": evidence.collect([write_sweep(tmp_path, jobs)])}
    assert results["evidence"]["jobs"] == {"used": 11, "all": 12}
    text = "\n".join(evidence.section(results))
    assert f"`python -m orchestrator -m stage=all seed=0,1,2 data=shapes {budget},paper" in text
    assert f"| alternating | {budget} (default) | 3 | 0.803 [" in text
    assert "* alternating: best budget=paper; default - best = -0.050" in text and "**outside noise**" in text
    assert f"* end_to_end: the default ({e2e_default}) is the best candidate." in text


def test_a_later_candidate_in_its_own_subdirs_joins_the_table_and_the_command(tmp_path):
    jobs = sweep(0.05, -0.1)
    late = [test_evidence.job(seed, "shapes", "late", "null", 0.7, 0.9) for seed in (0, 1)] + [jobs[-1]]
    names = [str(n) for n in range(len(jobs) - 1)] + ["late-seed0-shapes", "late-seed1-shapes", "running"]
    ev = evidence.collect([write_sweep(tmp_path, jobs[:-1] + late, names)])
    assert ev["jobs"] == {"used": 13, "all": 14}
    assert ev["commands"][0].startswith(
        "python -m orchestrator -m stage=all seed=0,1,2 data=shapes budget=equal,paper,late"
    )
    late_row = ev["contexts"]["data=shapes"]["alternating"]["candidates"][1]
    assert late_row["setting"] == "budget=late" and late_row["seeds"] == ["0", "1"]


def test_sweeps_side_by_side_make_one_table_per_dataset_and_a_command_each(tmp_path):
    shapes = write_sweep(tmp_path / "shapes", sweep(0.05, -0.1))
    glyphs = write_sweep(tmp_path / "glyphs", sweep(0.0, 0.1, data="glyphs"))
    results = {"machine": MACHINE, "evidence": evidence.collect([shapes, glyphs])}
    ev = results["evidence"]
    assert ev["jobs"] == {"used": 22, "all": 24}
    assert set(ev["contexts"]) == {"data=shapes", "data=glyphs"}
    assert [c.split("data=")[1].split()[0] for c in ev["commands"]] == ["shapes", "glyphs"]
    text = "\n".join(evidence.section(results))
    assert "data=shapes" in text and "` and `python -m orchestrator -m" in text


def test_every_candidate_key_has_its_default_spelt_as_an_override_would():
    spelt = evidence.defaults()
    assert spelt["budget"] in {p.stem for p in (Path(CONF_DIR) / "budget").glob("*.yaml")}
    assert spelt["budget.split"].startswith("[") and "." not in spelt["budget.split"]  # [1,3,1,1], not 1.0
    assert spelt["stages.s2_fast_rcnn.lr_schedule"] == "cosine" and spelt["budget.total"] == "null"
    assert float(spelt["train.lr"]) > 0 and set(evidence.evidence.METHOD_KEYS["end_to_end"]) <= set(spelt)


def test_without_a_study_the_section_says_how_to_make_one():
    assert "--only evidence --sweep DIR" in evidence.section({"machine": MACHINE})[0]


def test_overrides_every_candidate_sets_alike_are_said_once_and_each_seed_is_shown(tmp_path):
    jobs, budget, _ = with_the_config_s_defaults(sweep(0.05, -0.1))
    for job in jobs:
        job["overrides"].append("train.lr=0.02")
    text = "\n".join(
        evidence.section({"machine": MACHINE, "evidence": evidence.collect([write_sweep(tmp_path, jobs)])})
    )
    assert f"| alternating | {budget} (default) | 3 | 0.803 [" in text
    assert "| 0.800 / 0.830 / 0.780 |" in text  # seeds 0, 1, 2 of the default budget
    assert "Every row of a method also sets alternating: train.lr=0.02; end_to_end: train.lr=0.02." in text


def test_the_plot_has_a_panel_per_dataset_and_the_section_links_it(tmp_path):
    shapes = write_sweep(tmp_path / "shapes", sweep(0.05, -0.1))
    glyphs = write_sweep(tmp_path / "glyphs", sweep(0.0, 0.1, data="glyphs"))
    ev = evidence.collect([shapes, glyphs])
    evidence.plot(ev, tmp_path / "evidence.png")
    from PIL import Image

    width, height = Image.open(tmp_path / "evidence.png").size
    assert width > 2 * height  # two panels side by side
    assert f"]({evidence.PLOT})" in "\n".join(evidence.section({"machine": MACHINE, "evidence": ev}))
