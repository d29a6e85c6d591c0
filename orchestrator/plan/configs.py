"""A stage's ``pipeline.config``: the base pipeline, this run's data, the stage's spec and inputs.

Configuration flows one way: typed config -> :class:`~stages.pipeline.RunInputs` /
:class:`~stages.pipeline.StageInputs` -> a stock ``TrainEvalPipelineConfig``.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.data.files import DatasetFiles
from orchestrator.odapi.restore import Source
from orchestrator.plan.stage_plan import StagePlan
from orchestrator.resources import PIPELINES_DIR
from stages import freeze
from stages import pipeline as pipelines
from stages.errors import UserError
from stages.spec import GENERATED_DATA, Config, StageSpec


class PipelineConfigError(UserError):
    """``model.pipeline_config`` names no file."""


def base_pipeline_path(cfg: Config) -> Path:
    if cfg.model.pipeline_config:
        path = Path(cfg.model.pipeline_config).expanduser()
        if not path.is_file():
            raise PipelineConfigError(
                f"model.pipeline_config={cfg.model.pipeline_config!r} does not exist: pass a stock "
                f"TF2 Faster R-CNN pipeline.config"
            )
        return path
    return PIPELINES_DIR / cfg.model.base


def run_pipeline(cfg: Config, data: DatasetFiles):
    """The base pipeline with this run's data, classes and sizes (shared by every stage)."""
    base = pipelines.load_pipeline(base_pipeline_path(cfg))
    image_size = cfg.model.image_size or (cfg.data.image_size if cfg.data.kind in GENERATED_DATA else None)
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


def group_sources(
    plan: StagePlan, finished: dict[str, str | None], backbone: str | None
) -> dict[str, Source]:
    """Group -> init :class:`Source`; ``finished``: input stage -> the checkpoint its DONE names.

    An input mapped to ``None`` has not finished yet (``stage=plan`` only): its groups show as
    coming from that stage, with no checkpoint.
    """
    sources = {}
    for group, source in plan.spec.init.as_dict().items():
        if source == "fresh":
            sources[group] = Source("fresh")
        elif source == "backbone":
            sources[group] = (
                Source("backbone", backbone) if backbone else Source("fresh (no backbone checkpoint)")
            )
        elif finished[source] is None:
            sources[group] = Source(f"{source} (when it finishes)")
        else:
            sources[group] = Source(source, finished[source])
    return sources


def fine_tune_fields(
    spec: StageSpec, sources: dict[str, Source], backbone_kind: str
) -> tuple[str | None, str | None]:
    """The one ``fine_tune_checkpoint`` a stock config can name: the shared group's source."""
    shared = spec.init.shared
    if sources["shared"].path is None:
        return None, None
    if shared == "backbone":
        return sources["shared"].path, backbone_kind
    same = all(s == shared for s in spec.init.as_dict().values())
    return sources["shared"].path, "full" if same else "detection"


def header(plan: StagePlan, sources: dict[str, Source]) -> str:
    """The comment block on top of a generated pipeline.config: what the stage does and why."""
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


def stage_pipeline_config(plan: StagePlan, run_config, sources, names, backbone_kind: str):
    """The stage's stock config: run config + loss weights, freezes, init checkpoint, steps, LR."""
    freeze_re, train_re = freeze_fields(plan.spec, names, f"stages.{plan.name}")
    checkpoint, kind = fine_tune_fields(plan.spec, sources, backbone_kind)
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
