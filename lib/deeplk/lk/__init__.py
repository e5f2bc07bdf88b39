"""Batched Lucas-Kanade for 8-parameter homographies on images and feature maps.

- `deeplk.lk.solver`: the inverse-compositional / ESM solver (`lucas_kanade` for one level,
  `pyramid_lucas_kanade` coarse to fine), vectorised over the batch and differentiable; its
  module docstring describes the method.
- `deeplk.lk.options`: `LKOptions`, the solver's settings as one validated object.
- `deeplk.lk.preprocess`: grey conversion, pyramids and blur (TensorFlow and host OpenCV).
- `deeplk.lk.align`: `align_images`, classical LK on image intensities (the ``lk`` method).
- `deeplk.lk.layer`: `LucasKanadeLayer`, the solver as a Keras layer.

Every estimate is ``input_H_template`` (template pixels -> input pixels), the library's one
direction.
"""

from deeplk.lk.align import align_images
from deeplk.lk.layer import LucasKanadeLayer
from deeplk.lk.options import LKOptions
from deeplk.lk.preprocess import build_pyramid, check_pyramid_doubles, gaussian_blur, to_greyscale
from deeplk.lk.solver import LKResult, lucas_kanade, pyramid_lucas_kanade

__all__ = [
    "LKOptions",
    "LKResult",
    "lucas_kanade",
    "pyramid_lucas_kanade",
    "build_pyramid",
    "check_pyramid_doubles",
    "to_greyscale",
    "gaussian_blur",
    "align_images",
    "LucasKanadeLayer",
]
