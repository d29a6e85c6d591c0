"""Small builders shared by tests: a real tiny pipeline and a built tiny model."""

from __future__ import annotations

from pathlib import Path

from orchestrator import builder
from orchestrator.plan import PIPELINES_DIR
from orchestrator.shapes import ShapesParams, ensure_shapes
from stages import pipeline as pipelines


def tiny_pipeline(tmp: Path, model: str = "tiny", batch_size: int = 2, num_classes: int | None = None, **kw):
    """A run pipeline over a small shapes dataset, written to ``tmp/pipeline.config``."""
    files = ensure_shapes(ShapesParams(num_train=16, num_val=4), tmp / "data")
    base = pipelines.load_pipeline(PIPELINES_DIR / f"{model}.config")
    config = pipelines.run_pipeline(
        base,
        pipelines.RunInputs(
            files.train,
            files.val,
            files.label_map,
            num_classes or files.num_classes,
            batch_size=batch_size,
            **kw,
        ),
    )
    path = pipelines.write_pipeline(config, tmp / "pipeline.config")
    return config, path


def built_model(path: Path):
    """(configs, model, first batch): a training-mode model called once on real data."""
    configs = builder.load_configs(path)
    model = builder.build_model(configs, is_training=True)
    batch = next(iter(builder.train_dataset(configs, model)))
    builder.ensure_built(model, *batch)
    return configs, model, batch
