#!/usr/bin/env bash
# Install every dependency of the project and the `deeplk` library in editable mode.
# Run it inside the Python environment you want to use (a fresh virtual environment is best):
#   python3.11 -m venv .venv && source .venv/bin/activate && bash install_dependency.sh
# Version ranges live in pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python -m pip install --upgrade pip
python -m pip install -e .
python -c "import deeplk, tensorflow as tf, cv2; print('deeplk', deeplk.__version__, '| TensorFlow', tf.__version__, '| OpenCV', cv2.__version__)"
