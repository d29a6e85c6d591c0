"""``export.format=onnx|all``: the exported SavedModel converted to ONNX by tf2onnx, then checked.

tf2onnx's command line (``python -m tf2onnx.convert --saved-model``) is the route: its Python
entry points either turn the SavedModel's captured variables into extra graph inputs or drop the
output names. The ONNX model keeps the exporter's signature (uint8 ``input_tensor`` [1, H, W, 3];
``detection_*`` and ``num_detections`` outputs), so :mod:`orchestrator.outputs.detectors` runs it
like the SavedModel.

Opset 17 by default: tf2onnx 1.17 converts the OD API's Faster R-CNN at opsets 11-18 (10 fails on
a non-constant pad, 19+ is not supported yet), and every one of them passes the parity check here;
17 keeps one opset below the converter's ceiling (which TensorRT versions read it is not checked here). Written to a temp file and renamed; skipped when already converted from the same
SavedModel at the same opset.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

from stages.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_OPSET = 17


class Tf2OnnxMissing(UserError):
    pass


def _source(saved_model: Path, opset: int) -> dict:
    exported_from = saved_model.parent / "exported_from.json"
    return {"saved_model": json.loads(exported_from.read_text()), "opset": opset}


def export_onnx(saved_model: Path, opset: int = DEFAULT_OPSET) -> Path:
    """``<export dir>/model.onnx`` from ``<export dir>/saved_model``; returns its path."""
    if importlib.util.find_spec("tf2onnx") is None:
        raise Tf2OnnxMissing(
            "export.format=onnx needs tf2onnx, which is not installed: rerun bash scripts/setup.sh"
        )
    out = saved_model.parent / "model.onnx"
    marker = saved_model.parent / "onnx_from.json"
    source = _source(saved_model, opset)
    if out.exists() and marker.exists() and json.loads(marker.read_text()) == source:
        return out
    tmp = out.with_suffix(".onnx.tmp")
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
               "--opset", str(opset), "--output", str(tmp)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not tmp.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"tf2onnx could not convert {saved_model} at opset {opset}:\n{tail}")
    tmp.rename(out)
    marker.write_text(json.dumps(source))
    log.info("converted %s -> %s (opset %d, %.1f MB)", saved_model, out, opset, out.stat().st_size / 2**20)
    return out
