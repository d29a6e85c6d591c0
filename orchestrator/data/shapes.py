"""``data=shapes``: the built-in, seeded dataset of coloured shapes on textured backgrounds.

Circles, squares and triangles of 20-40 px (by default) in 128x128 images, 1-4 objects per
image, random colours, positions and sizes, over smooth colour gradients with pixel noise.
Written as stock OD API TFRecords plus ``label_map.pbtxt`` into a cache directory keyed by the
parameters, so a second run (or a parallel sweep job) reuses the files.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from orchestrator.data.builtin import ensure_generated, gradient_background, iou, normalised
from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import Box
from orchestrator.layout import fingerprint

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
    canvas = Image.fromarray(gradient_background(rng, p.image_size).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    placed: list[tuple[int, int, int, int]] = []
    boxes: list[Box] = []
    for _ in range(int(rng.integers(1, p.max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.integers(p.min_size, p.max_size + 1))
            x0 = int(rng.integers(0, p.image_size - side + 1))
            y0 = int(rng.integers(0, p.image_size - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(iou(box, other) < 0.1 for other in placed):
                break
        else:
            continue
        class_id = int(rng.integers(1, len(CLASS_NAMES) + 1))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        _draw(draw, CLASS_NAMES[class_id - 1], box, colour)
        placed.append(box)
        boxes.append(normalised(class_id, box, p.image_size))
    return np.asarray(canvas), boxes


def ensure_shapes(p: ShapesParams, cache_dir: Path) -> DatasetFiles:
    """Generate (or reuse from ``cache_dir``) the train/val records and the label map."""
    render = functools.partial(render_image, p=p)
    counts = (p.num_train, p.num_val)
    return ensure_generated(
        "shapes",
        fingerprint({"version": GENERATOR_VERSION, **asdict(p)}),
        render,
        CLASS_NAMES,
        counts,
        p.seed,
        cache_dir,
    )
