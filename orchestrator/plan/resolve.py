"""The plan: which stages run, in what order, from which inputs, with which pipeline.config.

Pure bookkeeping over the typed :class:`~stages.spec.Config`; the only TensorFlow work is
building the model once to read its module groups (for the ``freeze_variables`` regexes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data.shapes import DatasetFiles
from orchestrator.odapi.restore import Source
from stages import freeze
from stages import pipeline as pipelines
from stages.spec import Config, StageSpec

log = logging.getLogger(__name__)
PIPELINES_DIR = Path(__file__).resolve().parents[2] / "conf" / "pipelines"


@dataclass(frozen=True)
class StagePlan:
    name: str
    spec: StageSpec
    directory: Path
    steps: int
    lr: float
    step_offset: int


def stage_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "end_to_end" if name == "end_to_end" else run_dir / "alternating" / name


def stage_order(cfg: Config) -> list[str]:
    return [*cfg.schedule.stages, "end_to_end"]


def stage_plans(cfg: Config, run_dir: Path) -> dict[str, StagePlan]:
    """Every stage with resolved steps, LR and TensorBoard step offset, in run order."""
    plans: dict[str, StagePlan] = {}
    offset = 0
    for name in cfg.schedule.stages:
        spec = getattr(cfg.stages, name)
        steps = spec.steps or cfg.steps
        plans[name] = StagePlan(name, spec, stage_dir(run_dir, name), steps, spec.lr or cfg.train.lr, offset)
        offset += steps
    e2e = cfg.stages.end_to_end
    plans["end_to_end"] = StagePlan(
        "end_to_end", e2e, stage_dir(run_dir, "end_to_end"), e2e.steps or offset, e2e.lr or cfg.train.lr, 0
    )
    return plans


def base_pipeline_path(cfg: Config) -> Path:
    if cfg.model.pipeline_config:
        path = Path(cfg.model.pipeline_config).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pipeline_config={cfg.model.pipeline_config!r} does not exist: pass a stock "
                f"TF2 Faster R-CNN pipeline.config"
            )
        return path
    return PIPELINES_DIR / cfg.model.base


def run_pipeline(cfg: Config, data: DatasetFiles):
    """The base pipeline with this run's data, classes and sizes (shared by every stage)."""
    base = pipelines.load_pipeline(base_pipeline_path(cfg))
    image_size = cfg.model.image_size or (cfg.data.image_size if cfg.data.kind == "shapes" else None)
    return pipelines.run_pipeline(
        base,
        pipelines.RunInputs(
            train_path=data.train,
            val_path=data.val,
            label_map=data.label_map,
            num_classes=data.num_classes,
            batch_size=cfg.model.batch_size,
            image_size=image_size,
            feature_extractor=cfg.model.feature_extractor,
        ),
    )


def final_checkpoint(plan: StagePlan) -> str:
    """Where a stage's last checkpoint will be (checkpoints are numbered by step)."""
    return str(plan.directory / "checkpoints" / f"ckpt-{plan.steps}")


def group_sources(plan: StagePlan, plans: dict[str, StagePlan], backbone: str | None) -> dict[str, Source]:
    """Group -> init :class:`Source` for one stage (earlier stages: their final checkpoint)."""
    sources = {}
    for group, source in plan.spec.init.as_dict().items():
        if source == "fresh":
            sources[group] = Source("fresh")
        elif source == "backbone":
            sources[group] = (
                Source("backbone", backbone) if backbone else Source("fresh (no backbone checkpoint)")
            )
        else:
            sources[group] = Source(source, final_checkpoint(plans[source]))
    return sources


def fine_tune_fields(
    plan: StagePlan, sources: dict[str, Source], backbone_kind: str
) -> tuple[str | None, str | None]:
    """The one ``fine_tune_checkpoint`` a stock config can name: the shared group's source."""
    shared = plan.spec.init.shared
    if sources["shared"].path is None:
        return None, None
    if shared == "backbone":
        return sources["shared"].path, backbone_kind
    same = all(s == shared for s in plan.spec.init.as_dict().values())
    return sources["shared"].path, "full" if same else "detection"


def header(plan: StagePlan, sources: dict[str, Source]) -> str:
    spec = plan.spec
    lines = [
        f"frcnn-alt stage {plan.name}: paper step {spec.paper_step}",
        f"trains: {', '.join(spec.trained_groups)}; frozen: {', '.join(spec.frozen_groups) or 'nothing'}",
        f"proposals: {spec.proposals}; steps: {plan.steps}; lr: {plan.lr}",
        "init per group (fine_tune_checkpoint below names the shared group's source):",
    ]
    lines += [f"  {g}: {s.label}{' ' + s.path if s.path else ''}" for g, s in sources.items()]
    lines.append("freeze_variables lists regexes proven to match exactly the frozen groups' variables;")
    lines.append("the OD API's TF2 loop ignores them, frcnn-alt enforces them with trainable=False.")
    return "\n".join(lines)


def freeze_fields(spec: StageSpec, names: dict[str, list[str]], where: str) -> tuple[list[str], list[str]]:
    """(freeze regexes, trainable regexes) for a stage, proven against the model's names."""
    frozen = [n for g in spec.frozen_groups for n in names[g]]
    trained = [n for g in spec.trained_groups for n in names[g]]
    freeze_re = freeze.freeze_patterns(frozen, trained) if frozen else []
    train_re = freeze.freeze_patterns(trained, frozen)
    freeze.check_patterns(freeze_re, frozen, trained, where)
    freeze.check_patterns(train_re, trained, frozen, where + ".update_trainable")
    return freeze_re, train_re


def stage_pipeline_config(cfg: Config, plan: StagePlan, run_config, sources, names, backbone_kind: str):
    freeze_re, train_re = freeze_fields(plan.spec, names, f"stages.{plan.name}")
    checkpoint, kind = fine_tune_fields(plan, sources, backbone_kind)
    return pipelines.stage_pipeline(
        run_config,
        plan.spec,
        pipelines.StageInputs(
            steps=plan.steps,
            lr=plan.lr,
            freeze_patterns=freeze_re,
            train_patterns=train_re,
            fine_tune_checkpoint=checkpoint,
            fine_tune_checkpoint_type=kind,
        ),
    )
