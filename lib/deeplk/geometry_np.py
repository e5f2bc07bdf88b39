"""The NumPy / OpenCV twin of `deeplk.geometry`, for host code that must not import TensorFlow.

Same conventions as `deeplk.geometry`: points are ``(x, y)`` pixels with pixel centres at integer
coordinates, four-corner sets are ordered top-left, top-right, bottom-right, bottom-left, and a
homography ``input_H_template`` maps template pixel coordinates to input pixel coordinates,
normalised so that ``H[2, 2] == 1``. Results are float64. The functions take one sample
(``(3, 3)``, ``(4, 2)``) or a batch (``(B, 3, 3)``, ``(B, 4, 2)``) where noted; the TensorFlow
versions of the same names (`deeplk.geometry`) are tested against these and against OpenCV.

Used by the data protocol (`deeplk.data.protocol`), the OpenCV baselines (`deeplk.baselines`)
and the host side of the aligners: the centred guess (`centred_homography`, `centred_corners`)
and the convexity check (`is_convex_quad`) live here once.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from deeplk._checks import check_positive_int, check_shape

__all__ = [
    "parse_size",
    "template_corners",
    "centred_homography",
    "centred_corners",
    "transform_points",
    "homography_to_corners",
    "corners_to_homography",
    "scale_homography",
    "quad_turns",
    "is_convex_quad",
]

Size = Union[int, Sequence[int]]


def parse_size(name: str, size: Size) -> tuple[int, int]:
    """Return ``(h, w)`` from an int (square) or an ``(h, w)`` pair; `ValueError` otherwise."""
    if np.ndim(size) == 0:
        s = check_positive_int(name, size)
        return s, s
    values = list(np.asarray(size).reshape(-1))
    if len(values) != 2:
        raise ValueError(f"`{name}` must be an int or an (h, w) pair, got {size!r}")
    return check_positive_int(f"{name}[0] (h)", values[0]), check_positive_int(
        f"{name}[1] (w)", values[1]
    )


def template_corners(template_size: Size) -> np.ndarray:
    """``(4, 2)`` float64 corners ``(0, 0), (w-1, 0), (w-1, h-1), (0, h-1)`` of an ``h x w``
    template (int or ``(h, w)``)."""
    h, w = parse_size("template_size", template_size)
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def centred_homography(input_size: Size, template_size: Size) -> np.ndarray:
    """The centred guess: ``(3, 3)`` float64 ``input_H_template``, the translation placing the
    unwarped template in the middle of the input.

    Args:
        input_size, template_size: int or ``(h, w)``.

    >>> centred_homography(192, 128)[:2, 2].tolist()  # corners (32, 32) ... (159, 159)
    [32.0, 32.0]
    """
    hi, wi = parse_size("input_size", input_size)
    ht, wt = parse_size("template_size", template_size)
    H = np.eye(3)
    H[0, 2] = (wi - wt) / 2.0
    H[1, 2] = (hi - ht) / 2.0
    return H


def centred_corners(input_size: Size, template_size: Size) -> np.ndarray:
    """Where the centred template's corners land in the input, ``(4, 2)`` float64, on whole
    pixels: ``(o, o), (o + t - 1, o), (o + t - 1, o + t - 1), (o, o + t - 1)`` with
    ``o = (input_size - template_size) / 2``.

    Raises:
        ValueError: unless the input exceeds the template by an even number of pixels on each
            axis (so that the corners are whole pixels and the template lies inside the input).

    >>> centred_corners(192, 128).tolist()
    [[32.0, 32.0], [159.0, 32.0], [159.0, 159.0], [32.0, 159.0]]
    """
    hi, wi = parse_size("input_size", input_size)
    ht, wt = parse_size("template_size", template_size)
    for a, b in ((hi, ht), (wi, wt)):
        if (a - b) % 2 or a <= b:
            raise ValueError(
                "`input_size` must exceed `template_size` by an even number of pixels, got "
                f"{input_size} and {template_size}"
            )
    return template_corners((ht, wt)) + centred_homography((hi, wi), (ht, wt))[:2, 2]


def _homographies(name: str, H) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3):
        check_shape(name, H, (None, 3, 3), "(3, 3) or (B, 3, 3) homographies")
    return H


def transform_points(H, points) -> np.ndarray:
    """Apply ``(3, 3)`` or ``(B, 3, 3)`` homographies to ``(N, 2)`` or ``(B, N, 2)`` points, with
    projective division (`cv2.perspectiveTransform`), float64."""
    import cv2

    H = _homographies("H", H)
    pts = np.asarray(points, dtype=np.float64)
    if H.ndim == 2:
        check_shape("points", pts, (None, 2), "N x (x, y)")
        return cv2.perspectiveTransform(pts[None], H)[0]
    check_shape("points", pts, (H.shape[0], None, 2), "B x N x (x, y), B of H")
    return np.stack([cv2.perspectiveTransform(p[None], h)[0] for p, h in zip(pts, H)]).reshape(
        pts.shape
    )


def homography_to_corners(input_H_template, template_size: Size) -> np.ndarray:
    """Where the template's corners land in the input: ``(4, 2)`` for a ``(3, 3)`` H, ``(B, 4,
    2)`` for ``(B, 3, 3)``."""
    H = _homographies("input_H_template", input_H_template)
    corners = template_corners(template_size)
    if H.ndim == 3:
        corners = np.broadcast_to(corners, (H.shape[0], 4, 2))
    return transform_points(H, corners)


def corners_to_homography(corners, template_size: Size) -> np.ndarray:
    """``input_H_template`` taking the template's corners to `corners` (inverse of
    `homography_to_corners`): `cv2.getPerspectiveTransform` on float32 points, normalised.

    Args:
        corners: ``(4, 2)`` or ``(B, 4, 2)`` input-frame ``(x, y)`` corners, TL, TR, BR, BL.
        template_size: int or ``(h, w)``.

    Returns:
        ``(3, 3)`` or ``(B, 3, 3)`` float64.
    """
    import cv2

    c = np.asarray(corners, dtype=np.float64)
    if c.shape != (4, 2):
        check_shape("corners", c, (None, 4, 2), "(4, 2) or (B, 4, 2) corners TL, TR, BR, BL")
    src = template_corners(template_size).astype(np.float32)
    flat = c.reshape(-1, 4, 2).astype(np.float32)
    H = np.stack([cv2.getPerspectiveTransform(src, d) for d in flat])
    H = H / H[:, 2:3, 2:3]
    return H.reshape(c.shape[:-2] + (3, 3))


def scale_homography(H, scale: float, half_pixel_centers: bool = True) -> np.ndarray:
    """`deeplk.geometry.scale_homography` for ``(3, 3)`` or ``(B, 3, 3)``: ``S @ H @ S^-1`` with
    ``x' = (x + 0.5) * scale - 0.5`` (``half_pixel_centers``, as `cv2.resize` INTER_AREA) or
    ``x' = x * scale``. Not renormalised (``S`` keeps ``H[2, 2]``)."""
    H = _homographies("H", H)
    s = float(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"`scale` must be a finite positive number, got {scale!r}")
    t, t_inv = (0.5 * s - 0.5, 0.5 / s - 0.5) if half_pixel_centers else (0.0, 0.0)
    S = np.array([[s, 0, t], [0, s, t], [0, 0, 1.0]])
    S_inv = np.array([[1 / s, 0, t_inv], [0, 1 / s, t_inv], [0, 0, 1.0]])
    return S @ H @ S_inv


def quad_turns(corners) -> np.ndarray:
    """``(..., 4)`` cross products of consecutive edges of quadrilaterals ``(..., 4, 2)``:
    entry k is ``(p[k+1] - p[k]) x (p[k+2] - p[k+1])``; all positive when TL, TR, BR, BL turn
    clockwise on screen (y down), the protocol's orientation."""
    p = np.asarray(corners, dtype=np.float64)
    e1 = np.roll(p, -1, axis=-2) - p
    e2 = np.roll(e1, -1, axis=-2)
    return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]


def is_convex_quad(corners, min_cross: float = 0.0, either_orientation: bool = False):
    """Whether quadrilaterals TL, TR, BR, BL are strictly convex (no fold-over).

    Args:
        corners: ``(4, 2)`` or ``(..., 4, 2)`` ``(x, y)`` points.
        min_cross: every cross product of consecutive edges (`quad_turns`, px^2) must exceed
            this, which also rejects collinear and nearly collinear corner triples.
        either_orientation: also accept quadrilaterals turning the other way (mirrored).

    Returns:
        A Python bool for one quadrilateral, else a ``(...)`` bool array. Non-finite corners
        are not convex.

    >>> is_convex_quad([[0, 0], [9, 0], [9, 9], [0, 9]]), is_convex_quad([[0, 0], [9, 9], [9, 0], [0, 9]])
    (True, False)
    """
    c = np.asarray(corners, dtype=np.float64)
    if c.ndim < 2 or c.shape[-2:] != (4, 2):
        raise ValueError(f"`corners` must have shape (4, 2) or (..., 4, 2), (x, y) corners TL, TR, "
                         f"BR, BL, got {c.shape}")
    cross = quad_turns(c)
    ok = np.all(cross > min_cross, axis=-1)
    if either_orientation:
        ok |= np.all(cross < -min_cross, axis=-1)
    return bool(ok) if ok.ndim == 0 else ok
