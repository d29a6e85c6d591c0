"""Typed stage specs and the run config schema (Hydra structured configs).

The YAML under ``conf/`` supplies values; these dataclasses give the types, so an unknown key,
an unknown module group or an unknown command fails when Hydra composes the config, naming the
key. :func:`validate_config` then checks what types cannot say (stage order, init sources,
numeric ranges) before anything is built or trained; see "Configuration flow" in
``docs/architecture.md``. :func:`register_configs` puts the schema in Hydra's ConfigStore; the
orchestrator calls it before ``@hydra.main`` runs (no import-time side effects here).

Init sources (``StageSpec.init``): ``backbone`` (the backbone checkpoint), ``fresh`` (random
weights), or the name of an earlier stage (its latest checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf needs typing generics

from omegaconf import MISSING

from stages.errors import UserError


class Group(str, Enum):
    """The units of freezing and initialisation ("Module groups" in ``docs/architecture.md``)."""

    shared = "shared"
    rpn = "rpn"
    detector_features = "detector_features"
    detector_head = "detector_head"


GROUPS: tuple[str, ...] = tuple(g.value for g in Group)
INIT_KEYWORDS: tuple[str, ...] = ("backbone", "fresh")
BAD_BOXES: tuple[str, ...] = ("error", "skip", "clip")


class LRSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class ExportFormat(str, Enum):
    saved_model = "saved_model"
    onnx = "onnx"  # the SavedModel, converted by tf2onnx and checked against it
    all = "all"


class Runtime(str, Enum):
    """What runs an exported detector (``predict.runtime``)."""

    saved_model = "saved_model"
    onnx = "onnx"


class CacheMode(str, Enum):
    """Whether a stage trains on outputs of its frozen parts computed once (``cache.mode``)."""

    auto = "auto"  # wherever it is exact (stages/cache.py says when); otherwise one log line
    force = "force"  # also under random colour augmentation: approximate (logged as such)
    off = "off"


class Strategy(str, Enum):
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


@dataclass
class LossWeights:
    """Multipliers of the base pipeline's four loss weights; 0 switches a loss off."""

    rpn_localization: float = 1.0
    rpn_objectness: float = 1.0
    detector_localization: float = 1.0
    detector_classification: float = 1.0

    @property
    def rpn_only(self) -> bool:
        return self.detector_localization == 0 and self.detector_classification == 0


@dataclass
class GroupInit:
    """Where each module group's initial weights come from."""

    shared: str = "backbone"
    rpn: str = "fresh"
    detector_features: str = "backbone"
    detector_head: str = "fresh"

    def as_dict(self) -> dict[str, str]:
        return {g: getattr(self, g) for g in GROUPS}


@dataclass
class ProposerSpec:
    """Top-k and NMS of a frozen proposer; ``None`` keeps the base config's first stage."""

    max_proposals: Optional[int] = None
    nms_iou_threshold: Optional[float] = None


@dataclass
class StageSpec:
    """One training stage: what trains, from where, with which losses and proposals."""

    name: str = MISSING
    paper_step: str = ""
    trains: List[Group] = MISSING
    init: GroupInit = field(default_factory=GroupInit)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    proposals: str = "self"  # "self" or "frozen:<stage>"
    proposer: ProposerSpec = field(default_factory=ProposerSpec)
    steps: Optional[int] = None  # None: its share of budget.total (end_to_end: the chain's total)
    lr: Optional[float] = None  # None: train.lr
    lr_schedule: LRSchedule = LRSchedule.cosine
    warmup_steps: int = 0

    @property
    def trained_groups(self) -> tuple[str, ...]:
        return tuple(Group(g).value for g in self.trains)

    @property
    def frozen_groups(self) -> tuple[str, ...]:
        return tuple(g for g in GROUPS if g not in self.trained_groups)

    @property
    def proposer_stage(self) -> str | None:
        return self.proposals.split(":", 1)[1] if self.proposals.startswith("frozen:") else None

    @property
    def skips_second_stage(self) -> bool:
        """RPN-only stage: no detector loss and the detector groups frozen.

        Such a stage runs the first stage alone (the second would compute losses that are
        weighted 0 and outputs nobody trains); see "Stages" in ``docs/architecture.md``.
        """
        detector = {Group.detector_features.value, Group.detector_head.value}
        return self.loss_weights.rpn_only and detector.isdisjoint(self.trained_groups)

    def input_stages(self) -> tuple[str, ...]:
        """Earlier stages this one reads (init sources and proposer), in first-seen order."""
        names = [s for s in self.init.as_dict().values() if s not in INIT_KEYWORDS]
        if self.proposer_stage:
            names.append(self.proposer_stage)
        return tuple(dict.fromkeys(names))


@dataclass
class Stages:
    """Every stage the orchestrator knows, in run order: the one place the stage names are spelled.

    ``STAGE_NAMES`` and the stage members of ``Command`` are derived from these fields; each
    field needs a ``conf/stages/<name>.yaml`` and a ``stages@stages.<name>`` default in
    ``conf/config.yaml``. ``end_to_end`` (the baseline) must stay last.
    """

    s1_rpn: StageSpec = MISSING
    s2_fast_rcnn: StageSpec = MISSING
    s3_rpn_shared: StageSpec = MISSING
    s4_detector_head: StageSpec = MISSING
    end_to_end: StageSpec = MISSING


STAGE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Stages))
ALTERNATING_STAGES: tuple[str, ...] = tuple(n for n in STAGE_NAMES if n != "end_to_end")
if STAGE_NAMES[-1:] != ("end_to_end",):
    raise AssertionError(f"stages.spec.Stages must end with end_to_end, not {STAGE_NAMES[-1]!r}")

# What ``python -m orchestrator stage=...`` does: a run-wide command or one stage by name. Built
# with the Enum functional API so the stage members come from ``Stages``; ``module`` and
# ``qualname`` keep it picklable (sweep launchers pickle the config).
Command = Enum(
    "Command",
    [(n, n) for n in ("all", "alternating", "plan", *STAGE_NAMES, "compare", "export", "predict")],
    type=str,
    module=__name__,
    qualname="Command",
)
# Commands that read finished stages and train nothing (a non-chief worker only waits for the
# chief to finish them; Hydra files their config under .hydra/<command>/).
TRAINS_NOTHING = (Command.plan, Command.compare, Command.export, Command.predict)


@dataclass
class ScheduleConfig:
    name: str = MISSING
    stages: List[str] = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    base: str = MISSING  # a file in conf/pipelines/
    feature_extractor: Optional[str] = None  # overrides the base's feature_extractor.type
    pipeline_config: Optional[str] = None  # a user's stock pipeline.config, replaces `base`
    image_size: Optional[int] = None  # fixed_shape_resizer override
    batch_size: Optional[int] = None
    pretrain_backbone: bool = False  # built-in classification pre-training (tiny only)


GENERATED_DATA: tuple[str, ...] = ("shapes", "glyphs")  # built-in kinds drawn at data.image_size


@dataclass
class DataConfig:
    kind: str = "shapes"  # shapes | glyphs | tfrecord | coco | voc
    train: Optional[str] = None  # tfrecord: records (glob); coco: annotation JSON; voc: split name
    val: Optional[str] = None
    label_map: Optional[str] = None  # tfrecord only (coco/voc take classes from annotations)
    train_images: Optional[str] = None  # coco: image folders
    val_images: Optional[str] = None
    root: Optional[str] = None  # voc: VOCdevkit/VOC2007
    bad_boxes: str = "error"  # error | skip | clip
    num_train: int = 512
    num_val: int = 64
    image_size: int = 128
    cache_dir: str = "~/.cache/frcnn-alt"


@dataclass
class TrainConfig:
    lr: float = 0.02
    strategy: Strategy = Strategy.default
    checkpoint_every: int = 200
    log_every: int = 25
    keep_checkpoints: int = 3
    steps_per_loop: int = 25  # train steps per compiled call: one call per log_every (BENCHMARKS.md, cadence)
    # multi_worker only: a worker silent this long is lost (the others stop with an error, not hang);
    # all workers must have started within cluster_timeout_s; SLURM ports: port_base (None: from the job id).
    heartbeat_timeout_s: int = 30
    cluster_timeout_s: int = 600
    port_base: Optional[int] = None


@dataclass
class BackboneConfig:
    checkpoint: Optional[str] = None  # classification or detection checkpoint
    pretrain_steps: int = 800


@dataclass
class EvalConfig:
    max_images: Optional[int] = None  # None: the whole val split
    # Evaluate every N steps while a stage trains (anytime curves; the final step always is).
    # None: only the final step. Default 500: in the default run (1000 steps a stage) end_to_end's
    # 4000 steps get 8 points and each stage 2; measured cost: README, "What you get".
    every: Optional[int] = 500


@dataclass
class PredictConfig:
    images: Optional[str] = None  # a folder or a glob of PNG/JPEG files
    model: str = "alternating"  # alternating | end_to_end
    score_threshold: float = 0.3
    runtime: Runtime = Runtime.saved_model  # onnx: export.format's ONNX model (converted if missing)


@dataclass
class ExportConfig:
    format: ExportFormat = ExportFormat.saved_model  # onnx | all also convert (and parity-check)
    opset: int = 17  # tf2onnx 1.17 converts our Faster R-CNN at 11-18 (orchestrator/outputs/onnx_export.py)
    score_threshold: float = 0.3  # parity: detections at or above this score must match


@dataclass
class BudgetConfig:
    """The alternating chain's training steps and their split over its stages.

    ``end_to_end`` gets the same total (the resolved stages' sum) unless its spec sets steps;
    a stage's own ``stages.<name>.steps`` replaces its share.
    """

    name: str = "equal"
    total: Optional[int] = None  # None: `steps` x the schedule's stages
    split: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])  # one weight per stage


@dataclass
class CacheConfig:
    """Frozen parts computed once per (image, flip) instead of every step ("Caching" in the README).

    What each stage caches, and when that is exact: ``stages/cache.py``. Written under the run
    (``<run>/cache``; a sweep's jobs share ``<sweep>/cache``) and read from memory up to
    ``memory_mb``, else from disk up to ``disk_mb``; a larger one is not built (the stage
    computes those parts every step). ``float16`` halves cached features (approximate);
    ``keep`` leaves a stage's cache on disk after it finishes (for later runs and sweeps).
    """

    mode: CacheMode = CacheMode.auto
    memory_mb: int = 2048
    disk_mb: int = 20480
    float16: bool = False
    keep: bool = False


@dataclass
class Config:
    stage: Command = Command.all
    steps: int = 600  # per alternating stage, when budget.total is not set
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    seed: int = 0
    wait_for_lock: bool = False  # another process holds the run dir: wait instead of stopping
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stages: Stages = field(default_factory=Stages)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


class SpecError(UserError, ValueError):
    """A stage spec that is well-typed but inconsistent (names the key and the value)."""


# Lowest allowed value of integer settings (None, where the schema allows it, always passes):
# key, lowest value, what the number is, how to fix it.
_MINIMUMS: tuple[tuple[str, int, str, str], ...] = (
    (
        "model.batch_size",
        1,
        "the images per training step",
        "set e.g. model.batch_size=2, or null for the base pipeline's",
    ),
    (
        "model.image_size",
        32,
        "the resized image side in pixels",
        "set e.g. model.image_size=128, or null for the base pipeline's",
    ),
    ("train.checkpoint_every", 1, "the steps between checkpoints", "set e.g. train.checkpoint_every=200"),
    ("train.log_every", 1, "the steps between logged losses", "set e.g. train.log_every=25"),
    ("train.keep_checkpoints", 1, "the checkpoints kept per stage", "set e.g. train.keep_checkpoints=3"),
    ("train.steps_per_loop", 1, "the steps per compiled call", "set e.g. train.steps_per_loop=10"),
    (
        "train.heartbeat_timeout_s",
        1,
        "the seconds before a silent worker counts as lost",
        "set e.g. train.heartbeat_timeout_s=30",
    ),
    (
        "train.cluster_timeout_s",
        1,
        "the seconds all workers have to start",
        "set e.g. train.cluster_timeout_s=600",
    ),
    (
        "cache.memory_mb",
        0,
        "the most memory a stage's cache may take, in MiB",
        "set e.g. cache.memory_mb=2048",
    ),
    (
        "cache.disk_mb",
        0,
        "the most disk a stage's cache read from disk may take, in MiB",
        "set e.g. cache.disk_mb=20480",
    ),
    (
        "eval.max_images",
        1,
        "the val images evaluated",
        "set e.g. eval.max_images=64, or null for the whole val split",
    ),
    (
        "eval.every",
        1,
        "the steps between evaluations",
        "set e.g. eval.every=500, or null for the final step only",
    ),
    ("data.num_train", 1, "the generated train images", "set e.g. data.num_train=512"),
    ("data.num_val", 1, "the generated val images", "set e.g. data.num_val=64"),
    ("data.image_size", 32, "the generated image side in pixels", "set e.g. data.image_size=128"),
    (
        "backbone.pretrain_steps",
        1,
        "the backbone pre-training steps",
        "set e.g. backbone.pretrain_steps=800, or model.pretrain_backbone=false to skip pre-training",
    ),
)


def _require(key: str, value: Any, ok: bool, rule: str, fix: str) -> None:
    """Raise ``SpecError("<key>=<value> is out of range: <rule>; <fix>.")`` unless ``ok``."""
    if not ok:
        raise SpecError(f"{key}={value!r} is out of range: {rule}; {fix}.")


def _positive_lr(key: str, lr: float, fix: str) -> None:
    ok = isinstance(lr, int | float) and math.isfinite(lr) and lr > 0
    _require(key, lr, ok, "a learning rate must be a finite number > 0", fix)


def _lookup(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate_stage(key: str, spec: StageSpec, earlier: tuple[str, ...]) -> None:
    """Check what types cannot: init sources and proposers name known, earlier stages; ranges."""
    for group, source in spec.init.as_dict().items():
        if source in INIT_KEYWORDS:
            continue
        if source not in STAGE_NAMES:
            raise SpecError(
                f"stages.{key}.init.{group}={source!r} is not an init source: use "
                f"{', '.join(INIT_KEYWORDS)} or a stage name ({', '.join(STAGE_NAMES)})."
            )
        if source not in earlier:
            raise SpecError(
                f"stages.{key}.init.{group}={source!r} names a stage that does not run before "
                f"{key} in this schedule (earlier: {list(earlier) or 'none'})."
            )
    if spec.proposals != "self":
        stage = spec.proposer_stage
        if stage is None or stage not in earlier:
            raise SpecError(
                f"stages.{key}.proposals={spec.proposals!r}: use 'self' or 'frozen:<stage>' with a "
                f"stage that runs before {key} (earlier: {list(earlier) or 'none'})."
            )
    if not spec.trains:
        raise SpecError(f"stages.{key}.trains is empty: a stage must train at least one group.")
    if spec.steps is not None and spec.steps <= 0:
        raise SpecError(f"stages.{key}.steps ({spec.steps}) must be a positive integer.")
    if spec.lr is not None:
        _positive_lr(f"stages.{key}.lr", spec.lr, f"set e.g. stages.{key}.lr=0.01, or null for train.lr")
    _require(
        f"stages.{key}.warmup_steps",
        spec.warmup_steps,
        spec.warmup_steps >= 0,
        "the warmup steps must be >= 0",
        f"set stages.{key}.warmup_steps=0 for no warmup",
    )
    top_k, iou = spec.proposer.max_proposals, spec.proposer.nms_iou_threshold
    _require(
        f"stages.{key}.proposer.max_proposals",
        top_k,
        top_k is None or top_k >= 1,
        "the proposals kept per image must be >= 1",
        f"set e.g. stages.{key}.proposer.max_proposals=300, or null for the base pipeline's",
    )
    _require(
        f"stages.{key}.proposer.nms_iou_threshold",
        iou,
        iou is None or 0 < iou <= 1,
        "an NMS IoU threshold must be in (0, 1]",
        f"set e.g. stages.{key}.proposer.nms_iou_threshold=0.7, or null for the base pipeline's",
    )


def validate_ranges(cfg: Config) -> None:
    """Run-wide numeric ranges and choices that the schema's types cannot state."""
    for key, low, what, fix in _MINIMUMS:
        value = _lookup(cfg, key)
        _require(key, value, value is None or value >= low, f"{what} must be >= {low}", fix)
    _positive_lr("train.lr", cfg.train.lr, "set e.g. train.lr=0.02")
    threshold = cfg.predict.score_threshold
    _require(
        "predict.score_threshold",
        threshold,
        0 <= threshold <= 1,
        "a score threshold must be in [0, 1]",
        "set e.g. predict.score_threshold=0.3",
    )
    _require("export.opset", cfg.export.opset, 11 <= cfg.export.opset <= 18,
             "tf2onnx converts this model at opsets 11-18", "set e.g. export.opset=17")  # fmt: skip
    _require("export.score_threshold", cfg.export.score_threshold, 0 <= cfg.export.score_threshold <= 1,
             "a score threshold must be in [0, 1]", "set e.g. export.score_threshold=0.3")  # fmt: skip
    if cfg.data.bad_boxes not in BAD_BOXES:
        raise SpecError(
            f"data.bad_boxes={cfg.data.bad_boxes!r} is not a policy: use {' | '.join(BAD_BOXES)} "
            f"(stop at the first bad box, drop bad boxes, or clip them into the image)."
        )


def validate_budget(cfg: Config) -> None:
    """One positive weight per scheduled stage, and at least one step for each."""
    split, stages = list(cfg.budget.split), list(cfg.schedule.stages)
    if len(split) != len(stages) or not all(math.isfinite(w) and w > 0 for w in split):
        raise SpecError(
            f"budget.split={split} must give one weight > 0 per scheduled stage ({len(stages)}: "
            f"{', '.join(stages)}); set e.g. budget.split=[1,1,1,1], or budget=paper for [2,1,2,1]."
        )
    total = cfg.budget.total
    _require(
        "budget.total",
        total,
        total is None or total >= len(stages),
        f"the alternating chain needs at least one step per stage ({len(stages)})",
        "set e.g. budget.total=4000, or null for steps x stages",
    )


def validate_config(cfg: Config) -> None:
    """Whole-run checks after composition: ranges, schedule names, stage order, steps."""
    if cfg.steps <= 0:
        raise SpecError(f"steps ({cfg.steps}) must be a positive integer.")
    validate_ranges(cfg)
    for name in cfg.schedule.stages:
        if name not in ALTERNATING_STAGES:
            raise SpecError(
                f"schedule.stages: {name!r} is not an alternating stage "
                f"(known: {', '.join(ALTERNATING_STAGES)})."
            )
    validate_budget(cfg)
    earlier: tuple[str, ...] = ()
    for name in cfg.schedule.stages:
        validate_stage(name, getattr(cfg.stages, name), earlier)
        earlier += (name,)
    validate_stage("end_to_end", cfg.stages.end_to_end, ())


def times(factor: float, value: float | None) -> float | None:
    """``${frcnn_alt_times:2,${train.lr}}``: a rate that follows ``train.lr`` at a fixed ratio
    (stage 1's and end_to_end's defaults), so a sweep over ``train.lr`` still moves every stage."""
    return None if value is None else float(factor) * float(value)


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore as ``config_schema``, and the ``frcnn_alt_times``
    resolver the stage files use (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="config_schema", node=Config)
    if not OmegaConf.has_resolver("frcnn_alt_times"):
        OmegaConf.register_new_resolver("frcnn_alt_times", times)


def to_object(cfg: Any) -> Config:
    """Composed DictConfig -> typed :class:`Config` (dataclass instances all the way down)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg)
