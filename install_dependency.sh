#!/usr/bin/env bash
# Install every dependency of the project and the `deeplk` library in editable mode.
# Run it inside the Python environment you want to use (a fresh virtual environment is best):
#   python3.11 -m venv .venv && source .venv/bin/activate && bash install_dependency.sh
# Version ranges live in pyproject.toml.
#
# Options:
#   --gpu      also install TensorFlow's CUDA libraries (tensorflow[and-cuda], Linux with an
#              NVIDIA driver): plain `tensorflow` runs on the CPU only outside the GPU container
#   --dry-run  print the pip commands instead of running them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

gpu=0
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install_dependency.sh: unknown option $arg (known: --gpu, --dry-run)" >&2; exit 2 ;;
  esac
done

run() {
  if [ "$dry_run" = 1 ]; then echo "$*"; else "$@"; fi
}

run python -m pip install --upgrade pip
run python -m pip install -e .
if [ "$gpu" = 1 ]; then
  if [ "$(uname -s)" != Linux ]; then
    echo "install_dependency.sh: --gpu needs Linux (TensorFlow's CUDA wheels are Linux only)" >&2
    exit 2
  fi
  # the CUDA extra of the TensorFlow version just installed, so pip changes nothing else
  if [ "$dry_run" = 1 ]; then
    tf_version="<installed version>"
  else
    tf_version="$(python -c 'from importlib.metadata import version; print(version("tensorflow"))')"
  fi
  run python -m pip install "tensorflow[and-cuda]==$tf_version"
fi
if [ "$dry_run" = 1 ]; then exit 0; fi
python -c "import deeplk, tensorflow as tf, cv2; print('deeplk', deeplk.__version__, '| TensorFlow', tf.__version__, '| OpenCV', cv2.__version__)"
if [ "$gpu" = 1 ]; then
  python -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print('GPUs:', ', '.join(d.name for d in g) if g else 'none visible (check the NVIDIA driver: nvidia-smi)')"
fi
