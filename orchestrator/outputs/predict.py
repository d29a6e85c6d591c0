"""``stage=predict``: run an exported detector on images; annotated PNGs + detections.json.

``detections.json`` is in COCO results format (``image_id`` = file name, ``bbox`` = [x, y, w, h]
in pixels). Drawing uses the OD API's own ``visualization_utils``. Every image is opened and
fully decoded (:func:`check_images`) before the model loads or anything is written, so a bad
file stops the stage with nothing half-written.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from orchestrator.data.validate import DataValidationError
from orchestrator.odapi import label_map_util
from orchestrator.outputs.detectors import load_detector
from stages.spec import Runtime

log = logging.getLogger(__name__)
SUFFIXES = (".png", ".jpg", ".jpeg")


def image_paths(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    files = sorted(path.iterdir()) if path.is_dir() else [Path(p) for p in sorted(glob.glob(str(path)))]
    files = [f for f in files if f.suffix.lower() in SUFFIXES]
    if not files:
        raise DataValidationError(f"predict.images={spec!r}: no PNG or JPEG image found")
    return files


def check_images(paths: list[Path]) -> None:
    """Open and fully decode every image; raise naming each one that fails (nothing written yet)."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.convert("RGB")  # a full decode: truncated files fail here, not mid-stage
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = "not an image PIL can identify" if isinstance(exc, UnidentifiedImageError) else exc
            bad.append(f"{path} ({reason})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataValidationError(
            f"predict.images: {len(bad)} of {len(paths)} files are not readable images: {shown}. "
            f"Nothing was written: fix or remove them and rerun"
        )


def predict(
    model: Path, runtime: Runtime, label_map: str, images: list[Path], out_dir: Path, threshold: float
) -> list[dict]:
    """``model``: a SavedModel directory or an ONNX file, as ``runtime`` says."""
    check_images(images)
    from object_detection.utils import visualization_utils as viz

    detect = load_detector(model, runtime)
    categories = label_map_util.create_category_index_from_labelmap(label_map)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        found = detect(image)
        boxes, classes, scores = found.boxes, found.classes, found.scores
        drawn = image.copy()
        viz.visualize_boxes_and_labels_on_image_array(
            drawn,
            boxes,
            classes,
            scores,
            categories,
            use_normalized_coordinates=True,
            min_score_thresh=threshold,
        )
        Image.fromarray(drawn).save(out_dir / f"{path.stem}.png")
        h, w = image.shape[:2]
        for box, cls, score in zip(boxes, classes, scores, strict=True):
            if score >= threshold:
                y0, x0, y1, x1 = box * [h, w, h, w]
                results.append(
                    {
                        "image_id": path.name,
                        "category_id": int(cls),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "score": float(score),
                    }
                )
    (out_dir / "detections.json").write_text(json.dumps(results, indent=1))
    log.info("predict: %d images, %d detections >= %.2f -> %s", len(images), len(results), threshold, out_dir)
    return results
