"""``runner._chunk``: how many steps the next compiled call runs (pure arithmetic, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.engine.runner import StageRun, _chunk
from stages.spec import Group, StageSpec, TrainConfig


def stage_run(steps: int, log_every: int, checkpoint_every: int, steps_per_loop: int) -> StageRun:
    return StageRun(
        name="s1_rpn",
        spec=StageSpec(name="s1_rpn", trains=[Group.shared, Group.rpn]),
        directory=Path("unused"),
        pipeline_path=Path("unused/pipeline.config"),
        steps=steps,
        sources={},
        train=TrainConfig(
            log_every=log_every, checkpoint_every=checkpoint_every, steps_per_loop=steps_per_loop
        ),
    )


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 10),  # steps_per_loop caps it
        (1, 10),
        (20, 5),  # stops at the log at step 25
        (25, 10),
        (45, 5),  # log at 50
        (95, 5),  # the final step, 100
        (99, 1),
    ],
)
def test_a_call_stops_at_the_next_log_and_at_the_end(step, expected):
    assert (
        _chunk(step, stage_run(steps=100, log_every=25, checkpoint_every=200, steps_per_loop=10)) == expected
    )


@pytest.mark.parametrize("step, expected", [(0, 5), (5, 2), (7, 3), (10, 2)])
def test_a_call_stops_at_whichever_of_log_checkpoint_and_end_comes_first(step, expected):
    # log every 7, checkpoint every 5, 12 steps: boundaries 5, 7, 10, 12
    assert _chunk(step, stage_run(steps=12, log_every=7, checkpoint_every=5, steps_per_loop=100)) == expected


def test_one_step_per_loop_is_always_one():
    run = stage_run(steps=9, log_every=4, checkpoint_every=3, steps_per_loop=1)
    assert [_chunk(step, run) for step in range(9)] == [1] * 9


@pytest.mark.parametrize(
    "steps, log_every, checkpoint_every, steps_per_loop",
    [(100, 25, 200, 10), (37, 5, 7, 4), (12, 7, 5, 100), (50, 3, 11, 64), (5, 10, 10, 10)],
)
def test_the_loop_lands_on_every_log_and_checkpoint_step_and_never_passes_the_end(
    steps, log_every, checkpoint_every, steps_per_loop
):
    run = stage_run(steps, log_every, checkpoint_every, steps_per_loop)
    visited, step = [], 0
    while step < steps:
        n = _chunk(step, run)
        assert 1 <= n <= steps_per_loop
        step += n
        visited.append(step)
    assert visited[-1] == steps
    must_land = {s for s in range(1, steps + 1) if s % log_every == 0 or s % checkpoint_every == 0}
    assert must_land <= set(visited), sorted(must_land - set(visited))
