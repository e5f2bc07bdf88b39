"""jupyter.sh: which JupyterLab it starts (container or local) and with what safety settings,
checked with --dry-run and a fake `docker` on PATH (no docker engine is needed)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "jupyter.sh"

FAKE_DOCKER = """#!/usr/bin/env bash
# `docker info` succeeds when FAKE_DOCKER_ENGINE=up; `docker image inspect` when the image is
# marked as built; every call is logged.
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  info) [ "${FAKE_DOCKER_ENGINE:-up}" = up ] ;;
  image) [ "${FAKE_DOCKER_IMAGE:-built}" = built ] ;;
  *) echo "fake docker: $1 should not run in a dry run" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH holding bash's basics and a fake docker, without any real docker or GPU tool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "id", "cat"):
        src = shutil.which(tool)
        assert src, tool
        (bin_dir / tool).symlink_to(src)
    return bin_dir


FAKE_ID = """#!/usr/bin/env bash
case "$1" in -u|-g) echo {uid} ;; *) echo "uid={uid}" ;; esac
"""


def run(fake_bin, *args, docker=True, engine="up", image="built", nvidia=False, log=None,
        uid=None):
    if uid is not None:  # pretend to be this user (`id -u`, `id -g`)
        (fake_bin / "id").unlink(missing_ok=True)
        (fake_bin / "id").write_text(FAKE_ID.format(uid=uid))
        (fake_bin / "id").chmod(0o755)
    if docker:
        (fake_bin / "docker").write_text(FAKE_DOCKER)
        (fake_bin / "docker").chmod(0o755)
    if nvidia:
        (fake_bin / "nvidia-smi").write_text("#!/usr/bin/env bash\nexit 0\n")
        (fake_bin / "nvidia-smi").chmod(0o755)
    env = {"PATH": str(fake_bin), "HOME": os.environ.get("HOME", "/tmp"),
           "FAKE_DOCKER_ENGINE": engine, "FAKE_DOCKER_IMAGE": image,
           "FAKE_DOCKER_LOG": str(log or fake_bin / "docker.log")}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True,
                          text=True, env=env, timeout=60)
    return proc


def _fake_jupyter(fake_bin):
    (fake_bin / "jupyter").write_text("#!/usr/bin/env bash\nexit 0\n")
    (fake_bin / "jupyter").chmod(0o755)


def commands(proc) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.strip().splitlines()]


def test_docker_branch_mounts_repo_binds_localhost_keeps_token(fake_bin):
    proc = run(fake_bin, nvidia=True)
    (cmd,) = commands(proc)
    assert cmd[:3] == ["docker", "run", "--rm"]
    assert cmd[cmd.index("--gpus") + 1] == "all"
    assert cmd[cmd.index("-p") + 1] == "127.0.0.1:8888:8888"
    assert cmd[cmd.index("-v") + 1] == f"{ROOT}:/workspace"
    assert "deeplk:latest" in cmd
    lab = cmd[cmd.index("jupyter"):]
    assert lab[:2] == ["jupyter", "lab"] and "--notebook-dir=/workspace/notebooks" in lab
    assert not [a for a in cmd if "token" in a.lower() or "password" in a.lower()]


def test_docker_branch_options(fake_bin):
    (cmd,) = commands(run(fake_bin, "--public", "--port", "9000", "--no-gpus", "--image",
                          "me/deeplk:dev", "--", "--ServerApp.base_url=/x/"))
    assert cmd[cmd.index("-p") + 1] == "9000:8888"  # --public: every interface
    assert "--gpus" not in cmd and "me/deeplk:dev" in cmd
    assert cmd[-1] == "--ServerApp.base_url=/x/"


def test_docker_without_gpu_tools_runs_without_gpus(fake_bin):
    proc = run(fake_bin)
    (cmd,) = commands(proc)
    assert "--gpus" not in cmd and "without GPUs" in proc.stderr


def test_missing_image_is_built_first(fake_bin):
    proc = run(fake_bin, image="missing")
    build, run_cmd = commands(proc)
    assert build == ["docker", "build", "-t", "deeplk:latest", "-f", "docker/Dockerfile", "."]
    assert run_cmd[:2] == ["docker", "run"]


@pytest.mark.parametrize("docker, engine", [(False, "up"), (True, "down")])
def test_local_branch_without_a_usable_docker(fake_bin, docker, engine):
    _fake_jupyter(fake_bin)
    (cmd,) = commands(run(fake_bin, docker=docker, engine=engine))
    assert Path(cmd[0]).name == "jupyter" and cmd[1] == "lab"
    assert "--ip=127.0.0.1" in cmd and "--port=8888" in cmd
    assert "--notebook-dir=notebooks" in cmd
    assert not [a for a in cmd if "token" in a.lower()]


def test_local_forced_and_public(fake_bin):
    _fake_jupyter(fake_bin)
    (cmd,) = commands(run(fake_bin, "--local", "--public", "--port=8899"))
    assert Path(cmd[0]).name == "jupyter" and "--ip=0.0.0.0" in cmd and "--port=8899" in cmd


@pytest.mark.parametrize("uid, allowed", [(0, True), (1000, False)])
def test_root_is_allowed_in_both_branches(fake_bin, uid, allowed):
    # Jupyter stops with "Running as root is not recommended" unless given --allow-root.
    _fake_jupyter(fake_bin)
    (local,) = commands(run(fake_bin, "--local", "--", "--foo", uid=uid))
    (container,) = commands(run(fake_bin, "--docker", uid=uid))
    for cmd in (local, container[container.index("jupyter"):]):
        assert ("--allow-root" in cmd) is allowed, cmd
    assert local[-1] == "--foo"  # the user's own arguments stay last
    assert container[container.index("--user") + 1] == f"{uid}:{uid}"


def test_help_prints_the_header_only(fake_bin):
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "bash jupyter.sh --local" in proc.stdout
    assert "--allow-root" in proc.stdout and "set -euo" not in proc.stdout


def test_errors(fake_bin):
    proc = run(fake_bin, "--docker", engine="down")
    assert proc.returncode == 1 and "no docker engine is reachable" in proc.stderr
    proc = run(fake_bin, "--port", "http")
    assert proc.returncode == 2 and "--port must be a number" in proc.stderr


def test_shell_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
