"""``data=glyphs``: the second built-in dataset, harder than shapes and unlike it.

Ten classes of small objects (the digits 0-9, 10-24 px tall by default) in 128x128 images,
2-8 per image, in six DejaVu faces (the fonts matplotlib ships, so nothing is downloaded),
rotated by up to 30 degrees, on textured backgrounds: a colour gradient with noise, random
strokes, and unlabelled distractor glyphs (letters and symbols) that a detector must learn to
ignore. Seeded and cached like ``data=shapes``: stock OD API TFRecords plus a label map, keyed
by the parameters, the generator version and the matplotlib version (its fonts draw the digits).

Why a second dataset: the defaults were first tuned on shapes (three large, distinct classes);
a default that only holds there is not a default. See "Defaults" in BENCHMARKS.md.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from orchestrator.data.builtin import BoxPx, ensure_generated, free_spot, gradient_background, normalised
from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import Box
from orchestrator.layout import fingerprint

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GLYPHS = "0123456789"
DISTRACTORS = "acekmrsvwxz#&%?+"  # no o/l/i/b/g/q: letters that read as digits would mislabel
FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
)
GENERATOR_VERSION = 1
MAX_ROTATION = 30.0  # degrees either way: a 6 never turns into a 9


@dataclass(frozen=True)
class GlyphParams:
    num_train: int = 600
    num_val: int = 100
    image_size: int = 128
    min_size: int = 10
    max_size: int = 24
    min_objects: int = 2
    max_objects: int = 8
    max_distractors: int = 5
    seed: int = 0


@functools.cache
def _font(face: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / face), size)


def _glyph_mask(rng: np.random.Generator, char: str, height: int) -> Image.Image:
    """The glyph's coverage (mode L), rotated and cropped to its ink."""
    font = _font(FACES[int(rng.integers(len(FACES)))], height)
    canvas = Image.new("L", (3 * height, 3 * height), 0)
    ImageDraw.Draw(canvas).text((height, height // 2), char, fill=255, font=font)
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    rotated = canvas.rotate(angle, resample=Image.BILINEAR, expand=True)
    ink = rotated.point(lambda v: 255 if v >= 96 else 0).getbbox()
    return rotated.crop(ink) if ink else rotated


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least 80 grey levels away from the local background's mean."""
    mean = float(background.mean())
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if abs(float(colour.mean()) - mean) >= 80:
            break
    return tuple(int(c) for c in colour)


def _texture(rng: np.random.Generator, p: GlyphParams) -> Image.Image:
    """Gradient and noise, then a few random strokes of clutter."""
    canvas = Image.fromarray(gradient_background(rng, p.image_size, noise=14.0).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, p.image_size, size=4))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 3)))
    return canvas


def _paste(canvas: Image.Image, mask: Image.Image, box: BoxPx, rng: np.random.Generator) -> None:
    region = np.asarray(canvas)[box[1] : box[3], box[0] : box[2]]
    colour = Image.new("RGB", mask.size, _contrasting_colour(rng, region))
    canvas.paste(colour, box[:2], mask)


def render_image(rng: np.random.Generator, p: GlyphParams) -> tuple[np.ndarray, list[Box]]:
    """One image and its boxes (the glyphs' inked extent); objects overlap at most slightly."""
    canvas = _texture(rng, p)
    placed: list[BoxPx] = []
    boxes: list[Box] = []
    for _ in range(int(rng.integers(p.min_objects, p.max_objects + 1))):
        class_id = int(rng.integers(1, len(CLASS_NAMES) + 1))
        mask = _glyph_mask(rng, GLYPHS[class_id - 1], int(rng.integers(p.min_size, p.max_size + 1)))
        box = free_spot(rng, p.image_size, mask.width, mask.height, placed, max_iou=0.05)
        if box is None:
            continue
        _paste(canvas, mask, box, rng)
        placed.append(box)
        boxes.append(normalised(class_id, box, p.image_size))
    for _ in range(int(rng.integers(0, p.max_distractors + 1))):
        char = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        mask = _glyph_mask(rng, char, int(rng.integers(p.min_size, p.max_size + 1)))
        box = free_spot(rng, p.image_size, mask.width, mask.height, placed, max_iou=0.0)
        if box is not None:  # never over a labelled glyph: labels stay true
            _paste(canvas, mask, box, rng)
            placed.append(box)
    return np.asarray(canvas), boxes


def dataset_key(p: GlyphParams) -> str:
    import matplotlib

    return fingerprint({"version": GENERATOR_VERSION, "matplotlib": matplotlib.__version__, **asdict(p)})


def ensure_glyphs(p: GlyphParams, cache_dir: Path) -> DatasetFiles:
    """Generate (or reuse from ``cache_dir``) the train/val records and the label map."""
    render = functools.partial(render_image, p=p)
    counts = (p.num_train, p.num_val)
    return ensure_generated("glyphs", dataset_key(p), render, CLASS_NAMES, counts, p.seed, cache_dir)
