"""data=glyphs: ten classes of small cluttered objects, boxes that hug their glyphs."""

from __future__ import annotations

import numpy as np

from orchestrator.data.glyphs import CLASS_NAMES, GlyphParams, render_image


def test_ten_classes_of_small_objects_several_per_image():
    p = GlyphParams()
    rng = np.random.default_rng(0)
    counts, classes, sides = [], set(), []
    for _ in range(80):
        image, boxes = render_image(rng, p)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        counts.append(len(boxes))
        classes |= {b.class_id for b in boxes}
        for b in boxes:
            assert 0 <= b.ymin < b.ymax <= 1 and 0 <= b.xmin < b.xmax <= 1
            sides.append(max(b.ymax - b.ymin, b.xmax - b.xmin) * 128)
    assert len(CLASS_NAMES) >= 10 and classes == set(range(1, len(CLASS_NAMES) + 1))
    assert min(counts) >= 1 and max(counts) <= 8 and np.mean(counts) >= 3
    assert np.median(sides) < 24 and max(sides) <= 40  # small: a shapes object is 20-40 px


def test_boxes_cover_the_ink_of_their_glyph():
    """A box is the glyph's inked extent: its border pixels differ from the background under it."""
    p = GlyphParams(max_distractors=0)
    image, boxes = render_image(np.random.default_rng(5), p)
    blank_rng = np.random.default_rng(5)
    from orchestrator.data.glyphs import _texture

    background = np.asarray(_texture(blank_rng, p)).astype(int)
    for b in boxes:
        y0, x0, y1, x1 = (round(v * 128) for v in (b.ymin, b.xmin, b.ymax, b.xmax))
        changed = np.abs(image[y0:y1, x0:x1].astype(int) - background[y0:y1, x0:x1]).sum(-1) > 0
        assert changed.any(axis=0)[[0, -1]].all() and changed.any(axis=1)[[0, -1]].all()
