"""Resolve ``data=...`` to validated TFRecords on disk (generating or converting once)."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import replace
from pathlib import Path

from orchestrator.data import validate
from orchestrator.data.files import DatasetFiles
from orchestrator.data.glyphs import GlyphParams, ensure_glyphs
from orchestrator.data.shapes import ShapesParams, ensure_shapes
from orchestrator.data.validate import DataValidationError
from orchestrator.layout import fingerprint
from stages.spec import DataConfig

log = logging.getLogger(__name__)


def _label_map_ids(path: str) -> set[int]:
    from orchestrator.odapi import label_map_util

    try:
        return {item.id for item in label_map_util.load_labelmap(path).item}
    except Exception as exc:  # the OD API raises several types for a bad file
        raise DataValidationError(f"data.label_map={path!r}: cannot read label map ({exc})") from exc


def _tfrecord_files(cfg: DataConfig) -> DatasetFiles:
    stats = []
    for key in ("train", "val", "label_map"):
        value = getattr(cfg, key)
        matches = sorted(glob.glob(str(Path(value).expanduser()))) if value else []
        if not matches:
            raise DataValidationError(
                f"data.{key}={value!r} matches no file: pass an existing path or glob, e.g. "
                f"data.{key}=/data/{'label_map.pbtxt' if key == 'label_map' else key + '-*.record'}"
            )
        stats += [(m, os.stat(m).st_size, os.stat(m).st_mtime_ns) for m in matches]
    ids = _label_map_ids(cfg.label_map)
    return DatasetFiles(cfg.train, cfg.val, cfg.label_map, max(ids), fingerprint({"files": stats}))


def _source(cfg: DataConfig, seed: int, cache: Path) -> DatasetFiles:
    strict = cfg.bad_boxes == "error"
    if cfg.kind == "shapes":
        params = ShapesParams(
            num_train=cfg.num_train, num_val=cfg.num_val, image_size=cfg.image_size, seed=seed
        )
        return ensure_shapes(params, cache)
    if cfg.kind == "glyphs":
        glyphs = GlyphParams(
            num_train=cfg.num_train, num_val=cfg.num_val, image_size=cfg.image_size, seed=seed
        )
        return ensure_glyphs(glyphs, cache)
    if cfg.kind == "tfrecord":
        return _tfrecord_files(cfg)
    if cfg.kind == "coco":
        from orchestrator.data.convert import convert_coco

        return convert_coco(cfg.train, cfg.train_images, cfg.val, cfg.val_images, cache, strict)
    if cfg.kind == "voc":
        from orchestrator.data.convert import convert_voc

        return convert_voc(cfg.root or "", cfg.train or "train", cfg.val or "val", cache, strict)
    raise DataValidationError(
        f"data.kind={cfg.kind!r} is not supported: use data=shapes, glyphs, tfrecord, coco or voc"
    )


def resolve_data(cfg: DataConfig, seed: int) -> DatasetFiles:
    """Files for the run, validated (once per content fingerprint and bad-box policy)."""
    cache = Path(cfg.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    files = _source(cfg, seed, cache)
    marker = cache / "validated" / fingerprint({"data": files.fingerprint, "policy": cfg.bad_boxes})
    if marker.exists():
        train, val = marker.read_text().splitlines()
        return replace(files, train=train, val=val)
    ids = _label_map_ids(files.label_map)
    key = files.fingerprint
    train = validate.validate_split(files.train, ids, cfg.bad_boxes, "train", cache, key)
    val = validate.validate_split(files.val, ids, cfg.bad_boxes, "val", cache, key)
    log.info(
        "data: %d train / %d val records validated (%d / %d boxes)",
        train.records,
        val.records,
        train.boxes,
        val.boxes,
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{train.path}\n{val.path}")
    return replace(files, train=train.path, val=val.path)
