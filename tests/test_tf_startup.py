"""deeplk._tf_startup: TensorFlow's start-up notices are filtered, real errors are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeplk._tf_startup import ABSL_BANNER, filter_startup_lines, filtered_stderr, min_log_level

LIB = Path(__file__).resolve().parents[1] / "lib"

ONEDNN = ("I0000 00:00:1796404305.087842   12124 port.cc:153] oneDNN custom operations are on. "
          "You may see slightly different numerical results.\n")
NO_CUDA = ("I0000 00:00:1796404305.088108   12124 cudart_stub.cc:31] Could not find cuda drivers "
           "on your machine, GPU will not be used.\n")
CUINIT = ("E0000 00:00:1796404310.170935   12124 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
WARNING = "W1114 09:32:22.280168   13509 allocator.cc:12] Allocation exceeds 10% of memory.\n"
REAL_ERROR = "E1114 09:32:22.280190   13509 op_kernel.cc:1] OP_REQUIRES failed: bad shape\n"
PYTHON = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n"


class TestFilterStartupLines:
    def test_level_2_drops_the_start_up_notices_keeps_errors(self):
        text = ABSL_BANNER + "\n" + ONEDNN + NO_CUDA + WARNING + CUINIT + REAL_ERROR + PYTHON
        assert filter_startup_lines(text, 2) == REAL_ERROR + PYTHON

    def test_level_1_keeps_warnings(self):
        text = ABSL_BANNER + "\n" + ONEDNN + WARNING + REAL_ERROR
        assert filter_startup_lines(text, 1) == WARNING + REAL_ERROR

    def test_level_0_keeps_every_log_line(self):
        text = ONEDNN + NO_CUDA + CUINIT
        assert filter_startup_lines(text, 0) == text

    def test_cuinit_failure_is_kept_when_a_cuda_runtime_was_found(self):
        # A machine with CUDA whose driver fails: the error matters.
        assert filter_startup_lines(ONEDNN + CUINIT, 2) == CUINIT

    def test_fatal_lines_are_never_dropped(self):
        fatal = "F0000 00:00:1.5   7 cuda_platform.cc:9] failed call to cuInit: gone\n"
        assert filter_startup_lines(NO_CUDA + fatal, 3) == fatal

    def test_min_log_level(self):
        assert min_log_level({}) == 0
        assert min_log_level({"TF_CPP_MIN_LOG_LEVEL": "2"}) == 2
        assert min_log_level({"TF_CPP_MIN_LOG_LEVEL": "x"}) == 0


def test_filtered_stderr_writes_back_what_is_not_noise(capfd):
    with filtered_stderr(2):
        os.write(2, (ABSL_BANNER + "\n" + ONEDNN + NO_CUDA + CUINIT + REAL_ERROR).encode())
    assert capfd.readouterr().err == REAL_ERROR


def test_filtered_stderr_writes_back_on_an_exception(capfd):
    with pytest.raises(RuntimeError):
        with filtered_stderr(2):
            os.write(2, (ONEDNN + REAL_ERROR).encode())
            raise RuntimeError("import failed")
    assert capfd.readouterr().err == REAL_ERROR


def _import_tensorflow_after_deeplk(level: str) -> subprocess.CompletedProcess:
    code = ("import deeplk.geometry, tensorflow as tf, os\n"
            "tf.constant(1.0) + 1\n"
            "assert type(tf.__spec__.loader).__name__ != '_QuietLoader'\n"
            "os.write(2, b'E0000 00:00:1.5 7 after.cc:1] later error\\n')\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=level, PYTHONPATH=str(LIB))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


def test_first_tensorflow_import_through_deeplk_is_quiet():
    loud = _import_tensorflow_after_deeplk("0")
    assert loud.returncode == 0, loud.stderr
    notices = ("oneDNN custom operations", "cuInit", "InitializeLog")
    if not any(n in loud.stderr for n in notices):
        pytest.skip("this TensorFlow prints none of the start-up notices")
    quiet = _import_tensorflow_after_deeplk("2")
    assert quiet.returncode == 0, quiet.stderr
    assert not [n for n in notices if n in quiet.stderr], quiet.stderr
    assert "later error" in quiet.stderr  # stderr is back to normal after the import
