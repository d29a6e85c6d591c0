"""``stage=export``: SavedModels of the final alternating detector and of end_to_end.

Uses the OD API's own ``exporter_lib_v2`` (``image_tensor`` input: uint8 [1, H, W, 3]) on each
stage's generated pipeline.config and latest checkpoint, into
``<run>/export/{alternating,end_to_end}/saved_model``. Built in a temp dir and renamed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from orchestrator.odapi import exporter_lib_v2
from stages import pipeline as pipelines

log = logging.getLogger(__name__)


def export_stage(stage_dir: Path, out_dir: Path) -> Path:
    """Export one finished stage (skipped when already exported from the same DONE)."""
    done = (stage_dir / "DONE").read_text()
    marker = out_dir / "exported_from.json"
    if marker.exists() and json.loads(marker.read_text()).get("done") == done:
        return out_dir / "saved_model"
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config = pipelines.load_pipeline(stage_dir / "pipeline.config")
    exporter_lib_v2.export_inference_graph("image_tensor", config, str(stage_dir / "checkpoints"), str(tmp))
    (tmp / "exported_from.json").write_text(json.dumps({"stage": str(stage_dir), "done": done}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("exported %s -> %s", stage_dir.name, out_dir / "saved_model")
    return out_dir / "saved_model"


def export_models(run_dir: Path, final_alternating: Path, end_to_end: Path) -> dict[str, Path]:
    return {
        "alternating": export_stage(final_alternating, run_dir / "export" / "alternating"),
        "end_to_end": export_stage(end_to_end, run_dir / "export" / "end_to_end"),
    }
