"""One benchmark case per process (clean TF state, honest peak RSS): ``python -m bench.cases CASE JSON``.

Prints one JSON line with the figures of that case.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def stock_train_loop(pipeline: str, steps: int, per_iteration: int) -> dict:
    """The OD API's own ``model_lib_v2.train_loop`` on the same pipeline.config."""
    from orchestrator import odapi  # noqa: F401, I001  (first: compat + tiny extractor)

    from object_detection import model_lib_v2

    figures: dict = {}

    def exporter(metrics, precision):
        figures.update(metrics)

    started = time.time()
    model_lib_v2.train_loop(
        pipeline_config_path=pipeline,
        model_dir=tempfile.mkdtemp(prefix="stock_"),
        train_steps=steps,
        checkpoint_every_n=10**6,
        performance_summary_exporter=exporter,
        num_steps_per_iteration=per_iteration,
    )
    return {"step_ms": 1000 / figures["steps_per_sec_p50"], "wall_s": time.time() - started}


def stock_defaults(pipeline: str, steps: int, per_iteration: int | None = None) -> dict:
    """``model_lib_v2.train_loop`` as ``model_main_tf2.py`` calls it with its default flags.

    Checkpoints every 1000 steps, summaries on, 100 steps per compiled call; ``per_iteration``
    only for a run shorter than that (the stock loop always runs whole iterations).
    """
    from orchestrator import odapi  # noqa: F401, I001  (first: compat + tiny extractor)

    from object_detection import model_lib_v2

    extra = {"num_steps_per_iteration": per_iteration} if per_iteration else {}
    model_lib_v2.train_loop(
        pipeline_config_path=pipeline,
        model_dir=tempfile.mkdtemp(prefix="stock_"),
        train_steps=steps,
        checkpoint_every_n=1000,
        record_summaries=True,
        **extra,
    )
    return {}


def ours(pipeline: str, steps: int) -> dict:
    """Our end_to_end runner on the same pipeline.config (no eval, no audit difference)."""
    from orchestrator.engine import runner
    from orchestrator.odapi.restore import Source
    from stages.spec import GROUPS, Group, StageSpec, TrainConfig

    spec = StageSpec(name="end_to_end", trains=list(Group))
    directory = Path(tempfile.mkdtemp(prefix="ours_"))
    run = runner.StageRun(
        name="end_to_end",
        spec=spec,
        directory=directory,
        pipeline_path=Path(pipeline),
        steps=steps,
        sources={g: Source("fresh") for g in GROUPS},
        train=TrainConfig(checkpoint_every=10**6, log_every=10**6),
    )
    started = time.time()
    metrics = runner.train_stage(run)
    return {"step_ms": metrics["step_time_ms_median"], "wall_s": time.time() - started}


def scaling(pipeline: str, batches: list[int], steps: int) -> dict:
    """Step time and peak RSS of our end_to_end train step, one batch size after another."""
    import tensorflow as tf

    from orchestrator.engine.memory import peak_rss_mb, reset_peak_rss
    from orchestrator.engine.step import make_train_step
    from orchestrator.odapi import builder, proposals

    rows = []
    for batch in batches:
        tf.keras.backend.clear_session()
        reset_peak_rss()
        configs = builder.load_configs(pipeline)
        configs["train_config"].batch_size = batch
        model = builder.build_model(configs)
        data = iter(builder.train_dataset(configs, model))
        builder.ensure_built(model, *next(data))
        optimizer, _ = builder.build_optimizer(configs, tf.Variable(0, dtype=tf.int64))
        step = tf.function(make_train_step(model, optimizer, proposals.own_predict(model), False, 10.0))
        times = []
        for _ in range(steps):
            features, labels = next(data)
            tick = time.time()
            float(step(features, labels)["Loss/total_loss"])
            times.append(time.time() - tick)
        rows.append({
            "step_ms": 1000 * float(np.median(times[3:])),
            "step_ms_iqr": 1000 * float(np.subtract(*np.percentile(times[3:], [75, 25]))),
            "peak_rss_mb": peak_rss_mb(),
        })  # fmt: skip
    return {"batches": rows}


def latency(pipeline: str, images: int) -> dict:
    """CPU inference per image: the exported SavedModel against ONNX Runtime, side by side.

    The detector is the pipeline's model at its initial weights (latency does not depend on
    training), exported with the OD API exporter and converted as ``export.format=onnx`` does;
    the two runtimes alternate image by image after two warm-up calls each.
    """
    import tensorflow as tf

    from orchestrator.odapi import builder, exporter_lib_v2
    from orchestrator.outputs import detectors
    from orchestrator.outputs.onnx_export import export_onnx
    from stages import pipeline as pipelines

    out = Path(tempfile.mkdtemp(prefix="latency_"))
    configs = builder.load_configs(pipeline)
    model = builder.build_model(configs, is_training=False)
    size = configs["model"].faster_rcnn.image_resizer.fixed_shape_resizer.height or 128
    batch, shapes = model.preprocess(tf.zeros([1, size, size, 3]))
    model.postprocess(model.predict(batch, shapes), shapes)  # creates every variable
    tf.train.Checkpoint(model=model).save(str(out / "ckpt" / "ckpt"))
    exporter_lib_v2.export_inference_graph(
        "image_tensor", pipelines.load_pipeline(Path(pipeline)), str(out / "ckpt"), str(out / "export")
    )
    (out / "export" / "exported_from.json").write_text(json.dumps({"bench": pipeline}))
    onnx = export_onnx(out / "export" / "saved_model")
    run = {"saved_model": detectors.saved_model_detector(out / "export" / "saved_model"),
           "onnx": detectors.onnx_detector(onnx)}  # fmt: skip
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(images + 2)]
    times: dict[str, list[float]] = {k: [] for k in run}
    for i, frame in enumerate(frames):
        for name, detect in run.items():
            tick = time.perf_counter()
            detect(frame)
            if i >= 2:
                times[name].append(1000 * (time.perf_counter() - tick))
    return {name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "images": len(t)}
            for name, t in times.items()}  # fmt: skip


CASES = {
    "latency": latency,
    "stock": stock_train_loop,
    "stock_defaults": stock_defaults,
    "ours": ours,
    "scaling": scaling,
}

if __name__ == "__main__":
    result = CASES[sys.argv[1]](**json.loads(sys.argv[2]))
    print("RESULT " + json.dumps(result))
