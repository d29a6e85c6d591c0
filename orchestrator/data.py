"""Resolve ``data=...`` to files on disk (generating the built-in dataset when needed)."""

from __future__ import annotations

import glob
from pathlib import Path

from orchestrator.shapes import DatasetFiles, ShapesParams, ensure_shapes
from orchestrator.tfrecords import fingerprint
from stages.spec import DataConfig


class DataError(ValueError):
    """A dataset that cannot be used: names the file and the fix."""


def _count_label_map_classes(path: str) -> int:
    from orchestrator.odapi import label_map_util

    try:
        return label_map_util.get_max_label_map_index(label_map_util.load_labelmap(path))
    except Exception as exc:  # the OD API raises several types for a bad file
        raise DataError(f"data.label_map={path!r}: cannot read label map ({exc})") from exc


def resolve_data(cfg: DataConfig, seed: int) -> DatasetFiles:
    if cfg.kind == "shapes":
        params = ShapesParams(
            num_train=cfg.num_train, num_val=cfg.num_val, image_size=cfg.image_size, seed=seed
        )
        return ensure_shapes(params, Path(cfg.cache_dir))
    if cfg.kind == "tfrecord":
        for key in ("train", "val", "label_map"):
            value = getattr(cfg, key)
            if not value or not glob.glob(str(Path(value).expanduser())):
                raise DataError(
                    f"data.{key}={value!r} matches no file: pass an existing path or glob, e.g. "
                    f"data.{key}=/data/{'label_map.pbtxt' if key == 'label_map' else key + '-*.record'}"
                )
        return DatasetFiles(
            train=cfg.train,
            val=cfg.val,
            label_map=cfg.label_map,
            num_classes=_count_label_map_classes(cfg.label_map),
            fingerprint=fingerprint({"train": cfg.train, "val": cfg.val, "label_map": cfg.label_map}),
        )
    raise DataError(f"data.kind={cfg.kind!r} is not supported: use data=shapes or data=tfrecord")
