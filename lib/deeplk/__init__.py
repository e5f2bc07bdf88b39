"""deeplk: deep Lucas-Kanade homography estimation for hard image pairs."""

import os as _os

from deeplk import _tf_startup

# Quieter TensorFlow start-up: level 2 hides TensorFlow's C++ INFO and WARNING lines and keeps
# its errors; users can set it themselves (0 shows everything, including the lines below).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The few lines TensorFlow prints before it reads that setting, filtered at its first import.
_tf_startup.install()

__version__ = "0.1.0"


# `deeplk.align(image_a, image_b, ...)`: the function shadows its module's name on the package;
# reach the module itself with ``importlib.import_module("deeplk.align")``.
from deeplk.align import AlignResult, align  # noqa: E402
