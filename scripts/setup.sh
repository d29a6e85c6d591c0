#!/usr/bin/env bash
# Idempotent setup: a project-local .venv with one of the two pinned stacks, the OD API packages that
# must skip their declared dependencies (--no-deps), the optional launchers, and frcnn-alt itself
# (editable). Reruns are no-ops until a requirements file changes.
#   legacy:  Python 3.11,        TensorFlow 2.15.1   (requirements/legacy/)
#   current: Python 3.12 / 3.13, TensorFlow 2.21.0   (requirements/current/)
# Both include requirements/common.txt. The stack follows the Python found (PYTHON, else the first
# of python3.11, python3.12, python3.13, python3); FRCNN_ALT_STACK=legacy|current overrides it.
# FRCNN_ALT_VENV=DIR puts the environment elsewhere than .venv (CI keeps one per stack).
# GPU: see README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${FRCNN_ALT_STACK:-}"
case "$stack" in
  legacy) candidates="python3.11" ;;
  current) candidates="python3.12 python3.13" ;;
  "") candidates="python3.11 python3.12 python3.13 python3" ;;
  *) echo "FRCNN_ALT_STACK must be legacy or current (got '$stack')" >&2; exit 1 ;;
esac
if [ -z "${PYTHON:-}" ]; then
  for candidate in $candidates; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
PYTHON="${PYTHON:-python3}"
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
case "$version" in
  3.11) found=legacy ;;
  3.12 | 3.13) found=current ;;
  *) echo "frcnn-alt needs Python 3.11 (legacy stack) or 3.12/3.13 (current stack); found $version ($PYTHON). Set PYTHON=/path/to/python" >&2; exit 1 ;;
esac
if [ -n "$stack" ] && [ "$stack" != "$found" ]; then
  echo "FRCNN_ALT_STACK=$stack needs Python $([ "$stack" = legacy ] && echo 3.11 || echo 3.12/3.13); $PYTHON is $version" >&2
  exit 1
fi
stack=$found
venv="${FRCNN_ALT_VENV:-.venv}"
req=requirements/$stack
stamp="$venv"/.frcnn-alt-installed
want=$(echo "$stack $version" | cat - requirements/common.txt "$req/lock.txt" "$req/nodeps.txt" requirements/extras.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# An environment made by another Python (the other stack) is rebuilt, not patched.
if [ -x "$venv"/bin/python ] && [ "$("$venv"/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$version" ]; then
  rm -rf "$venv"
fi
[ -x "$venv"/bin/python ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip>=23" wheel
"$venv/bin/python" -m pip install --quiet -r "$req/lock.txt"
# Their declared dependencies pin old or conflicting packages (another TensorFlow, opencv,
# tf-text...): install them without (see the file).
"$venv/bin/python" -m pip install --quiet --no-deps -r "$req/nodeps.txt"
"$venv/bin/python" -m pip install --quiet -r requirements/extras.txt
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$venv"/bin/python -c "from orchestrator import odapi" >/dev/null
echo "$want" > "$stamp"
echo "frcnn-alt: $stack stack (Python $version) ready in $venv" >&2
