"""Writing stock OD API TFRecords and label maps, and an atomic, locked on-disk cache.

The record keys are the ones ``object_detection/dataset_tools`` write and
``TfExampleDecoder`` reads, so every data source we produce is readable by stock tools.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from orchestrator.layout import file_lock


@dataclass(frozen=True)
class Box:
    """One object: class id (1-based, as in the label map) and a normalised box."""

    class_id: int
    ymin: float
    xmin: float
    ymax: float
    xmax: float


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def example_from_encoded(
    encoded: bytes,
    image_format: str,
    width: int,
    height: int,
    key: str,
    boxes: Sequence[Box],
    class_names: Sequence[str],
) -> tf.train.Example:
    """The one place that spells the OD API feature keys: an example from encoded image bytes."""
    feature = {
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/filename": _bytes([key.encode()]),
        "image/source_id": _bytes([key.encode()]),
        "image/key/sha256": _bytes([hashlib.sha256(encoded).hexdigest().encode()]),
        "image/encoded": _bytes([encoded]),
        "image/format": _bytes([image_format.encode()]),
        "image/object/bbox/xmin": _floats([b.xmin for b in boxes]),
        "image/object/bbox/xmax": _floats([b.xmax for b in boxes]),
        "image/object/bbox/ymin": _floats([b.ymin for b in boxes]),
        "image/object/bbox/ymax": _floats([b.ymax for b in boxes]),
        "image/object/class/text": _bytes([class_names[b.class_id - 1].encode() for b in boxes]),
        "image/object/class/label": _ints([b.class_id for b in boxes]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def encode_example(image: np.ndarray, boxes: Sequence[Box], class_names: Sequence[str], key: str):
    """A ``tf.train.Example`` in the OD API's layout for one uint8 HxWx3 image (PNG-encoded)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    height, width = image.shape[:2]
    return example_from_encoded(buf.getvalue(), "png", width, height, key, boxes, class_names)


def write_label_map(path: Path, class_names: Sequence[str]) -> None:
    """``label_map.pbtxt`` with ids 1..N in the order given."""
    items = [f"item {{\n  id: {i}\n  name: '{name}'\n}}\n" for i, name in enumerate(class_names, start=1)]
    path.write_text("".join(items))


def write_records(path: Path, examples: Iterator[tf.train.Example]) -> int:
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
            count += 1
    return count


def cached_build(target: Path, build: Callable[[Path], None]) -> bool:
    """Build ``target`` (a directory) once: in a temp dir, then renamed into place.

    A crash mid-build leaves only a temp dir, never a ``target`` that looks finished.
    Returns True if it built, False if the cache already held it.
    """
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_dir():
            return False
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            build(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True
