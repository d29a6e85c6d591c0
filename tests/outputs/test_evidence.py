"""Defaults on evidence, on hand-made jobs: per method the best candidate, and default - best."""

from __future__ import annotations

import pytest

from orchestrator.outputs import evidence

DEFAULTS = {"budget": "equal", "stages.end_to_end.lr": "null"}


def job(seed: int, data: str, budget: str, lr: str, alt: float, e2e: float) -> dict:
    overrides = [
        "stage=all",
        f"seed={seed}",
        f"data={data}",
        f"budget={budget}",
        f"stages.end_to_end.lr={lr}",
    ]
    return {
        "job": f"{seed}{data}{budget}{lr}",
        "overrides": overrides,
        "seed": str(seed),
        "state": "used",
        "comparison": {
            "alternating": {"mAP@0.5": alt, "mAP": alt / 2, "train_cpu_seconds": 600.0},
            "end_to_end": {"mAP@0.5": e2e, "mAP": e2e / 2, "train_cpu_seconds": 1200.0},
        },
    }


def sweep(alt_paper_gain: float, e2e_lr_gain: float, data: str = "shapes") -> list[dict]:
    """3 seeds x budget equal|paper x e2e lr null|0.01; seed noise is shared by every candidate."""
    jobs = []
    for seed, noise in enumerate((0.0, 0.03, -0.02)):
        for budget, alt in (("equal", 0.80), ("paper", 0.80 + alt_paper_gain)):
            for lr, e2e in (("null", 0.90), ("0.01", 0.90 + e2e_lr_gain)):
                jobs.append(job(seed, data, budget, lr, alt + noise, e2e + noise))
    return jobs


def test_each_method_sees_only_its_own_candidates_once_per_seed():
    out = evidence.analyse(sweep(0.0, 0.0), DEFAULTS)["contexts"]["data=shapes"]
    alt, e2e = out["alternating"], out["end_to_end"]
    assert [c["setting"] for c in alt["candidates"]] == ["budget=equal", "budget=paper"]
    assert [c["setting"] for c in e2e["candidates"]] == [
        "stages.end_to_end.lr=0.01",
        "stages.end_to_end.lr=null",
    ]
    assert all(c["mAP@0.5"]["n"] == 3 for c in alt["candidates"] + e2e["candidates"])
    assert alt["candidates"][0]["mAP@0.5"]["mean"] == pytest.approx(0.80 + 0.01 / 3)
    assert alt["default"] == "budget=equal" and e2e["default"] == "stages.end_to_end.lr=null"


def test_a_consistently_better_candidate_puts_the_default_outside_noise():
    alt = evidence.analyse(sweep(0.05, 0.0), DEFAULTS)["contexts"]["data=shapes"]["alternating"]
    assert alt["best"] == "budget=paper"
    assert alt["default_minus_best"]["mean"] == pytest.approx(-0.05)
    assert alt["within_noise"] is False  # paired: the same -0.05 on every seed


def test_a_default_that_is_best_or_level_within_noise_holds():
    e2e = evidence.analyse(sweep(0.0, -0.1), DEFAULTS)["contexts"]["data=shapes"]["end_to_end"]
    assert e2e["best"] == e2e["default"] and e2e["within_noise"] is True
    jobs = sweep(0.0, 0.0)
    for j, wobble in zip(
        [j for j in jobs if "budget=paper" in j["overrides"]],
        (0.04, 0.04, -0.02, -0.02, 0.01, 0.01),
        strict=True,
    ):
        j["comparison"]["alternating"]["mAP@0.5"] += wobble  # paper: +0.04, -0.02, +0.01 by seed
    alt = evidence.analyse(jobs, DEFAULTS)["contexts"]["data=shapes"]["alternating"]
    assert alt["best"] == "budget=paper"  # by 0.01 on average
    assert alt["default_minus_best"]["low"] < 0 < alt["default_minus_best"]["high"]
    assert alt["within_noise"] is True


def test_datasets_are_analysed_apart_and_unfinished_jobs_are_ignored():
    jobs = sweep(0.05, 0.0) + sweep(-0.05, 0.0, data="glyphs")
    jobs.append({**job(5, "glyphs", "paper", "null", 0.0, 0.0), "state": "running"})
    out = evidence.analyse(jobs, DEFAULTS)["contexts"]
    assert set(out) == {"data=shapes", "data=glyphs"}
    assert out["data=shapes"]["alternating"]["best"] == "budget=paper"
    assert out["data=glyphs"]["alternating"]["best"] == "budget=equal"
    assert out["data=glyphs"]["alternating"]["candidates"][1]["seeds"] == ["0", "1", "2"]


def test_a_stage_s_own_learning_rate_is_an_alternating_candidate_of_its_own():
    late = job(0, "shapes", "equal", "null", 0.9, 0.9)
    late["overrides"].append("stages.s1_rpn.lr=0.04")
    alt = evidence.analyse([*sweep(0.0, 0.0), late], DEFAULTS)["contexts"]["data=shapes"]["alternating"]
    settings = {c["setting"]: c for c in alt["candidates"]}
    assert settings["budget=equal stages.s1_rpn.lr=0.04"]["seeds"] == ["0"]
    assert settings["budget=equal"]["mAP@0.5"]["n"] == 3  # the default's seed 0 is not replaced
    assert not settings["budget=equal stages.s1_rpn.lr=0.04"]["default"]


def test_a_stage_rate_spelt_out_is_the_same_candidate_as_null_at_that_train_lr():
    defaults = {
        "budget": "equal",
        "train.lr": "0.02",
        "stages.end_to_end.lr": "null",
        "stages.s1_rpn.lr": "0.04",
    }
    assert evidence.is_default(("stages.end_to_end.lr=0.02",), defaults)
    assert evidence.is_default(("stages.end_to_end.lr=null", "train.lr=0.02"), defaults)
    assert not evidence.is_default(("stages.end_to_end.lr=null", "train.lr=0.04"), defaults)
    assert evidence.is_default(("budget=equal", "stages.s1_rpn.lr=0.04"), defaults)
    assert not evidence.is_default(("budget=equal", "stages.s1_rpn.lr=0.02"), defaults)


def test_end_to_end_s_own_steps_make_an_end_to_end_candidate():
    late = job(0, "shapes", "equal", "null", 0.9, 0.95)
    late["overrides"].append("stages.end_to_end.steps=8000")
    e2e = evidence.analyse([*sweep(0.0, 0.0), late], DEFAULTS)["contexts"]["data=shapes"]["end_to_end"]
    settings = {c["setting"]: c for c in e2e["candidates"]}
    assert settings["stages.end_to_end.lr=null stages.end_to_end.steps=8000"]["seeds"] == ["0"]
    assert settings["stages.end_to_end.lr=null"]["mAP@0.5"]["n"] == 3
