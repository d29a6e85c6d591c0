"""The run, resolved once: its stages' plans and fingerprints, and each stage resolved once.

:meth:`RunContext.create` checks, before any expensive work (no model, no backbone
pre-training), that every input stage the command does not train itself has finished, under
the fingerprint this config expects. :meth:`RunContext.resolve` then turns one stage into a
:class:`ResolvedStage`: everything it needs, with its inputs' checkpoints read from their
``DONE`` records.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.data.files import DatasetFiles
from orchestrator.data.resolve import resolve_data
from orchestrator.layout import DoneRecord, checkpoint_id
from orchestrator.odapi.restore import RestoreError, Source
from orchestrator.plan import configs
from orchestrator.plan.fingerprint import RunIdentity, code_version, stage_fingerprints
from orchestrator.plan.stage_plan import (
    StageNotReady,
    StagePlan,
    not_finished,
    outside_inputs,
    require_finished,
    stage_plans,
)
from stages import pipeline as pipelines
from stages.spec import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProposerInput:
    """The frozen network that proposes boxes for a stage (paper step 2)."""

    stage: str
    pipeline: Any  # TrainEvalPipelineConfig: the proposer stage's own config + top-k/NMS overrides
    checkpoint: str  # from the proposer stage's DONE


@dataclass(frozen=True)
class ResolvedStage:
    """Everything one stage needs, resolved once; nothing downstream re-derives any of it."""

    plan: StagePlan
    fingerprint: str
    inputs: dict[str, DoneRecord]  # input stage -> its DONE record (checkpoint, fingerprint)
    backbone: str | None
    sources: dict[str, Source]  # group -> where its initial weights come from
    pipeline: Any  # the stage's TrainEvalPipelineConfig
    header: str  # the comment block of its pipeline.config
    proposer: ProposerInput | None

    @property
    def name(self) -> str:
        return self.plan.name

    def done_fields(self, data: str, code: str) -> dict:
        """What ``DONE`` records besides the checkpoint (see :mod:`orchestrator.layout`)."""
        return {
            "fingerprint": self.fingerprint,
            "inputs": {n: r.fingerprint for n, r in self.inputs.items()},
            "data": data,
            "code": code,
        }


@dataclass
class RunContext:
    cfg: Config
    run_dir: Path
    plans: dict[str, StagePlan]
    data: DatasetFiles
    run_config: Any  # TrainEvalPipelineConfig shared by all stages
    fingerprints: dict[str, str]  # what each stage's DONE must carry under this config
    stage_store: Path | None = None  # finished stages shared by the jobs of one sweep

    @classmethod
    def create(
        cls, cfg: Config, run_dir: Path, names: list[str] = (), stage_store: Path | None = None
    ) -> RunContext:
        """Plans, data, fingerprints; fails before any training if an input is not ready."""
        plans = stage_plans(cfg, run_dir)
        require_finished(plans, list(names), run_dir)
        data = resolve_data(cfg.data, cfg.seed)
        run_config = configs.run_pipeline(cfg, data)
        identity = RunIdentity(
            data=data.fingerprint,
            backbone=_backbone_identity(cfg, data),
            base_pipeline=configs.base_pipeline_path(cfg).read_text(),
            code=code_version(),
        )
        ctx = cls(
            cfg, run_dir, plans, data, run_config, stage_fingerprints(cfg, plans, identity), stage_store
        )
        for stage, needed in outside_inputs(plans, list(names)):
            ctx.finished_input(stage, needed)
        return ctx

    @property
    def code(self) -> str:
        return code_version()

    def finished_input(self, stage: str, needed: str) -> DoneRecord:
        """``needed``'s DONE record, if it was finished under the fingerprint this config expects."""
        record = self.plans[needed].files.read_done()
        if record is None:
            raise not_finished(self.run_dir, stage, needed)
        if record.fingerprint != self.fingerprints[needed]:
            raise StageNotReady(
                f"stage {stage} needs {needed} as this configuration defines it, but the {needed} "
                f"finished in {self.run_dir} was trained with other settings (fingerprint "
                f"{record.fingerprint}, expected {self.fingerprints[needed]}: e.g. other steps, lr, "
                f"seed, data or code). Nothing was changed. Rerun stage=all (or stage={needed}) with "
                f"these settings, or change only this stage's own options (stages.{stage}.*)."
            )
        return record

    @functools.cached_property
    def group_names(self) -> dict[str, list[str]]:
        from orchestrator.odapi import builder

        return builder.group_variable_names(self.run_config.model)

    def backbone_checkpoint(self, create: bool) -> str | None:
        """The user's backbone.checkpoint, or the tiny model's cached pre-training."""
        cfg = self.cfg
        if cfg.backbone.checkpoint:
            return str(Path(cfg.backbone.checkpoint).expanduser())
        if not cfg.model.pretrain_backbone:
            return None
        from orchestrator.engine import pretrain

        args = (cfg.data.cache_dir, self.data, cfg.backbone.pretrain_steps, cfg.seed)
        return pretrain.ensure_backbone(*args) if create else str(pretrain.backbone_path(*args))

    def _backbone_kind(self, backbone: str | None) -> str:
        if self.cfg.model.pretrain_backbone and not self.cfg.backbone.checkpoint:
            return "classification"
        return Source("backbone", backbone).kind() if backbone else "detection"

    def resolve(self, name: str, planning: bool = False) -> ResolvedStage:
        """One stage, resolved: inputs from their DONE records, then sources, config, proposer.

        ``planning`` (``stage=plan``): unfinished inputs are shown as such instead of failing,
        and no backbone is pre-trained.
        """
        plan = self.plans[name]
        inputs: dict[str, DoneRecord] = {}
        for needed in plan.inputs:
            if planning and self.plans[needed].files.read_done() is None:
                continue
            inputs[needed] = self.finished_input(name, needed)
        backbone = self.backbone_checkpoint(create=not planning)
        finished = {i: (inputs[i].checkpoint if i in inputs else None) for i in plan.inputs}
        sources = configs.group_sources(plan, finished, backbone)
        pipeline = configs.stage_pipeline_config(
            plan, self.run_config, sources, self.group_names, self._backbone_kind(backbone)
        )
        proposer = None
        stage = plan.spec.proposer_stage
        if stage is not None and stage in inputs:
            own = pipelines.load_pipeline(self.plans[stage].files.pipeline)
            proposer = ProposerInput(
                stage, pipelines.proposer_pipeline(own, plan.spec.proposer), inputs[stage].checkpoint
            )
        return ResolvedStage(
            plan=plan,
            fingerprint=self.fingerprints[name],
            inputs=inputs,
            backbone=backbone,
            sources=sources,
            pipeline=pipeline,
            header=configs.header(plan, sources),
            proposer=proposer,
        )


def _backbone_identity(cfg: Config, data: DatasetFiles) -> str | None:
    """The backbone as a fingerprint part: a checkpoint's content id, or the pre-training key."""
    if cfg.backbone.checkpoint:
        path = str(Path(cfg.backbone.checkpoint).expanduser())
        Source("backbone", path).kind()  # a clear error if missing or not a checkpoint
        try:
            return checkpoint_id(path)
        except FileNotFoundError as exc:
            raise RestoreError(f"backbone.checkpoint={cfg.backbone.checkpoint!r}: {exc}") from exc
    if not cfg.model.pretrain_backbone:
        return None
    from orchestrator.engine import pretrain

    return pretrain.backbone_path(cfg.data.cache_dir, data, cfg.backbone.pretrain_steps, cfg.seed).parent.name
