"""data=shapes: one to four objects of every class, of the sizes it promises."""

from __future__ import annotations

import numpy as np

from orchestrator.data.shapes import ShapesParams, render_image


def test_images_have_one_to_four_objects_of_every_class():
    p = ShapesParams()
    rng = np.random.default_rng(0)
    counts, classes = [], set()
    for _ in range(60):
        image, boxes = render_image(rng, p)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        counts.append(len(boxes))
        classes |= {b.class_id for b in boxes}
        for b in boxes:
            side = (b.xmax - b.xmin) * 128
            assert 20 <= side <= 40 and 0 <= b.ymin < b.ymax <= 1 and 0 <= b.xmin < b.xmax <= 1
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    assert classes == {1, 2, 3}
