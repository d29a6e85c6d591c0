"""Stage plans, commands and the plan table, from the real composed config (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.outputs.plan_table import plan_table
from orchestrator.plan.stage_plan import outside_inputs, split_budget, stage_plans, stages_to_run
from stages.spec import to_object


def plans_of(compose_config, overrides: list[str], run_dir: Path = Path("/run")):
    cfg = to_object(compose_config(overrides))
    return cfg, stage_plans(cfg, run_dir)


def test_steps_offsets_and_seeds_follow_the_schedule(compose_config):
    cfg, plans = plans_of(
        compose_config, ["budget=equal", "steps=10", "stages.s2_fast_rcnn.steps=7", "seed=5"]
    )
    assert list(plans) == ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head", "end_to_end"]
    assert [p.steps for p in plans.values()] == [10, 7, 10, 10, 37]  # end_to_end: the sum
    assert [p.step_offset for p in plans.values()] == [0, 10, 17, 27, 0]
    assert [p.seed for p in plans.values()] == [5, 6, 7, 8, 9]
    assert plans["s3_rpn_shared"].files.directory == Path("/run/alternating/s3_rpn_shared")
    assert plans["end_to_end"].files.directory == Path("/run/end_to_end")


def test_stage_lr_overrides_the_run_lr_and_end_to_end_steps_can_be_set(compose_config):
    _, plans = plans_of(
        compose_config, ["train.lr=0.05", "stages.s4_detector_head.lr=0.01", "stages.end_to_end.steps=3"]
    )
    assert plans["s2_fast_rcnn"].lr == 0.05 and plans["s4_detector_head"].lr == 0.01
    assert plans["s1_rpn"].lr == pytest.approx(0.1)  # twice train.lr, as conf/stages/s1_rpn.yaml says
    assert plans["end_to_end"].steps == 3


def test_inputs_come_from_init_sources_and_the_proposer(compose_config):
    _, plans = plans_of(compose_config, [])
    assert plans["s1_rpn"].inputs == ()
    assert plans["s2_fast_rcnn"].inputs == ("s1_rpn",)  # its frozen proposer
    assert set(plans["s3_rpn_shared"].inputs) == {"s1_rpn", "s2_fast_rcnn"}
    assert plans["s4_detector_head"].inputs == ("s3_rpn_shared",)
    _, shared = plans_of(compose_config, ["schedule=alternating_shared"])
    assert shared["s2_fast_rcnn"].inputs == ("s1_rpn",)  # init, not a proposer


def test_commands_name_the_stages_they_train_and_the_inputs_they_need(compose_config):
    cases = {
        "all": ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head", "end_to_end"],
        "alternating": ["s1_rpn", "s2_fast_rcnn", "s3_rpn_shared", "s4_detector_head"],
        "s3_rpn_shared": ["s3_rpn_shared"],
        "compare": [],
        "plan": [],
    }
    for command, expected in cases.items():
        cfg, plans = plans_of(compose_config, [f"stage={command}"])
        assert stages_to_run(cfg) == expected, command
    assert outside_inputs(plans, ["s3_rpn_shared"]) == [
        ("s3_rpn_shared", "s2_fast_rcnn"),
        ("s3_rpn_shared", "s1_rpn"),
    ]
    assert outside_inputs(plans, cases["all"]) == []


def test_plan_table_has_a_row_per_stage_with_resolved_steps(compose_config):
    _, plans = plans_of(compose_config, ["budget=equal", "steps=12"])
    lines = plan_table(list(plans.values())).splitlines()
    assert len(lines) == 2 + 5
    s2 = next(line for line in lines if line.startswith("| s2_fast_rcnn"))
    cells = [c.strip() for c in s2.strip("|").split("|")]
    assert cells == [
        "s2_fast_rcnn",
        "shared,detector_features,detector_head",
        "rpn",
        "0/0, 1/1",
        "backbone/fresh/backbone/fresh",
        "frozen:s1_rpn",
        "12",
        "0.02 cosine",
    ]
    assert lines[-1].split("|")[-3].strip() == "48"


def test_budget_total_splits_over_the_stages_and_end_to_end_gets_the_same(compose_config):
    _, plans = plans_of(compose_config, ["budget.total=1000", "budget.split=[2,1,2,1]"])
    assert [p.steps for p in plans.values()] == [333, 167, 333, 167, 1000]
    _, paper = plans_of(compose_config, ["budget=paper", "budget.total=600"])
    assert [p.steps for p in paper.values()] == [200, 100, 200, 100, 600]
    _, heavy = plans_of(compose_config, ["budget=detector_heavy", "budget.total=600"])
    assert [p.steps for p in heavy.values()] == [100, 200, 100, 200, 600]
    _, shared = plans_of(compose_config, ["budget=shared_heavy", "budget.total=600"])
    assert [p.steps for p in shared.values()] == [100, 300, 100, 100, 600]
    _, equal = plans_of(compose_config, ["budget=equal", "steps=7"])  # no total: steps x stages
    assert [p.steps for p in equal.values()] == [7, 7, 7, 7, 28]
    _, default = plans_of(compose_config, ["steps=6"])  # the default split: shared_heavy
    assert [p.steps for p in default.values()] == [4, 12, 4, 4, 24]


def test_a_stage_that_sets_its_steps_keeps_them_and_end_to_end_follows_the_sum(compose_config):
    _, plans = plans_of(compose_config, ["budget=equal", "budget.total=400", "stages.s3_rpn_shared.steps=10"])
    assert [p.steps for p in plans.values()] == [100, 100, 10, 100, 310]


@pytest.mark.parametrize("total", [4, 5, 7, 999, 1001])
@pytest.mark.parametrize("weights", [[2.0, 1.0, 2.0, 1.0], [10.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
def test_split_budget_sums_to_the_total_and_gives_every_stage_a_step(total, weights):
    shares = split_budget(total, weights)
    assert sum(shares) == total and min(shares) >= 1
    assert shares[0] >= shares[1]  # proportions kept
    if total >= 100:  # (with a few steps, the minimum of one per stage wins over proportions)
        assert all(abs(s - total * w / sum(weights)) < 1 for s, w in zip(shares, weights, strict=True))


def test_plan_table_shows_each_stage_schedule(compose_config):
    _, plans = plans_of(compose_config, ["stages.s4_detector_head.lr=0.005", "stages.s4_detector_head.warmup_steps=50",
                                         "stages.s4_detector_head.lr_schedule=constant"])  # fmt: skip
    row = next(line for line in plan_table(list(plans.values())).splitlines() if line.startswith("| s4_"))
    assert row.split("|")[-2].strip() == "0.005 constant, warmup 50"


def test_end_to_end_s_and_stage_1_s_rates_are_twice_train_lr_unless_they_set_their_own(compose_config):
    _, plans = plans_of(compose_config, [])
    assert [p.lr for p in plans.values()] == pytest.approx([0.04, 0.02, 0.02, 0.02, 0.04])  # s1 too
    _, lower = plans_of(compose_config, ["train.lr=0.005"])  # a train.lr sweep moves both methods
    assert [p.lr for p in lower.values()] == pytest.approx([0.01, 0.005, 0.005, 0.005, 0.01])
    _, own = plans_of(compose_config, ["stages.end_to_end.lr=0.03"])
    assert own["end_to_end"].lr == pytest.approx(0.03) and own["s2_fast_rcnn"].lr == pytest.approx(0.02)
    _, null = plans_of(compose_config, ["stages.end_to_end.lr=null"])  # null: train.lr, as any stage
    assert null["end_to_end"].lr == pytest.approx(0.02)
