"""When a stage may train on its frozen parts' outputs computed once: a pure decision.

A frozen part (BatchNorm included, pinned to inference mode by :mod:`stages.groups`) computes a
function of the preprocessed image alone, so its output can be computed once per (image, flip)
instead of every step ("Caching frozen parts" in ``docs/architecture.md``). What a stage caches
follows from its spec (:func:`parts`): stage 2 the proposals of the frozen stage-1 network;
stage 3 its frozen shared features; stage 4 its frozen shared features and the proposals of
its own frozen RPN.

This is exact only when the preprocessed image is one of those the cache was built from: the
stock pipeline with its horizontal flip forced off and forced on. So any augmentation that
changes the image randomly (other than that flip) turns caching off for the stage, with one
line naming the option; so do settings the cached path does not reproduce. Everything here
reads the stage's spec and its generated ``pipeline.config``, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from object_detection.protos import pipeline_pb2, preprocessor_pb2

from stages.spec import CacheConfig, CacheMode, StageSpec, Strategy

FLIP = "random_horizontal_flip"
# Steps that leave the image a deterministic function of the decoded one: cached outputs stay exact.
DETERMINISTIC_IMAGE = frozenset(
    {
        "normalize_image",
        "subtract_channel_mean",
        "rgb_to_gray",
        "adjust_gamma",
        "resize_image",
        "scale_boxes_to_pixel_coordinates",
    }
)
# Steps that change labels only (random or not): the frozen outputs depend on the image alone.
LABELS_ONLY = frozenset(
    {"convert_class_logits_to_softmax", "remap_labels", "drop_label_probabilistically", "random_jitter_boxes"}
)
ALLOWED = DETERMINISTIC_IMAGE | LABELS_ONLY | {FLIP}
# Random steps that change pixel values, not where things are: they commute with a horizontal
# flip (in distribution), so cache.mode=force can move the flip after them, into the training
# step, and key entries by record and flip. The frozen parts then see the image without them.
PHOTOMETRIC = frozenset(
    {
        "random_adjust_brightness",
        "random_adjust_contrast",
        "random_adjust_hue",
        "random_adjust_saturation",
        "random_distort_color",
        "random_rgb_to_gray",
        "random_pixel_value_scale",
        "random_jpeg_quality",
    }
)


def augmentation_steps() -> tuple[str, ...]:
    """Every ``PreprocessingStep`` the installed OD API knows (the oneof's field names)."""
    oneof = preprocessor_pb2.PreprocessingStep.DESCRIPTOR.oneofs_by_name["preprocessing_step"]
    return tuple(f.name for f in oneof.fields)


PROPOSALS, FEATURES = "proposals", "features"


@dataclass(frozen=True)
class CacheDecision:
    """Whether ``stage`` trains on cached ``parts``; ``why`` is the log line either way."""

    stage: str
    on: bool
    why: str
    parts: tuple[str, ...] = ()
    flips: tuple[bool, ...] = ()  # the flip states the cache holds (False: unflipped)
    # cache.mode=force: the photometric steps the frozen parts do not see (entries keyed by
    # record and flip, the flip drawn in the training step); () when the cache is exact.
    approximate: tuple[str, ...] = ()
    settings: CacheConfig = field(default_factory=CacheConfig)  # budgets, float16, keep


def parts(spec: StageSpec) -> tuple[str, ...]:
    """What of ``spec``'s frozen parts is a function of the image alone, and so can be cached.

    A frozen proposer: its proposals. Frozen shared convs: their features, plus the proposals
    of the stage's own RPN when that is frozen too and the second stage runs. Nothing for a
    stage that trains its shared convs on its own proposals (stage 1, end_to_end).
    """
    if spec.proposer_stage is not None:
        return (PROPOSALS,)
    if "shared" in spec.trained_groups:
        return ()
    own_proposals = "rpn" not in spec.trained_groups and not spec.skips_second_stage
    return (FEATURES, PROPOSALS) if own_proposals else (FEATURES,)


def stage_cache(
    spec: StageSpec,
    pipeline: pipeline_pb2.TrainEvalPipelineConfig,
    settings: CacheConfig,
    strategy: Strategy,
) -> CacheDecision | None:
    """The decision for a stage with something to cache; None for a stage with nothing."""
    cached = parts(spec)
    if not cached:
        return None
    what = " and ".join(_describe(spec, p) for p in cached)
    blockers = _blockers(pipeline, settings.mode, strategy, PROPOSALS in cached)
    if blockers:
        return CacheDecision(
            spec.name, False, f"{spec.name}: {what} computed every step: {blockers[0]}", cached
        )
    flips = flip_states(pipeline.train_config)
    approximate = tuple(_photometric(pipeline)) if settings.mode == CacheMode.force else ()
    states = " and ".join("flipped" if f else "unflipped" for f in flips)
    notes = ", features as float16 (approximate)" if settings.float16 and FEATURES in cached else ""
    if approximate:
        notes += (
            f"; APPROXIMATE (cache.mode=force): computed without {', '.join(approximate)}, "
            "keyed by source_id and flip, the flip drawn in the training step"
        )
    why = (
        f"{spec.name}: {what} computed once per image ({states}{notes}), read from memory up to "
        f"cache.memory_mb={settings.memory_mb}, else from disk up to cache.disk_mb={settings.disk_mb} "
        "(cache.mode=off computes them every step)"
    )
    return CacheDecision(spec.name, True, why, cached, flips, approximate, settings)


def _describe(spec: StageSpec, part: str) -> str:
    if part == FEATURES:
        return "frozen shared features"
    source = f"frozen {spec.proposer_stage}" if spec.proposer_stage else "its frozen RPN"
    return f"proposals of {source}"


def flip_step(train_config):
    """The first ``random_horizontal_flip`` step's settings; None without one."""
    for step in train_config.data_augmentation_options:
        if step.WhichOneof("preprocessing_step") == FLIP:
            return step.random_horizontal_flip
    return None


def flip_states(train_config) -> tuple[bool, ...]:
    """The flip states training can draw: both for a flip of probability strictly in (0, 1)."""
    step = flip_step(train_config)
    p = step.probability if step is not None else 0.0
    return (False,) if p <= 0 else (True,) if p >= 1 else (False, True)


def _step_names(train_config) -> list[str]:
    return [s.WhichOneof("preprocessing_step") for s in train_config.data_augmentation_options]


def _photometric(pipeline) -> list[str]:
    steps = _step_names(pipeline.train_config)
    return [f"data_augmentation_options[{i}] {name}" for i, name in enumerate(steps) if name in PHOTOMETRIC]


def _blockers(pipeline, mode: CacheMode, strategy: Strategy, proposals: bool) -> list[str]:
    """Why cached outputs would not equal live ones (or are not supported yet), in config order."""
    if mode == CacheMode.off:
        return ["cache.mode=off"]
    force = mode == CacheMode.force
    out = []
    if strategy == Strategy.multi_worker:
        out.append("train.strategy=multi_worker (each worker would build its own cache; not supported yet)")
    steps = _step_names(pipeline.train_config)
    for index, name in enumerate(steps):
        key = f"train_config.data_augmentation_options[{index}] {name}"
        if name in PHOTOMETRIC and not force:
            out.append(
                f"{key} changes the image's colours randomly, so frozen outputs are not a function of the "
                "image alone (cache.mode=force caches them without it: approximate)"
            )
        elif name not in ALLOWED | (PHOTOMETRIC if force else frozenset()):
            out.append(
                f"{key} changes the image randomly, so frozen outputs are not a function of the image alone"
                + (" (it moves pixels: cache.mode=force cannot cache it either)" if force else "")
            )
        elif name == FLIP and steps.index(FLIP) != index:
            out.append(f"{key}: a second horizontal flip (a cached image is flipped once or not at all)")
    if force and _photometric(pipeline) and pipeline.train_input_reader.load_instance_masks:
        out.append("train_input_reader.load_instance_masks: cache.mode=force flips boxes only, not masks")
    if not pipeline.model.faster_rcnn.image_resizer.HasField("fixed_shape_resizer"):
        out.append(
            "model.faster_rcnn.image_resizer is not a fixed_shape_resizer: a batch pads its images to a "
            "common size, so an image's pixels depend on its batch-mates"
        )
    frcnn = pipeline.model.faster_rcnn
    if proposals and (frcnn.first_stage_localization_loss_weight or frcnn.first_stage_objectness_loss_weight):
        out.append(
            "the stage's RPN loss weights are not 0: that loss needs the frozen proposer's live outputs "
            "(stages.<stage>.loss_weights.rpn_*)"
        )
    return out
