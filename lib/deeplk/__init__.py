"""deeplk: deep Lucas-Kanade homography estimation for hard image pairs."""

import os as _os

# Quieter TensorFlow start-up (C++ info and warning lines); users can set it themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
