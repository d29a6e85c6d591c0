"""Dataset validation before any training: one readable error, or a cleaned copy.

Checks every record of a split: it parses, its image decodes, its boxes are finite, inside
[0, 1] and non-degenerate, its class ids exist in the label map, the split is not empty, and
the val split has boxes (mAP needs them).
``data.bad_boxes``: ``error`` (default) stops at the first bad box naming the file, record
index and what is wrong; ``skip`` drops bad boxes, ``clip`` clips them into the image (dropping
what is still degenerate); both write a cleaned copy and report the counts.

Records converted from COCO / VOC have a ``<record>.sources.json`` beside them (see
:func:`write_sources`): errors then name the user's annotation file and image, not the record.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from orchestrator.data.tfrecords import cached_build
from orchestrator.layout import fingerprint
from stages.errors import UserError

log = logging.getLogger(__name__)
BOX_KEYS = ("ymin", "xmin", "ymax", "xmax")
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    **{f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in BOX_KEYS},
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
}


class DataValidationError(UserError, ValueError):
    """A dataset that would break or silently corrupt training."""


@dataclass(frozen=True)
class SplitReport:
    path: str  # the records to train on (the cleaned copy when boxes were dropped or clipped)
    records: int
    boxes: int
    dropped: int = 0
    clipped: int = 0


def sources_path(record: str | Path) -> Path:
    """Where the converter records which user item each record of ``record`` came from."""
    return Path(f"{record}.sources.json")


def write_sources(record: Path, source: str, items: list[str]) -> None:
    """``source``: the split's annotations (a file or list); ``items``: one string per record."""
    sources_path(record).write_text(json.dumps({"source": source, "records": items}))


def _read_sources(record: str) -> tuple[str | None, list[str]]:
    path = sources_path(record)
    if not path.is_file():
        return None, []
    data = json.loads(path.read_text())
    return data["source"], data["records"]


def _files(pattern: str) -> list[str]:
    files = sorted(glob.glob(str(Path(pattern).expanduser())))
    if not files:
        raise DataValidationError(f"{pattern}: no file matches")
    return files


def _box_problem(box: list[float]) -> str | None:
    ymin, xmin, ymax, xmax = box
    if not all(math.isfinite(v) for v in box):
        return f"box {dict(zip(BOX_KEYS, box, strict=True))} is not finite"
    for name, value in zip(BOX_KEYS, box, strict=True):
        if not 0.0 <= value <= 1.0:
            return f"box {name}={value:g} outside [0, 1]"
    if ymin >= ymax:
        return f"box ymin={ymin:g} >= ymax={ymax:g}"
    if xmin >= xmax:
        return f"box xmin={xmin:g} >= xmax={xmax:g}"
    return None


def _clip(box: list[float]) -> list[float]:
    return [min(max(v, 0.0), 1.0) for v in box]


def _parse(serialized: bytes, where: str) -> tuple[tf.train.Example, list[list[float]], list[int]]:
    try:
        parsed = tf.io.parse_single_example(serialized, FEATURES)
        tf.io.decode_image(parsed["image/encoded"], channels=3)
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\].*", "", str(exc).splitlines()[0])[:160]
        raise DataValidationError(
            f"{where}: cannot decode ({reason}): replace the image or remove it from the split"
        ) from exc
    coords = [tf.sparse.to_dense(parsed[f"image/object/bbox/{k}"]).numpy().tolist() for k in BOX_KEYS]
    labels = tf.sparse.to_dense(parsed["image/object/class/label"]).numpy().tolist()
    if len({len(c) for c in coords} | {len(labels)}) != 1:
        raise DataValidationError(
            f"{where}: {len(labels)} class labels but box coordinate lists of {[len(c) for c in coords]}"
        )
    return tf.train.Example.FromString(serialized), [list(b) for b in zip(*coords, strict=True)], labels


def _scan(pattern: str, class_ids: set[int], policy: str, split: str, writer=None) -> SplitReport:
    records = boxes = dropped = clipped = 0
    source = pattern
    for path in _files(pattern):
        name = Path(path).name
        converted_from, items = _read_sources(path)
        source = converted_from or source
        try:
            for index, serialized in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                where = items[index] if index < len(items) else f"{name} #{index}"
                example, image_boxes, labels = _parse(serialized, where)
                kept_boxes, kept_labels = [], []
                for box, label in zip(image_boxes, labels, strict=True):
                    if label not in class_ids:
                        raise DataValidationError(
                            f"{where}: class id {label} is not in the label map (ids {sorted(class_ids)})"
                        )
                    problem = _box_problem(box)
                    if problem and policy == "clip" and all(math.isfinite(v) for v in box):
                        box, problem, clipped = _clip(box), _box_problem(_clip(box)), clipped + 1
                    if problem and policy == "error":
                        raise DataValidationError(
                            f"{where}: {problem}. Fix the data, or pass data.bad_boxes=skip (drop such "
                            f"boxes) or data.bad_boxes=clip."
                        )
                    if problem:
                        dropped += 1
                        continue
                    kept_boxes.append(box)
                    kept_labels.append(label)
                records += 1
                boxes += len(kept_boxes)
                if writer is not None:
                    writer.write(_rewrite(example, kept_boxes, kept_labels).SerializeToString())
        except tf.errors.DataLossError as exc:
            raise DataValidationError(
                f"{name}: corrupt TFRecord file after record {records} ({exc.message[:120]})"
            ) from exc
    if records == 0:
        raise DataValidationError(
            f"{split} split {source}: no records (an empty split cannot train or evaluate)"
        )
    if split == "val" and boxes == 0:
        lost = f" (data.bad_boxes={policy} dropped all {dropped})" if dropped else ""
        raise DataValidationError(
            f"val split {source} has no boxes{lost}: mAP cannot be computed; add annotated images to it"
        )
    return SplitReport(pattern, records, boxes, dropped, clipped)


def _rewrite(example: tf.train.Example, boxes: list[list[float]], labels: list[int]) -> tf.train.Example:
    out = tf.train.Example()
    out.CopyFrom(example)
    feature = out.features.feature
    for i, key in enumerate(BOX_KEYS):
        feature[f"image/object/bbox/{key}"].float_list.value[:] = [b[i] for b in boxes]
    feature["image/object/class/label"].int64_list.value[:] = labels
    texts = list(feature["image/object/class/text"].bytes_list.value)
    if len(texts) != len(labels):
        del feature["image/object/class/text"]
    return out


def validate_split(
    pattern: str, class_ids: set[int], policy: str, split: str, cache_dir: Path, key: str
) -> SplitReport:
    """Validate one split; with ``skip``/``clip`` and problems, returns a cleaned copy's path."""
    if policy not in ("error", "skip", "clip"):
        raise DataValidationError(f"data.bad_boxes={policy!r}: use error, skip or clip")
    report = _scan(pattern, class_ids, "error" if policy == "error" else policy, split)
    if not (report.dropped or report.clipped):
        return report
    target = cache_dir / f"cleaned-{fingerprint({'key': key, 'split': split, 'policy': policy})}"

    def build(tmp: Path) -> None:
        with tf.io.TFRecordWriter(str(tmp / f"{split}.record")) as writer:
            _scan(pattern, class_ids, policy, split, writer)

    cached_build(target, build)
    log.warning(
        "%s split: data.bad_boxes=%s dropped %d and clipped %d of %d boxes; training on %s",
        split, policy, report.dropped, report.clipped, report.boxes + report.dropped, target,
    )  # fmt: skip
    return SplitReport(
        str(target / f"{split}.record"), report.records, report.boxes, report.dropped, report.clipped
    )
