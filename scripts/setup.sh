#!/usr/bin/env bash
# Idempotent setup: a project-local .venv with the pinned stack (requirements/lock.txt), the OD API
# packages that must skip their declared dependencies (requirements/nodeps.txt, --no-deps), and
# frcnn-alt itself (editable). Reruns are no-ops until a requirements file changes.
# Needs only Python 3.11 and pip. GPU: see README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "frcnn-alt needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
}
stamp=.venv/.frcnn-alt-installed
want=$(cat requirements/lock.txt requirements/nodeps.txt requirements/extras.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=23" wheel
.venv/bin/python -m pip install --quiet -r requirements/lock.txt
# tf-models-official, tf-object-detection-api and lvis declare dependencies that pin old or
# conflicting packages (another TensorFlow, opencv, tf-text...): install them without.
.venv/bin/python -m pip install --quiet --no-deps -r requirements/nodeps.txt
.venv/bin/python -m pip install --quiet -r requirements/extras.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -c "from orchestrator import odapi" >/dev/null
echo "$want" > "$stamp"
echo "frcnn-alt: environment ready in .venv" >&2
