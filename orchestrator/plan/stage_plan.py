"""Which stages run, in what order, with which steps, learning rate and inputs.

Pure bookkeeping over the typed :class:`~stages.spec.Config`: no TensorFlow, no files read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.layout import StageFiles, stage_dir
from stages.spec import Command, Config, StageSpec


@dataclass(frozen=True)
class StagePlan:
    """One stage as the config describes it, before anything is read from disk."""

    name: str
    spec: StageSpec
    files: StageFiles  # the finished stage's directory (training happens in files.partial)
    steps: int
    lr: float
    step_offset: int  # where its steps start on end_to_end's TensorBoard axis
    seed: int  # tf.keras.utils.set_random_seed before the stage builds
    inputs: tuple[str, ...]  # earlier stages it reads: init sources and the frozen proposer


def stage_order(cfg: Config) -> list[str]:
    return [*cfg.schedule.stages, "end_to_end"]


def stage_plans(cfg: Config, run_dir: Path) -> dict[str, StagePlan]:
    """Every stage with resolved steps, LR, seed and TensorBoard step offset, in run order.

    ``end_to_end`` gets the alternating stages' total steps unless its spec sets its own.
    """
    plans: dict[str, StagePlan] = {}
    offset = 0
    for index, name in enumerate(stage_order(cfg)):
        spec = getattr(cfg.stages, name)
        if name == "end_to_end":
            steps, step_offset = spec.steps or offset, 0
        else:
            steps, step_offset = spec.steps or cfg.steps, offset
            offset += steps
        plans[name] = StagePlan(
            name=name,
            spec=spec,
            files=StageFiles(stage_dir(run_dir, name)),
            steps=steps,
            lr=spec.lr or cfg.train.lr,
            step_offset=step_offset,
            seed=cfg.seed + index,
            inputs=spec.input_stages(),
        )
    return plans


def stages_to_run(cfg: Config) -> list[str]:
    """The stages a training command trains, in order (empty for plan/compare/export/predict)."""
    if cfg.stage == Command.all:
        return stage_order(cfg)
    if cfg.stage == Command.alternating:
        return list(cfg.schedule.stages)
    if cfg.stage.value in stage_order(cfg):
        return [cfg.stage.value]
    return []


def outside_inputs(plans: dict[str, StagePlan], names: list[str]) -> list[tuple[str, str]]:
    """(stage, input) pairs where ``input`` must already be finished: it is not in ``names``."""
    return [(name, i) for name in names for i in plans[name].inputs if i not in names]
