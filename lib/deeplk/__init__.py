"""deeplk: deep Lucas-Kanade homography estimation for hard image pairs."""

import os as _os

from deeplk import _tf_startup

# Quieter TensorFlow start-up: level 2 hides TensorFlow's C++ INFO and WARNING lines and keeps
# its errors; users can set it themselves (0 shows everything, including the lines below).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The few lines TensorFlow prints before it reads that setting, filtered at its first import.
_tf_startup.install()

__version__ = "0.1.0"
