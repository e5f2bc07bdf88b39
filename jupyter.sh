#!/usr/bin/env bash
# Open JupyterLab on the project's notebooks.
# Local mode (this script today): uses ./.venv if it exists, listens on localhost only, keeps
# token authentication on. Extra arguments go to `jupyter lab` (e.g. --port 8899).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
if ! command -v jupyter >/dev/null 2>&1; then
  echo "jupyter not found: install the project first (see README: bash install_dependency.sh)" >&2
  exit 1
fi
exec jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser "$@"
