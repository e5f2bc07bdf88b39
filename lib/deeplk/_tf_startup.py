"""TensorFlow's start-up notices, filtered where the library first imports TensorFlow.

`TF_CPP_MIN_LOG_LEVEL=2` (set by `deeplk/__init__` unless the user set it) hides TensorFlow's
C++ INFO and WARNING lines and keeps ERROR and FATAL ones. TensorFlow 2.21 prints a few lines
before it reads that setting (abseil writes every message to stderr until logging is
initialised), so a plain CPU machine still shows, on every run and in every notebook:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)

`install()` puts a finder on `sys.meta_path` that, the first time anything imports `tensorflow`,
captures file descriptor 2 while TensorFlow loads and lists its GPUs (which is when it calls
`cuInit`), then writes back every captured line except:

- abseil's "before absl::InitializeLog()" banner;
- log lines whose severity is below `TF_CPP_MIN_LOG_LEVEL` (0 INFO, 1 WARNING, 2 ERROR,
  3 FATAL), i.e. TensorFlow's own setting applied to the lines it printed too early;
- the `failed call to cuInit` error, only when TensorFlow said in the same start-up that it
  found no CUDA runtime and will not use a GPU: on such a machine cuInit cannot succeed and the
  line says nothing new. On a machine with CUDA, a failing cuInit (a broken driver) is kept.

Everything else (other errors, Python warnings and tracebacks) is written back unchanged.
`TF_CPP_MIN_LOG_LEVEL=0` turns the filter off. A process that dies inside TensorFlow's import
(not an exception: a hard crash) loses the lines captured up to then; rerun with
`TF_CPP_MIN_LOG_LEVEL=0` to see them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# abseil's line prefix: severity letter, MMDD, time, thread id, file:line]
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ (\S+):\d+\] (.*)$")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_CUDA = "Could not find cuda drivers on your machine, GPU will not be used."
_CUINIT = "failed call to cuInit:"


def min_log_level(environ=None) -> int:
    """TensorFlow's `TF_CPP_MIN_LOG_LEVEL` as an int (0 when unset or not a number)."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "0")
    try:
        return int(value)
    except ValueError:
        return 0


def filter_startup_lines(text: str, level: int) -> str:
    """`text` (captured stderr) without TensorFlow's start-up notices below `level`.

    See the module docstring for what is dropped; every other line is kept, in order. Level 0
    keeps everything.

    >>> noise = ("I0000 00:00:1.5   7 port.cc:153] oneDNN custom operations are on.\\n"
    ...          "E0000 00:00:1.5   7 foo.cc:3] a real error\\n")
    >>> filter_startup_lines(noise, 2)
    'E0000 00:00:1.5   7 foo.cc:3] a real error\\n'
    """
    if level <= 0:
        return text
    lines = text.splitlines(keepends=True)
    no_cuda = any(_NO_CUDA in line for line in lines)
    kept = []
    for line in lines:
        body = line.rstrip("\r\n")
        if body == ABSL_BANNER:
            continue
        match = _LOG_LINE.match(body)
        if match:
            severity, message = _SEVERITY[match.group(1)], match.group(3)
            if severity < level:
                continue
            if no_cuda and message.startswith(_CUINIT) and severity < _SEVERITY["F"]:
                continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def filtered_stderr(level: int):
    """Capture file descriptor 2 for the block, then write back `filter_startup_lines` of it.

    Does nothing (no capture) when descriptor 2 is not open or no temporary file can be made.
    """
    try:
        capture = tempfile.TemporaryFile()
    except OSError:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        capture.close()
        yield
        return
    with capture:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "surrogateescape")  # bytes back unchanged
            data = filter_startup_lines(text, level).encode("utf-8", "surrogateescape")
            while data:  # os.write may write part of it (pipes)
                data = data[os.write(2, data):]


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside `filtered_stderr`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # TensorFlow sees its own loader, as without this wrapper.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr(min_log_level()):
            self._loader.exec_module(module)
            with contextlib.suppress(Exception):  # cuInit happens here; errors recur on use
                module.config.list_physical_devices("GPU")


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first `import tensorflow`, then removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Filter TensorFlow's start-up notices at its first import (no-op if already imported,
    already installed, or `TF_CPP_MIN_LOG_LEVEL=0`)."""
    if "tensorflow" in sys.modules or min_log_level() <= 0:
        return
    if any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
