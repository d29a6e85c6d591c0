#!/usr/bin/env bash
# Cross-stack checkpoint check on the tiny model (what was run for issue 19; trains: hold the
# training lock, e.g. `flock /tmp/frcnn-train.lock bash scripts/xstack/cross_stack.sh`).
#   LEGACY_PY  (default .venv-legacy/bin/python)   CURRENT_PY (default .venv/bin/python)
#   OUT        (default /tmp/frcnn-xstack): run dirs, caches, logs and .npz files
# 1. each stack trains s1_rpn + s2_fast_rcnn on its own cache (data + pre-trained backbone);
# 2. each stack runs stage=all in a copy of the other's run: s1/s2 are skipped (same fingerprint),
#    s3 restores from the other stack's s1/s2, end_to_end from the other stack's backbone;
# 3. the other stack's s2 checkpoint, restored per group on both stacks, gives the same outputs;
# 4. checkpoint structure (variables, shapes, object graph) compared stage by stage.
set -euo pipefail
cd "$(dirname "$0")/../.."
LEGACY_PY=${LEGACY_PY:-.venv-legacy/bin/python}
CURRENT_PY=${CURRENT_PY:-.venv/bin/python}
OUT=${OUT:-/tmp/frcnn-xstack}
STEPS=${STEPS:-4}
FAST="data.num_train=48 data.num_val=6 backbone.pretrain_steps=40 eval.max_images=6 steps=$STEPS"
mkdir -p "$OUT"
for stack in legacy current; do
  py=$([ $stack = legacy ] && echo "$LEGACY_PY" || echo "$CURRENT_PY")
  for stage in s1_rpn s2_fast_rcnn; do
    FRCNN_ALT_CACHE=$OUT/cache-$stack PYTHONPATH=. "$py" -m orchestrator stage=$stage $FAST \
      hydra.run.dir="$OUT/$stack" > "$OUT/$stack-$stage.log" 2>&1
  done
done
for pair in "legacy current" "current legacy"; do
  set -- $pair  # $1 trained s1/s2, $2 continues
  py=$([ "$2" = legacy ] && echo "$LEGACY_PY" || echo "$CURRENT_PY")
  rm -rf "$OUT/$1-then-$2" && cp -a "$OUT/$1" "$OUT/$1-then-$2"
  FRCNN_ALT_CACHE=$OUT/cache-$1 PYTHONPATH=. "$py" -m orchestrator stage=all $FAST \
    hydra.run.dir="$OUT/$1-then-$2" > "$OUT/$1-then-$2.log" 2>&1
  grep -q "s2_fast_rcnn: done (fingerprint" "$OUT/$1-then-$2.log"  # s1/s2 reused, not retrained
  echo "$1 -> $2: stage=all finished; frozen audits:" \
    "$(grep -cE '^\| (s[1-4]_|end_to_end).*\| passed \|$' "$OUT/$1-then-$2.log") passed"
done
for stack in legacy current; do
  dir=$OUT/$stack/alternating/s2_fast_rcnn
  ckpt=$dir/$("$CURRENT_PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['checkpoint'])" "$dir/DONE")
  for py in "legacy $LEGACY_PY" "current $CURRENT_PY"; do
    set -- $py
    PYTHONPATH=. "$2" scripts/xstack/restore_predict.py "$dir/pipeline.config" "$ckpt" \
      "$OUT/$stack-s2-on-$1.npz" > "$OUT/$stack-s2-on-$1.log" 2>&1
  done
  echo "$stack s2_fast_rcnn checkpoint, outputs on legacy vs current:"
  "$CURRENT_PY" scripts/xstack/compare_outputs.py "$OUT/$stack-s2-on-legacy.npz" "$OUT/$stack-s2-on-current.npz"
done
for stage in s1_rpn s2_fast_rcnn s3_rpn_shared s4_detector_head; do
  a=$OUT/legacy-then-current/alternating/$stage b=$OUT/current-then-legacy/alternating/$stage
  ca=$("$CURRENT_PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['checkpoint'])" "$a/DONE")
  cb=$("$CURRENT_PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['checkpoint'])" "$b/DONE")
  echo "$stage: $("$CURRENT_PY" scripts/xstack/compare_keys.py "$a/$ca" "$b/$cb" 2>/dev/null | tail -1)"
done
