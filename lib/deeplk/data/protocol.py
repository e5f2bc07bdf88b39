"""The DLKFM sampling protocol shared by every dataset: corner boxes, homography, template.

A sample is a 192 x 192 *input* image, a 128 x 128 *template* and the four template corners as
(x, y) pixels in the input frame (pixel centres at integer coordinates, order top-left,
top-right, bottom-right, bottom-left). The homography ``input_H_template`` maps template pixel
coordinates to input pixel coordinates:

- each template corner is drawn uniformly (integers) inside a 64 x 64 box at the matching corner
  of the 192 image: top-left u, v in [0, 63]; top-right u in [128, 191], v in [0, 63];
  bottom-right u, v in [128, 191]; bottom-left u in [0, 63], v in [128, 191];
- ``input_H_template`` is the homography from (0, 0), (127, 0), (127, 127), (0, 127) to those
  corners;
- ``template(x, y) = template_source(input_H_template @ (x, y, 1))`` with bilinear interpolation,
  i.e. ``cv2.warpPerspective(template_source, input_H_template, (128, 128),
  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)``. This equals the original code's "warp the
  source by the inverse and crop ``[32:160, 32:160]``".

The template source is the same 192 crop as the input, in the template modality (the input
itself for mono-modal data).
"""

from __future__ import annotations

import cv2
import numpy as np

from .._checks import check_shape
from ..geometry_np import (
    centred_corners,
    centred_homography,
    corners_to_homography,
    is_convex_quad,
    template_corners,
)

#: Side of the input image.
INPUT_SIZE = 192
#: Side of the template.
TEMPLATE_SIZE = 128
#: Where the unperturbed template sits in the input: ``[32:160, 32:160]``.
PATCH_OFFSET = (INPUT_SIZE - TEMPLATE_SIZE) // 2
#: Side of the box each corner is drawn in (64: about +-32 px around the unperturbed corner).
BOX_SIZE = 64

#: Template corners in template pixels, order TL, TR, BR, BL, shape (4, 2).
TEMPLATE_CORNERS = template_corners(TEMPLATE_SIZE)
#: The centred guess of the protocol: ``input_H_template`` (3, 3) placing the template at
#: ``[32:160, 32:160]`` (a translation by `PATCH_OFFSET`), and where its corners land,
#: (32, 32), (159, 32), (159, 159), (32, 159) (`deeplk.geometry_np.centred_homography`).
CENTRED_H = centred_homography(INPUT_SIZE, TEMPLATE_SIZE)
CENTRED_CORNERS = centred_corners(INPUT_SIZE, TEMPLATE_SIZE)
#: A protocol quadrilateral turns by more than this (cross product of consecutive edges, px^2)
#: at every corner (`deeplk.geometry_np.is_convex_quad`): convex, clockwise on screen, no
#: (nearly) collinear corner triple.
MIN_CROSS = 1.0
#: Top-left of the 64 x 64 box of each corner in the input frame, order TL, TR, BR, BL.
_FAR = INPUT_SIZE - BOX_SIZE
CORNER_BOX_ORIGINS = np.array([[0, 0], [_FAR, 0], [_FAR, _FAR], [0, _FAR]], dtype=np.int64)


def sample_corners(rng: np.random.Generator, max_tries: int = 100) -> np.ndarray:
    """Draw template corners in the input frame with the DLKFM protocol.

    Args:
        rng: the random generator (consumed: 8 integers per try).
        max_tries: degenerate draws (non-convex or collinear) are redrawn up to this many times.

    Returns:
        (4, 2) int64 corners, (x, y) input pixels, order TL, TR, BR, BL; corner k lies in
        ``CORNER_BOX_ORIGINS[k] + [0, 63]^2``.
    """
    for _ in range(max_tries):
        corners = CORNER_BOX_ORIGINS + rng.integers(0, BOX_SIZE, size=(4, 2))
        if is_convex_quad(corners, MIN_CROSS):
            return corners
    raise RuntimeError(f"no convex corner set found in {max_tries} tries")  # pragma: no cover


def homography_from_corners(corners) -> np.ndarray:
    """``input_H_template``: the homography from the 128 template's corners to `corners`.

    Args:
        corners: (4, 2) (x, y) input pixels where the template corners land, TL, TR, BR, BL.

    Returns:
        (3, 3) float64, normalised so ``H[2, 2] == 1``, mapping template pixels to input pixels.
    """
    c = np.asarray(corners, dtype=np.float64)
    check_shape("corners", c, (4, 2), "(x, y) corners TL, TR, BR, BL")
    return corners_to_homography(c, TEMPLATE_SIZE)


def make_template(template_source: np.ndarray, input_H_template: np.ndarray) -> np.ndarray:
    """The 128 x 128 template cut from `template_source` (192 x 192) by ``input_H_template``.

    Args:
        template_source: (192, 192, C) or (192, 192) image in the template modality, any dtype
            OpenCV warps (uint8 here).
        input_H_template: (3, 3) homography, template pixels -> input pixels.

    Returns:
        (128, 128, C) (or (128, 128)) of the same dtype: ``template(p) = source(H p)``, bilinear.
    """
    if np.ndim(template_source) not in (2, 3) or template_source.shape[:2] != (
        INPUT_SIZE,
        INPUT_SIZE,
    ):
        raise ValueError(
            f"`template_source` must be {INPUT_SIZE} x {INPUT_SIZE}, got {template_source.shape}"
        )
    check_shape("input_H_template", input_H_template, (3, 3))
    return _warp_template(template_source, np.asarray(input_H_template, dtype=np.float64))


def _warp_template(template_source: np.ndarray, h: np.ndarray) -> np.ndarray:
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size = (TEMPLATE_SIZE, TEMPLATE_SIZE)
    if (
        template_source.ndim == 3
        and template_source.shape[2] == 3
        and template_source.dtype == np.uint8
    ):
        # OpenCV's 4-channel path is vectorised and ~3x faster; the values are identical.
        rgba = cv2.cvtColor(template_source, cv2.COLOR_RGB2RGBA)
        return cv2.cvtColor(cv2.warpPerspective(rgba, h, size, flags=flags), cv2.COLOR_RGBA2RGB)
    return cv2.warpPerspective(template_source, h, size, flags=flags)


def template_valid_mask(input_valid: np.ndarray, input_H_template: np.ndarray) -> np.ndarray:
    """Which template pixels come only from valid input pixels.

    Args:
        input_valid: (192, 192) bool validity of the template source's pixels.
        input_H_template: (3, 3) homography, template pixels -> input pixels.

    Returns:
        (128, 128) bool; a template pixel is valid when every input pixel its bilinear
        interpolation reads is valid.
    """
    check_shape("input_valid", input_valid, (INPUT_SIZE, INPUT_SIZE))
    warped = make_template(np.where(input_valid, 255, 0).astype(np.uint8), input_H_template)
    return warped == 255


def make_pair(input_image: np.ndarray, template_source: np.ndarray, rng: np.random.Generator):
    """Apply the protocol to one aligned 192 pair.

    Args:
        input_image: (192, 192, 3) uint8, the input modality (unchanged, returned as the input).
        template_source: (192, 192, 3) uint8, the same crop in the template modality.
        rng: random generator; the corners are the next draws.

    Returns:
        ``(template, corners, input_H_template)``: (128, 128, 3) uint8, (4, 2) int64, (3, 3).
    """
    check_shape("input_image", input_image, (INPUT_SIZE, INPUT_SIZE, 3))
    check_shape("template_source", template_source, (INPUT_SIZE, INPUT_SIZE, 3))
    corners = sample_corners(rng)
    input_H_template = corners_to_homography(corners, TEMPLATE_SIZE)
    return _warp_template(template_source, input_H_template), corners, input_H_template
