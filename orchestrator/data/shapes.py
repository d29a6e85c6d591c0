"""``data=shapes``: the built-in, seeded dataset of coloured shapes on textured backgrounds.

Circles, squares and triangles of 20-40 px (by default) in 128x128 images, 1-4 objects per
image, random colours, positions and sizes, over smooth colour gradients with pixel noise.
Written as stock OD API TFRecords plus ``label_map.pbtxt`` into a cache directory keyed by the
parameters, so a second run (or a parallel sweep job) reuses the files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import (
    Box,
    cached_build,
    encode_example,
    write_label_map,
    write_records,
)
from orchestrator.layout import fingerprint

log = logging.getLogger(__name__)

CLASS_NAMES = ("circle", "square", "triangle")
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class ShapesParams:
    num_train: int = 512
    num_val: int = 64
    image_size: int = 128
    min_size: int = 20
    max_size: int = 40
    max_objects: int = 4
    seed: int = 0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    s = np.linspace(0.0, 1.0, size)[None, :, None]
    top = corners[0, 0] * (1 - s) + corners[0, 1] * s
    bottom = corners[1, 0] * (1 - s) + corners[1, 1] * s
    image = top * (1 - t) + bottom * t
    image += rng.normal(0, 18, size=(size, size, 3))
    return np.clip(image, 0, 255)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)


def render_image(rng: np.random.Generator, p: ShapesParams) -> tuple[np.ndarray, list[Box]]:
    """One image and its boxes; objects overlap at most slightly (IoU < 0.1)."""
    canvas = Image.fromarray(_background(rng, p.image_size).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    placed: list[tuple[int, int, int, int]] = []
    boxes: list[Box] = []
    for _ in range(int(rng.integers(1, p.max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.integers(p.min_size, p.max_size + 1))
            x0 = int(rng.integers(0, p.image_size - side + 1))
            y0 = int(rng.integers(0, p.image_size - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_iou(box, other) < 0.1 for other in placed):
                break
        else:
            continue
        class_id = int(rng.integers(1, len(CLASS_NAMES) + 1))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        _draw(draw, CLASS_NAMES[class_id - 1], box, colour)
        placed.append(box)
        n = float(p.image_size)
        boxes.append(Box(class_id, box[1] / n, box[0] / n, box[3] / n, box[2] / n))
    return np.asarray(canvas), boxes


def _examples(p: ShapesParams, split: str, count: int, seed: int) -> Iterator:
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, boxes = render_image(rng, p)
        yield encode_example(image, boxes, CLASS_NAMES, key=f"{split}_{i:06d}")


def ensure_shapes(p: ShapesParams, cache_dir: Path) -> DatasetFiles:
    """Generate (or reuse from ``cache_dir``) the train/val records and the label map."""
    key = fingerprint({"version": GENERATOR_VERSION, **asdict(p)})
    target = Path(cache_dir).expanduser() / f"shapes-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> None:
        log.info("Generating shapes dataset (%d train / %d val) -> %s", p.num_train, p.num_val, target)
        write_records(tmp / "train.record", _examples(p, "train", p.num_train, p.seed))
        write_records(tmp / "val.record", _examples(p, "val", p.num_val, p.seed + 1_000_003))
        write_label_map(tmp / "label_map.pbtxt", CLASS_NAMES)

    if not cached_build(target, build):
        log.info("Using cached shapes dataset %s", target)
    return DatasetFiles(
        train=str(target / "train.record"),
        val=str(target / "val.record"),
        label_map=str(target / "label_map.pbtxt"),
        num_classes=len(CLASS_NAMES),
        fingerprint=key,
    )
