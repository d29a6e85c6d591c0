"""Small builders shared by tests: a real tiny pipeline and a built tiny model."""

from __future__ import annotations

from pathlib import Path

from orchestrator.data.shapes import ShapesParams, ensure_shapes
from orchestrator.odapi import builder
from orchestrator.plan.configs import PIPELINES_DIR
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


def stage_run(tmp: Path, spec, steps: int, sources: dict | None = None, **kw):
    """A :class:`StageRun` of ``spec`` on the tiny model in ``tmp/stage`` (sources: all fresh)."""
    from orchestrator.engine.runner import StageRun
    from orchestrator.odapi.restore import Source
    from stages.spec import GROUPS, TrainConfig

    run_config, _ = tiny_pipeline(tmp)
    config = pipelines.stage_pipeline(
        run_config, spec, pipelines.StageInputs(steps=steps, lr=kw.pop("lr", 0.02))
    )
    directory = tmp / "stage"
    path = pipelines.write_pipeline(config, directory / "pipeline.config")
    return StageRun(
        name=spec.name,
        spec=spec,
        directory=directory,
        pipeline_path=path,
        steps=steps,
        sources=sources or {g: Source("fresh") for g in GROUPS},
        train=TrainConfig(checkpoint_every=kw.pop("checkpoint_every", 2), log_every=kw.pop("log_every", 1)),
        **kw,
    )


def spec_of(compose, name: str, overrides: list[str] | None = None):
    """The typed spec of stage ``name`` from the real composed config."""
    from stages.spec import to_object

    return getattr(to_object(compose(overrides or [])).stages, name)
