"""What every data source resolves to: validated stock TFRecords and a label map on disk."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset lives on disk (what the pipeline config needs) and its content fingerprint."""

    train: str
    val: str
    label_map: str
    num_classes: int
    fingerprint: str
