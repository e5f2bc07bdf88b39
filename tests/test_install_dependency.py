"""install_dependency.sh: the default CPU install and the --gpu option (checked with --dry-run:
nothing is installed)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "install_dependency.sh"


def _run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_default_installs_the_library_and_plain_tensorflow_only():
    out = _run("--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["python -m pip install --upgrade pip", "python -m pip install -e ."]


@pytest.mark.skipif(platform.system() != "Linux", reason="--gpu is for Linux")
def test_gpu_adds_tensorflow_with_its_cuda_libraries():
    out = _run("--gpu", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["python -m pip install --upgrade pip", "python -m pip install -e ."]
    assert lines[2:] == ["python -m pip install tensorflow[and-cuda]==<installed version>"]


def test_unknown_option_is_named():
    out = _run("--gpus")
    assert out.returncode == 2 and "unknown option --gpus" in out.stderr
