"""Per-group initialisation by object-based partial restores, and resume.

The order matters: a resumed stage must not be overwritten by its init sources.

1. The stage's own latest checkpoint, if any: an interrupted stage resumes from it (model,
   optimizer and step) and the spec's init sources are not read at all.
2. Otherwise each group from its spec source: ``backbone`` (a classification checkpoint,
   ``{'feature_extractor': backbone}``, or a detection checkpoint), an earlier stage's latest
   checkpoint, or ``fresh`` (left as built). Restores are ``tf.train.Checkpoint`` trees over just
   that group's sub-models, like the OD API's ``restore_from_objects``; every requested object
   must be found in the checkpoint.
3. A detection source with another class count: the detector head's class predictor stays
   fresh, its class-agnostic box predictor is restored (fine-tuning to new classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from stages.errors import UserError
from stages.groups import GROUP_ATTRIBUTES, ModuleGroups


class RestoreError(UserError):
    """A checkpoint that does not fit the model: names the group, the file and what is missing."""


@dataclass(frozen=True)
class Source:
    """Where one group comes from: ``label`` for reports, ``path`` a checkpoint prefix."""

    label: str
    path: str | None = None  # None: fresh

    def kind(self) -> str:
        """``fresh``, ``classification`` or ``detection``; a :class:`RestoreError` naming the
        file when ``path`` holds no checkpoint or is not a TensorFlow checkpoint."""
        if self.path is None:
            return "fresh"
        where = (
            f"backbone.checkpoint={self.path}" if self.label == "backbone" else f"{self.label}: {self.path}"
        )
        try:
            keys = [k for k, _ in tf.train.list_variables(self.path)]
        except (tf.errors.NotFoundError, ValueError) as exc:
            raise RestoreError(
                f"{where}: no checkpoint there (give a checkpoint prefix such as .../ckpt-10, whose "
                f".index and .data-* files exist, or a directory with a 'checkpoint' file)"
            ) from exc
        except tf.errors.OpError as exc:  # DataLossError and the like: a file, but not a checkpoint
            first = str(exc).splitlines()[0][:200]
            raise RestoreError(
                f"{where}: not a TensorFlow checkpoint ({type(exc).__name__}: {first}); give the "
                f"prefix of a tf.train.Checkpoint (.../ckpt-10), not a SavedModel or another file"
            ) from exc
        if any(k.startswith("feature_extractor/") for k in keys):
            return "classification"
        if any(k.startswith("model/") for k in keys):
            return "detection"
        raise RestoreError(
            f"{where}: neither a classification checkpoint ('feature_extractor/...') nor a "
            f"detection checkpoint ('model/...'); keys start with {sorted({k.split('/')[0] for k in keys})[:5]}"
        )


def _tree(attrs: dict[str, object]) -> tf.train.Checkpoint:
    """A checkpoint tree ``model/<attr>/...`` over just these sub-models of the meta-architecture."""
    return tf.train.Checkpoint(model=tf.train.Checkpoint(**attrs))


def _restore(checkpoint: tf.train.Checkpoint, path: str, what: str) -> None:
    try:
        status = checkpoint.read(path)  # read(): no save_counter, so plain write()s match too
        status.assert_existing_objects_matched()
        status.expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        first = str(exc).splitlines()[0][:300]
        raise RestoreError(f"cannot restore {what} from {path}: {first}") from exc


def _restore_detection(model, group: str, source: Source) -> str:
    attrs = {attr: getattr(model, attr) for attr in GROUP_ATTRIBUTES[group]}
    try:
        _restore(_tree(attrs), source.path, f"group {group!r}")
        return f"{source.label} ({source.path})"
    except RestoreError as exc:
        if group != "detector_head" or "shape" not in str(exc.__cause__):
            raise
    head = model._mask_rcnn_box_predictor
    box = tf.train.Checkpoint(_box_prediction_head=head._box_prediction_head)
    _restore(_tree({"_mask_rcnn_box_predictor": box}), source.path, "detector_head box predictor")
    return f"box predictor from {source.label} ({source.path}); class predictor fresh (class count differs)"


def _restore_classification(model, groups: ModuleGroups, wanted: list[str], source: Source) -> str:
    backbone = model._feature_extractor.classification_backbone
    backbone_refs = {v.ref() for v in backbone.variables}
    keep = [
        (v, v.numpy())
        for g, vs in groups.variables.items()
        if g not in wanted
        for v in vs
        if v.ref() in backbone_refs
    ]
    _restore(tf.train.Checkpoint(feature_extractor=backbone), source.path, "the classification backbone")
    for variable, value in keep:
        variable.assign(value)
    counts = {g: sum(v.ref() in backbone_refs for v in groups.variables[g]) for g in wanted}
    return f"{source.label} ({source.path}, classification; {counts} backbone variables)"


def initialize(model, groups: ModuleGroups, sources: dict[str, Source]) -> dict[str, str]:
    """Restore every group from its source; returns the "init from" report, group -> text."""
    report = {g: "fresh (random init)" for g, s in sources.items() if s.path is None}
    by_path: dict[str, list[str]] = {}
    for group, source in sources.items():
        if source.path is not None:
            by_path.setdefault(source.path, []).append(group)
    for wanted in by_path.values():
        source = sources[wanted[0]]
        if source.kind() == "classification":
            text = _restore_classification(model, groups, wanted, source)
            report.update({g: text for g in wanted})
        else:
            for group in wanted:
                report[group] = _restore_detection(model, group, sources[group])
    return report
