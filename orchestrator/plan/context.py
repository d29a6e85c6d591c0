"""Everything one run shares, resolved once from the typed config (no Hydra here)."""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data.resolve import resolve_data
from orchestrator.data.shapes import DatasetFiles
from orchestrator.odapi import builder
from orchestrator.odapi.restore import Source
from orchestrator.plan.resolve import (
    StagePlan,
    group_sources,
    run_pipeline,
    stage_pipeline_config,
    stage_plans,
)
from stages import pipeline as pipelines
from stages.spec import Config

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """Hash of our own sources: a code change invalidates finished stages."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("orchestrator/*.py"), *ROOT.glob("stages/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class RunContext:
    cfg: Config
    run_dir: Path
    data: DatasetFiles
    run_config: object  # TrainEvalPipelineConfig shared by all stages
    plans: dict[str, StagePlan]
    stage_store: Path | None = None  # finished stages shared by the jobs of one sweep

    @classmethod
    def create(cls, cfg: Config, run_dir: Path, stage_store: Path | None = None) -> RunContext:
        data = resolve_data(cfg.data, cfg.seed)
        return cls(cfg, run_dir, data, run_pipeline(cfg, data), stage_plans(cfg, run_dir), stage_store)

    @functools.cached_property
    def group_names(self) -> dict[str, list[str]]:
        return builder.group_variable_names(self.run_config.model)

    def backbone_checkpoint(self, create: bool) -> str | None:
        """The user's backbone.checkpoint, or the tiny model's cached pre-training."""
        cfg = self.cfg
        if cfg.backbone.checkpoint:
            path = str(Path(cfg.backbone.checkpoint).expanduser())
            Source("backbone", path).kind()  # fails clearly if missing or foreign
            return path
        if not cfg.model.pretrain_backbone:
            return None
        from orchestrator.engine import pretrain

        if create:
            return pretrain.ensure_backbone(
                cfg.data.cache_dir, self.data, cfg.backbone.pretrain_steps, cfg.seed
            )
        return str(
            pretrain.backbone_path(cfg.data.cache_dir, self.data, cfg.backbone.pretrain_steps, cfg.seed)
        )

    def sources(self, name: str, backbone: str | None) -> dict[str, Source]:
        return group_sources(self.plans[name], self.plans, backbone)

    def pipeline_for(self, name: str, backbone: str | None):
        plan = self.plans[name]
        sources = self.sources(name, backbone)
        kind = (
            "classification"
            if (self.cfg.model.pretrain_backbone and not self.cfg.backbone.checkpoint)
            else None
        )
        if kind is None and backbone:
            kind = Source("backbone", backbone).kind()
        return stage_pipeline_config(
            self.cfg, plan, self.run_config, sources, self.group_names, kind or "detection"
        )

    def write_pipeline(self, name: str, backbone: str | None, config=None) -> Path:
        """Write the stage's pipeline.config (``config``: one already built by ``pipeline_for``)."""
        from orchestrator.plan.resolve import header

        plan = self.plans[name]
        config = config if config is not None else self.pipeline_for(name, backbone)
        return pipelines.write_pipeline(
            config, plan.directory / "pipeline.config", header(plan, self.sources(name, backbone))
        )
