"""deeplk: deep Lucas-Kanade homography estimation for hard image pairs."""

__version__ = "0.1.0"
