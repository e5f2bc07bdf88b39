#!/usr/bin/env bash
# Open JupyterLab on the project's notebooks: in the GPU container when a docker engine is
# reachable, else locally (./.venv if it exists).
#
#   bash jupyter.sh                 # auto: docker if `docker info` works, else local
#   bash jupyter.sh --local         # force the local JupyterLab
#   bash jupyter.sh --docker        # force the container (builds the image if missing)
#   bash jupyter.sh --dry-run       # print the command(s) instead of running them
#   bash jupyter.sh --port 8899     # another port (default 8888)
#   bash jupyter.sh --public        # listen on every interface, not only localhost
#   bash jupyter.sh --no-gpus       # container without --gpus all
#   bash jupyter.sh -- --ServerApp.root_dir=...   # anything after -- goes to `jupyter lab`
#
# Safety: token authentication stays on (Jupyter prints the URL with its token), and the
# server is reachable from this machine only (local: --ip=127.0.0.1; container: the port is
# published on 127.0.0.1) unless --public is given.
# Container: image $DEEPLK_IMAGE (default deeplk:latest) built from docker/Dockerfile; the
# repository is mounted at /workspace (notebooks, Dataset/, checkpoints/ and runs/ are the
# ones on this machine) and the container runs as your user, so files it writes are yours.
# Run as root (cloud GPU machines, containers), Jupyter is given --allow-root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(pwd)"

mode=auto
dry_run=0
port=8888
public=0
gpus=auto
image="${DEEPLK_IMAGE:-deeplk:latest}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --local) mode=local ;;
    --docker) mode=docker ;;
    --dry-run) dry_run=1 ;;
    --public) public=1 ;;
    --no-gpus) gpus=no ;;
    --port)
      [ $# -ge 2 ] || { echo "jupyter.sh: --port needs a number" >&2; exit 2; }
      port="$2"
      shift ;;
    --port=*) port="${1#--port=}" ;;
    --image)
      [ $# -ge 2 ] || { echo "jupyter.sh: --image needs a name" >&2; exit 2; }
      image="$2"
      shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p;}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
case "$port" in
  ''|*[!0-9]*) echo "jupyter.sh: --port must be a number, got '$port'" >&2; exit 2 ;;
esac

run() {  # print (dry run) or execute a command
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Jupyter refuses to start as root ("Running as root is not recommended") unless told; root is
# the usual user on cloud GPU machines and in containers, so say it for them.
root_args=()
if [ "$(id -u)" = 0 ]; then root_args=(--allow-root); fi

docker_usable() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

if [ "$mode" = auto ]; then
  if docker_usable; then mode=docker; else mode=local; fi
fi

if [ "$mode" = docker ]; then
  if ! docker_usable; then
    echo "jupyter.sh: --docker given but no docker engine is reachable (docker info failed)" >&2
    exit 1
  fi
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "jupyter.sh: building the image $image from docker/Dockerfile (first time only)" >&2
    run docker build -t "$image" -f docker/Dockerfile .
  fi
  gpu_args=()
  if [ "$gpus" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      gpu_args=(--gpus all)
    else
      echo "jupyter.sh: no nvidia-smi here: starting the container without GPUs" >&2
    fi
  fi
  bind="127.0.0.1:"
  if [ "$public" = 1 ]; then bind=""; fi
  # Inside the container the server listens on all of the container's interfaces (needed for
  # the published port); the host side is bound to 127.0.0.1 unless --public.
  run docker run --rm -it ${gpu_args[@]+"${gpu_args[@]}"} \
    -p "${bind}${port}:8888" \
    -v "${repo}:/workspace" -w /workspace \
    --user "$(id -u):$(id -g)" -e HOME=/tmp \
    "$image" \
    jupyter lab --notebook-dir=/workspace/notebooks --ip=0.0.0.0 --port=8888 --no-browser \
    ${root_args[@]+"${root_args[@]}"} ${extra[@]+"${extra[@]}"}
  exit $?
fi

# Local JupyterLab.
if [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
if ! command -v jupyter >/dev/null 2>&1; then
  echo "jupyter not found: install the project first (see README: bash install_dependency.sh)" >&2
  exit 1
fi
ip=127.0.0.1
if [ "$public" = 1 ]; then ip=0.0.0.0; fi
if [ "$dry_run" = 1 ]; then
  run jupyter lab --notebook-dir=notebooks "--ip=${ip}" "--port=${port}" --no-browser \
    ${root_args[@]+"${root_args[@]}"} ${extra[@]+"${extra[@]}"}
  exit 0
fi
exec jupyter lab --notebook-dir=notebooks "--ip=${ip}" "--port=${port}" --no-browser \
  ${root_args[@]+"${root_args[@]}"} ${extra[@]+"${extra[@]}"}
