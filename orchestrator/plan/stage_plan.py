"""Which stages run, in what order, with which steps, learning rate and inputs.

Pure bookkeeping over the typed :class:`~stages.spec.Config`: no TensorFlow, no files read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from orchestrator.layout import StageFiles, recover_promotion, stage_dir
from stages.errors import UserError
from stages.spec import Command, Config, StageSpec, validate_config


class StageNotReady(UserError):
    """An input stage has not finished, or finished under another configuration."""


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


def split_budget(total: int, weights: list[float]) -> list[int]:
    """Shares of ``total`` proportional to ``weights``, at least 1 each, summing to it exactly.

    Rounded down, then the steps left go one by one to the share furthest below its exact value
    (or, where the minimum of 1 overshot, come from the one furthest above its exact value).
    """
    exact = [total * w / sum(weights) for w in weights]
    shares = [max(1, math.floor(x)) for x in exact]
    while sum(shares) < total:
        shares[max(range(len(shares)), key=lambda i: exact[i] - shares[i])] += 1
    while sum(shares) > total:
        shares[min((i for i in range(len(shares)) if shares[i] > 1), key=lambda i: exact[i] - shares[i])] -= 1
    return shares


def stage_budgets(cfg: Config) -> dict[str, int]:
    """Each alternating stage's steps: its share of ``budget.total`` unless its spec sets its own."""
    stages = list(cfg.schedule.stages)
    total = cfg.budget.total or cfg.steps * len(stages)
    shares = split_budget(total, list(cfg.budget.split))
    return {
        name: getattr(cfg.stages, name).steps or share for name, share in zip(stages, shares, strict=True)
    }


def stage_plans(cfg: Config, run_dir: Path) -> dict[str, StagePlan]:
    """Every stage with resolved steps, LR, seed and TensorBoard step offset, in run order.

    ``end_to_end`` gets the alternating stages' total steps unless its spec sets its own.
    """
    plans: dict[str, StagePlan] = {}
    budgets = stage_budgets(cfg)
    offset = 0
    for index, name in enumerate(stage_order(cfg)):
        spec = getattr(cfg.stages, name)
        if name == "end_to_end":
            steps, step_offset = spec.steps or offset, 0
        else:
            steps, step_offset = budgets[name], offset
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


def not_finished(run_dir: Path, stage: str, needed: str) -> StageNotReady:
    return StageNotReady(
        f"stage {stage} needs {needed}, which has not finished in {run_dir}: run stage=all (or "
        f"stage={needed}) with the same hydra.run.dir first."
    )


def require_finished(plans: dict[str, StagePlan], names: list[str], run_dir: Path) -> None:
    """Every input outside ``names`` has a DONE (its fingerprint is checked once data is known)."""
    for stage, needed in outside_inputs(plans, names):
        recover_promotion(plans[needed].files)
        if plans[needed].files.read_done() is None:
            raise not_finished(run_dir, stage, needed)


def finished_stages_needed(cfg: Config) -> list[str]:
    """The stages compare / export / predict read: they must have finished."""
    final = [cfg.schedule.stages[-1], "end_to_end"]
    return {Command.compare: stage_order(cfg), Command.export: final, Command.predict: final}.get(
        cfg.stage, []
    )


def require_done(plans: dict[str, StagePlan], names: list[str], what: str, run_dir: Path) -> dict[str, Path]:
    """For stage=compare/export/predict: each stage's finished directory, or a clear error."""
    out = {}
    for name in names:
        files = plans[name].files
        recover_promotion(files)
        if files.read_done() is None:
            raise StageNotReady(
                f"stage={what} needs {name} finished; it has no DONE in {run_dir}: run stage=all first."
            )
        out[name] = files.directory
    return out


def preflight(cfg: Config, run_dir: Path) -> dict[str, StagePlan]:
    """The checks that need neither TensorFlow nor data, so a mistake costs seconds, not minutes:
    config ranges, and the finished stages the command builds on."""
    validate_config(cfg)
    plans = stage_plans(cfg, run_dir)
    require_finished(plans, stages_to_run(cfg), run_dir)
    require_done(plans, finished_stages_needed(cfg), cfg.stage.value, run_dir)
    return plans
