"""Stage spec + base pipeline -> a stock ``TrainEvalPipelineConfig``.

Knows nothing of Hydra: it takes typed specs and protos, so it is tested without composing a
config ("Configuration flow" in ``docs/architecture.md``). The generated config tells the truth
about the stage: its loss weights, ``freeze_variables`` (regexes proven against the built model
by :mod:`stages.freeze`), ``update_trainable_variables``, ``fine_tune_checkpoint`` and steps,
and stays a valid stock config (``config_util`` parses it, ``model_builder`` builds it).
``number_of_stages`` is always 2, even for RPN-only stages: a one-stage checkpoint cannot be
chained into a two-stage model, and every stage's checkpoint must hold all four module groups
so that a later stage can restore any of them ("Module groups" in ``docs/architecture.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from object_detection.protos import pipeline_pb2, train_pb2

from stages.spec import LRSchedule, ProposerSpec, StageSpec

PLACEHOLDER = "PATH_TO_BE_CONFIGURED"


@dataclass(frozen=True)
class RunInputs:
    """What every stage of one run shares: data, classes, sizes."""

    train_path: str
    val_path: str
    label_map: str
    num_classes: int
    batch_size: int | None = None
    image_size: int | None = None
    feature_extractor: str | None = None


@dataclass(frozen=True)
class StageInputs:
    """What differs per stage beyond its spec: resolved steps/LR, freezes, init checkpoint."""

    steps: int
    lr: float
    freeze_patterns: list[str] = field(default_factory=list)
    train_patterns: list[str] = field(default_factory=list)
    fine_tune_checkpoint: str | None = None
    fine_tune_checkpoint_type: str | None = None


def load_pipeline(path: str | Path) -> pipeline_pb2.TrainEvalPipelineConfig:
    """Parse a pipeline.config (ours or a stock zoo one); header comments are fine."""
    config = pipeline_pb2.TrainEvalPipelineConfig()
    try:
        text_format.Merge(Path(path).read_text(), config)
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid pipeline.config: {exc}") from exc
    if config.model.WhichOneof("model") != "faster_rcnn":
        raise ValueError(
            f"{path}: model is {config.model.WhichOneof('model')!r}; frcnn-alt needs a faster_rcnn model."
        )
    return config


def copy_pipeline(config: pipeline_pb2.TrainEvalPipelineConfig) -> pipeline_pb2.TrainEvalPipelineConfig:
    out = pipeline_pb2.TrainEvalPipelineConfig()
    out.CopyFrom(config)
    return out


def run_pipeline(
    base: pipeline_pb2.TrainEvalPipelineConfig, run: RunInputs
) -> pipeline_pb2.TrainEvalPipelineConfig:
    """The base with this run's data, classes and sizes; shared by every stage."""
    config = copy_pipeline(base)
    frcnn = config.model.faster_rcnn
    frcnn.num_classes = run.num_classes
    frcnn.number_of_stages = 2
    if run.feature_extractor:
        frcnn.feature_extractor.type = run.feature_extractor
    if run.image_size is not None:
        resizer = frcnn.image_resizer.fixed_shape_resizer
        resizer.height = resizer.width = run.image_size
    if run.batch_size is not None:  # 0 must not silently mean "the base's" (validate_config rejects it)
        config.train_config.batch_size = run.batch_size
    for reader, path in (
        (config.train_input_reader, run.train_path),
        (
            config.eval_input_reader[0] if config.eval_input_reader else config.eval_input_reader.add(),
            run.val_path,
        ),
    ):
        reader.label_map_path = run.label_map
        del reader.tf_record_input_reader.input_path[:]
        reader.tf_record_input_reader.input_path.append(path)
    config.eval_input_reader[0].shuffle = False
    config.eval_input_reader[0].num_epochs = 1
    if not config.eval_config.metrics_set:
        config.eval_config.metrics_set.append("coco_detection_metrics")
    return config


def _set_learning_rate(
    config: pipeline_pb2.TrainEvalPipelineConfig, spec: StageSpec, steps: int, lr: float
) -> None:
    optimizer = config.train_config.optimizer
    kind = optimizer.WhichOneof("optimizer")
    learning_rate = getattr(optimizer, kind).learning_rate
    if spec.lr_schedule == LRSchedule.cosine:
        cosine = learning_rate.cosine_decay_learning_rate
        cosine.learning_rate_base = lr
        cosine.total_steps = steps
        cosine.warmup_steps = min(spec.warmup_steps, steps)
        cosine.warmup_learning_rate = lr / 10 if spec.warmup_steps else lr
    else:
        learning_rate.constant_learning_rate.learning_rate = lr


def stage_pipeline(
    run_config: pipeline_pb2.TrainEvalPipelineConfig, spec: StageSpec, stage: StageInputs
) -> pipeline_pb2.TrainEvalPipelineConfig:
    """The stage's pipeline.config: ``run_config`` plus the stage's weights, freezes, init, steps."""
    config = copy_pipeline(run_config)
    frcnn = config.model.faster_rcnn
    w = spec.loss_weights
    frcnn.first_stage_localization_loss_weight *= w.rpn_localization
    frcnn.first_stage_objectness_loss_weight *= w.rpn_objectness
    frcnn.second_stage_localization_loss_weight *= w.detector_localization
    frcnn.second_stage_classification_loss_weight *= w.detector_classification
    train = config.train_config
    train.num_steps = stage.steps
    _set_learning_rate(config, spec, stage.steps, stage.lr)
    del train.freeze_variables[:]
    train.freeze_variables.extend(stage.freeze_patterns)
    del train.update_trainable_variables[:]
    train.update_trainable_variables.extend(stage.train_patterns)
    train.ClearField("fine_tune_checkpoint")
    train.ClearField("fine_tune_checkpoint_type")
    train.ClearField("fine_tune_checkpoint_version")
    if stage.fine_tune_checkpoint:
        train.fine_tune_checkpoint = stage.fine_tune_checkpoint
        train.fine_tune_checkpoint_type = stage.fine_tune_checkpoint_type or "detection"
        # Every checkpoint we write is an object-based (TF2) one; the field defaults to V1,
        # which the stock model_lib_v2.train_loop refuses outright.
        train.fine_tune_checkpoint_version = train_pb2.CheckpointVersion.V2
    return config


def proposer_pipeline(
    config: pipeline_pb2.TrainEvalPipelineConfig, proposer: ProposerSpec
) -> pipeline_pb2.TrainEvalPipelineConfig:
    """The frozen proposer's config: its own stage's, with the spec's top-k / NMS overrides."""
    out = copy_pipeline(config)
    if proposer.max_proposals is not None:
        out.model.faster_rcnn.first_stage_max_proposals = proposer.max_proposals
    if proposer.nms_iou_threshold is not None:
        out.model.faster_rcnn.first_stage_nms_iou_threshold = proposer.nms_iou_threshold
    return out


def without_paths(config: pipeline_pb2.TrainEvalPipelineConfig) -> str:
    """The config as text minus every file path: what a stage's fingerprint should hash.

    Paths change when a run directory is copied or a sweep job lives elsewhere; the data and
    init checkpoints they point to are fingerprinted by content instead.
    """
    out = copy_pipeline(config)
    out.train_config.ClearField("fine_tune_checkpoint")
    for reader in (out.train_input_reader, *out.eval_input_reader):
        reader.ClearField("label_map_path")
        reader.tf_record_input_reader.ClearField("input_path")
    return text_format.MessageToString(out)


def to_text(config: pipeline_pb2.TrainEvalPipelineConfig, header: str = "") -> str:
    text = text_format.MessageToString(config)
    if PLACEHOLDER in text:
        raise ValueError(f"generated pipeline.config still contains {PLACEHOLDER}")
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + text


def write_pipeline(config: pipeline_pb2.TrainEvalPipelineConfig, path: Path, header: str = "") -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(to_text(config, header))
    tmp.replace(path)
    return path
