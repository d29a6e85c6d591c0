"""What the built-in datasets share: backgrounds, non-overlapping placement, the cached writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import Box, cached_build, encode_example, write_label_map, write_records

log = logging.getLogger(__name__)
Render = Callable[[np.random.Generator], tuple[np.ndarray, list[Box]]]

BoxPx = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


def gradient_background(rng: np.random.Generator, size: int, noise: float = 18.0) -> np.ndarray:
    """A smooth colour gradient between four random corner colours, plus pixel noise (float)."""
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    s = np.linspace(0.0, 1.0, size)[None, :, None]
    top = corners[0, 0] * (1 - s) + corners[0, 1] * s
    bottom = corners[1, 0] * (1 - s) + corners[1, 1] * s
    image = top * (1 - t) + bottom * t
    image += rng.normal(0, noise, size=(size, size, 3))
    return np.clip(image, 0, 255)


def normalised(class_id: int, box: BoxPx, image_size: int) -> Box:
    """A pixel box (x0, y0, x1, y1) as the OD API's normalised (ymin, xmin, ymax, xmax) ``Box``."""
    n = float(image_size)
    return Box(class_id, box[1] / n, box[0] / n, box[3] / n, box[2] / n)


def iou(a: BoxPx, b: BoxPx) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def free_spot(
    rng: np.random.Generator, image_size: int, width: int, height: int, placed: list[BoxPx], max_iou: float
) -> BoxPx | None:
    """A random box of ``width`` x ``height`` inside the image overlapping ``placed`` by at most ``max_iou``."""
    if width > image_size or height > image_size:
        return None
    for _attempt in range(20):
        x0 = int(rng.integers(0, image_size - width + 1))
        y0 = int(rng.integers(0, image_size - height + 1))
        box = (x0, y0, x0 + width, y0 + height)
        if all(iou(box, other) <= max_iou for other in placed):
            return box
    return None


def ensure_generated(
    kind: str, key: str, render: Render, class_names: tuple[str, ...], counts: tuple[int, int], seed: int,
    cache_dir: Path,
) -> DatasetFiles:  # fmt: skip
    """Generate (or reuse from ``cache_dir/<kind>-<key>``) train/val TFRecords and the label map.

    ``key`` must change with anything that changes the pixels (parameters, generator version),
    so a second run or a parallel sweep job reuses one copy. Val uses its own seed stream.
    """
    target = Path(cache_dir).expanduser() / f"{kind}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)

    def examples(split: str, count: int, split_seed: int):
        rng = np.random.default_rng(split_seed)
        for i in range(count):
            image, boxes = render(rng)
            yield encode_example(image, boxes, class_names, key=f"{split}_{i:06d}")

    def build(tmp: Path) -> None:
        log.info("Generating %s dataset (%d train / %d val) -> %s", kind, *counts, target)
        write_records(tmp / "train.record", examples("train", counts[0], seed))
        write_records(tmp / "val.record", examples("val", counts[1], seed + 1_000_003))
        write_label_map(tmp / "label_map.pbtxt", class_names)

    if not cached_build(target, build):
        log.info("Using cached %s dataset %s", kind, target)
    return DatasetFiles(
        train=str(target / "train.record"),
        val=str(target / "val.record"),
        label_map=str(target / "label_map.pbtxt"),
        num_classes=len(class_names),
        fingerprint=key,
    )
