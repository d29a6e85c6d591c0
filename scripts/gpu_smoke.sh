#!/usr/bin/env bash
# GPU smoke check, for a machine with a GPU and the stack's GPU build (README, "GPU"):
# a few steps of every alternating stage with train.strategy=mirrored (one replica per visible
# GPU), then every stage must be DONE with its frozen audit passed. Prints the step times.
#   bash scripts/gpu_smoke.sh [RUN_DIR]        (PYTHON=... to use another interpreter)
# Exits 3 when TensorFlow sees no GPU (this is not a CPU test; CI machines have none).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
if ! "$python" -c 'import sys, orchestrator, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}: {len(gpus)} GPU(s) {[g.name for g in gpus]}")
sys.exit(0 if gpus else 3)'; then
  echo "no GPU visible to TensorFlow: install the stack's GPU build (README, GPU) on a GPU machine" >&2
  exit 3
fi
run_dir="${1:-$(mktemp -d -t frcnn-gpu-smoke-XXXX)}"
"$python" -m orchestrator stage=alternating steps=20 train.strategy=mirrored \
  data.num_train=64 data.num_val=8 eval.max_images=8 backbone.pretrain_steps=50 hydra.run.dir="$run_dir"
"$python" - "$run_dir" <<'PY'
import json, sys
from pathlib import Path

from orchestrator.layout import StageFiles, stage_dir
from stages.spec import STAGE_NAMES

for name in STAGE_NAMES:
    if name == "end_to_end":
        continue
    files = StageFiles(stage_dir(Path(sys.argv[1]), name))
    metrics = files.read_metrics()
    assert files.done.exists(), f"{name}: no DONE"
    assert metrics["frozen_audit"]["passed"], f"{name}: frozen audit {metrics['frozen_audit']}"
    print(f"{name}: {metrics['steps']} steps, {metrics['step_time_ms_median']:.1f} ms/step, audit passed")
print("GPU smoke check passed:", sys.argv[1])
PY
