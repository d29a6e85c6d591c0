"""``stage=export``: SavedModels of the final alternating detector and of end_to_end.

Uses the OD API's own ``exporter_lib_v2`` (``image_tensor`` input: uint8 [1, H, W, 3]) on each
stage's generated pipeline.config and the exact checkpoint its ``DONE`` names, into
``<run>/export/{alternating,end_to_end}/saved_model``. Built in a temp dir and renamed; skipped
when already exported from the same ``DONE``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from orchestrator.layout import StageFiles
from orchestrator.odapi import exporter_lib_v2
from stages import pipeline as pipelines

log = logging.getLogger(__name__)


def export_stage(stage: StageFiles, out_dir: Path) -> Path:
    """Export one finished stage from the checkpoint its DONE record names."""
    done = stage.read_done()
    marker = out_dir / "exported_from.json"
    if marker.exists() and json.loads(marker.read_text()).get("done") == done.raw:
        return out_dir / "saved_model"
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config = pipelines.load_pipeline(stage.pipeline)
    with tempfile.TemporaryDirectory() as pointer:
        # The exporter restores its directory's latest checkpoint: point one at DONE's.
        tf.compat.v1.train.update_checkpoint_state(pointer, done.checkpoint)
        exporter_lib_v2.export_inference_graph("image_tensor", config, pointer, str(tmp))
    (tmp / "exported_from.json").write_text(json.dumps({"stage": str(stage.directory), "done": done.raw}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("exported %s (%s) -> %s", stage.directory.name, done.checkpoint, out_dir / "saved_model")
    return out_dir / "saved_model"


def export_models(run_dir: Path, final_alternating: StageFiles, end_to_end: StageFiles) -> dict[str, Path]:
    return {
        "alternating": export_stage(final_alternating, run_dir / "export" / "alternating"),
        "end_to_end": export_stage(end_to_end, run_dir / "export" / "end_to_end"),
    }


def second_stage_nms_iou(pipeline_path: Path) -> float:
    """The exported detector's final NMS IoU threshold (the parity check's near-tie rule)."""
    from orchestrator.odapi import builder

    frcnn = builder.load_configs(pipeline_path)["model"].faster_rcnn
    return float(frcnn.second_stage_post_processing.batch_non_max_suppression.iou_threshold)


def export_onnx_checked(
    saved_models: dict[str, Path], val_records: str, max_images: int | None, opset: int, threshold: float
) -> dict[str, Path]:
    """Each SavedModel converted to ONNX, then checked against it on the val images.

    A failed check keeps its figures in ``export/parity.json`` and stops with the worst case
    named (:class:`orchestrator.outputs.parity.ParityError`).
    """
    from orchestrator.outputs import detectors, parity
    from orchestrator.outputs.onnx_export import export_onnx

    converted = {}
    for model, saved_model in saved_models.items():
        onnx = export_onnx(saved_model, opset)
        figures = parity.check(
            detectors.saved_model_detector(saved_model),
            detectors.onnx_detector(onnx),
            detectors.record_images(val_records, max_images),
            threshold,
            second_stage_nms_iou(saved_model.parent / "pipeline.config"),
        )
        parity.write_and_raise(figures, saved_model.parents[1] / "parity.json", model)
        log.info("ONNX parity %s: %d detections matched on %d images (worst IoU %.4f, score diff %.4f)",
                 model, figures["detections_checked"], figures["images"], figures["matched_worst_iou"],
                 figures["matched_worst_score_diff"])  # fmt: skip
        converted[model] = onnx
    return converted
