"""deeplk: deep Lucas-Kanade homography estimation for hard image pairs."""

import os as _os

from deeplk import _tf_startup

# Quieter TensorFlow start-up: level 2 hides TensorFlow's C++ INFO and WARNING lines and keeps
# its errors; users can set it themselves (0 shows everything, including the lines below).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The few lines TensorFlow prints before it reads that setting, filtered at its first import.
_tf_startup.install()

__version__ = "0.1.0"


#: Names of the package resolved on first use (PEP 562): ``import deeplk`` stays light (no OpenCV,
#: no TensorFlow) until one of them is touched.
_LAZY = {"align": "deeplk.alignment", "AlignResult": "deeplk.alignment"}


def __getattr__(name: str):
    """``deeplk.align`` (the function of `deeplk.alignment`) and ``deeplk.AlignResult``."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deeplk' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
