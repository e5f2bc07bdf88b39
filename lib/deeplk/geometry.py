"""Planar projective geometry: 4-point homographies, point maps, pyramid scaling, corner error.

Conventions (shared by the whole library):

- Points are ``(B, N, 2)`` tensors of ``(x, y)`` pixel coordinates, pixel centres at integer
  coordinates (OpenCV convention). Four-corner sets are ``(B, 4, 2)`` in the order top-left,
  top-right, bottom-right, bottom-left.
- Homographies are ``(B, 3, 3)``, normalised so that ``H[..., 2, 2] == 1``.
- One direction everywhere: ``input_H_template`` maps **template** pixel coordinates to **input**
  pixel coordinates, ``p_input ~ input_H_template @ (x, y, 1)``.

Every function accepts NumPy arrays or tensors, works with any (also unknown) batch size, keeps
the floating dtype of its inputs (float32 or float64; integer inputs become float32) and is
differentiable with TensorFlow's autodiff.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import tensorflow as tf

from deeplk import geometry_np
from deeplk._checks import check_shape
from deeplk.geometry_np import Size, parse_size

__all__ = [
    "four_point_homography",
    "tensor_dlt",
    "transform_points",
    "template_corners",
    "homography_to_corners",
    "corners_to_homography",
    "centred_homography",
    "is_convex_quad",
    "normalise_homography",
    "compose_homographies",
    "invert_homography",
    "scale_homography",
    "corner_error",
    "parse_size",
]

Scale = Union[float, Sequence[float], tf.Tensor]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _result_dtype(*tensors: tf.Tensor) -> tf.DType:
    """Common floating dtype: the shared one, else float64 if any is float64, else float32."""
    floats = [t.dtype for t in tensors if t.dtype.is_floating]
    if floats and all(d == floats[0] for d in floats) and len(floats) == len(tensors):
        return floats[0]
    return tf.float64 if tf.float64 in floats else tf.float32


def _as_float(*values) -> list[tf.Tensor]:
    """Convert to tensors of one common floating dtype (see `_result_dtype`)."""
    tensors = [tf.convert_to_tensor(v) for v in values]
    dtype = _result_dtype(*tensors)
    return [t if t.dtype == dtype else tf.cast(t, dtype) for t in tensors]


def _check_same_batch(name_a: str, a: tf.Tensor, name_b: str, b: tf.Tensor) -> None:
    ba, bb = a.shape[0], b.shape[0]
    if ba is not None and bb is not None and ba != bb:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same batch size, got {ba} and {bb}"
        )


def _normalise(H: tf.Tensor) -> tf.Tensor:
    return H / H[..., 2:3, 2:3]


# --------------------------------------------------------------------------------------------
# 4-point homography (TensorDLT)
# --------------------------------------------------------------------------------------------


def _hartley(points: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-sample similarity moving the centroid to 0 and the RMS distance to sqrt(2).

    Args:
        points: ``(B, N, 2)`` float64.

    Returns:
        ``(normalised points (B, N, 2), T (B, 3, 3), T^-1 (B, 3, 3))`` with
        ``normalised ~ T @ points``.
    """
    centroid = tf.reduce_mean(points, axis=1, keepdims=True)  # (B, 1, 2)
    centred = points - centroid
    # RMS (not mean) distance: smooth everywhere unless all points coincide.
    rms = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(centred), axis=-1), axis=-1))  # (B,)
    s = tf.cast(np.sqrt(2.0), points.dtype) / rms
    cx, cy = centroid[:, 0, 0], centroid[:, 0, 1]
    zero, one = tf.zeros_like(s), tf.ones_like(s)
    T = tf.reshape(tf.stack([s, zero, -s * cx, zero, s, -s * cy, zero, zero, one], -1), [-1, 3, 3])
    inv_s = 1.0 / s
    T_inv = tf.reshape(
        tf.stack([inv_s, zero, cx, zero, inv_s, cy, zero, zero, one], -1), [-1, 3, 3]
    )
    return centred * s[:, None, None], T, T_inv


def four_point_homography(src_points, dst_points, normalise_points: bool = True) -> tf.Tensor:
    """Batched 4-point direct linear transform ("TensorDLT"): the H with ``dst ~ H @ src``.

    For each sample, the 8x8 linear system in the 8 unknowns of ``H`` (with ``H[2, 2] = 1``) is
    built from the four correspondences and solved with `tf.linalg.solve` in float64. The points
    are first normalised per sample (Hartley: centroid to the origin, RMS distance sqrt(2)),
    which makes the system well conditioned; the result is mapped back and normalised.
    Differentiable with respect to both point sets.

    Args:
        src_points: ``(B, 4, 2)`` source points, ``(x, y)`` pixels (e.g. template corners).
        dst_points: ``(B, 4, 2)`` destination points, ``(x, y)`` pixels (e.g. where the template
            corners land in the input image).
        normalise_points: apply the Hartley normalisation (recommended; only for comparisons).

    Returns:
        ``(B, 3, 3)`` homography mapping ``src`` to ``dst`` (``dst_H_src``; with template corners
        as ``src`` and input corners as ``dst`` this is ``input_H_template``), ``H[..., 2, 2] ==
        1``, in the inputs' floating dtype (float32 unless an input is float64).

    Raises:
        ValueError: if a shape is not ``(B, 4, 2)`` or the batch sizes differ.

    Degenerate configurations (three collinear points) make the system singular; the result is
    then undefined (`tf.linalg.solve` may raise `InvalidArgumentError`).
    """
    src, dst = _as_float(src_points, dst_points)
    check_shape("src_points", src, (None, 4, 2), "B x 4 corners x (x, y)")
    check_shape("dst_points", dst, (None, 4, 2), "B x 4 corners x (x, y)")
    _check_same_batch("src_points", src, "dst_points", dst)
    out_dtype = src.dtype
    src = tf.cast(src, tf.float64)
    dst = tf.cast(dst, tf.float64)

    if normalise_points:
        src_n, T_src, _ = _hartley(src)
        dst_n, _, T_dst_inv = _hartley(dst)
    else:
        src_n, dst_n = src, dst

    x, y = src_n[..., 0], src_n[..., 1]  # (B, 4)
    u, v = dst_n[..., 0], dst_n[..., 1]
    zeros, ones = tf.zeros_like(x), tf.ones_like(x)
    # u * (h6 x + h7 y + 1) = h0 x + h1 y + h2 ; v * (...) = h3 x + h4 y + h5
    rows_u = tf.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], axis=-1)  # (B, 4, 8)
    rows_v = tf.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], axis=-1)
    A = tf.reshape(tf.stack([rows_u, rows_v], axis=2), [-1, 8, 8])
    b = tf.reshape(tf.stack([u, v], axis=2), [-1, 8, 1])
    h = tf.linalg.solve(A, b)[..., 0]  # (B, 8)
    H = tf.reshape(tf.concat([h, ones[:, :1]], axis=-1), [-1, 3, 3])

    if normalise_points:
        H = tf.matmul(T_dst_inv, tf.matmul(H, T_src))
    return tf.cast(_normalise(H), out_dtype)


#: Alias used in the deep-homography literature (Nguyen et al. 2018).
tensor_dlt = four_point_homography


# --------------------------------------------------------------------------------------------
# Points and corners
# --------------------------------------------------------------------------------------------


def transform_points(H, points) -> tf.Tensor:
    """Apply homographies to points, with projective division.

    Args:
        H: ``(B, 3, 3)`` homographies ``dst_H_src`` (e.g. ``input_H_template``).
        points: ``(B, N, 2)`` points in the ``src`` frame, ``(x, y)`` pixels.

    Returns:
        ``(B, N, 2)`` points in the ``dst`` frame: ``(u/w, v/w)`` with
        ``(u, v, w) = H @ (x, y, 1)``. No guard against ``w == 0`` (points mapped to infinity
        give inf/nan).
    """
    H, points = _as_float(H, points)
    check_shape("H", H, (None, 3, 3), "B x 3 x 3 homographies")
    check_shape("points", points, (None, None, 2), "B x N x (x, y)")
    _check_same_batch("H", H, "points", points)
    # (B, N, 2) @ (B, 2, 3) + (B, 1, 3): homogeneous coordinates without a concat.
    uvw = tf.matmul(points, H[:, :, :2], transpose_b=True) + H[:, None, :, 2]
    return uvw[..., :2] / uvw[..., 2:3]


def template_corners(template_size: Size, batch=None, dtype=tf.float32) -> tf.Tensor:
    """Corners of an ``h x w`` template: ``(0, 0), (w-1, 0), (w-1, h-1), (0, h-1)``.

    Args:
        template_size: int (square) or ``(h, w)``.
        batch: ``None`` for a ``(4, 2)`` result, else a batch size (int or scalar tensor, may be
            dynamic) for ``(batch, 4, 2)``.
        dtype: floating dtype of the result.

    Returns:
        ``(4, 2)`` or ``(batch, 4, 2)`` corners, ``(x, y)`` pixels, order TL, TR, BR, BL.
    """
    h, w = parse_size("template_size", template_size)
    corners = tf.constant(
        [[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=dtype
    )
    if batch is None:
        return corners
    return tf.tile(corners[None], tf.stack([batch, 1, 1]))


def homography_to_corners(input_H_template, template_size: Size) -> tf.Tensor:
    """Where the template's corners land in the input image.

    Args:
        input_H_template: ``(B, 3, 3)``, maps template pixels to input pixels.
        template_size: int or ``(h, w)`` of the template.

    Returns:
        ``(B, 4, 2)`` input-frame ``(x, y)`` positions of the template corners
        ``(0, 0), (w-1, 0), (w-1, h-1), (0, h-1)`` (TL, TR, BR, BL).
    """
    (H,) = _as_float(input_H_template)
    check_shape("input_H_template", H, (None, 3, 3), "B x 3 x 3 homographies")
    corners = template_corners(template_size, batch=tf.shape(H)[0], dtype=H.dtype)
    return transform_points(H, corners)


def corners_to_homography(corners, template_size: Size) -> tf.Tensor:
    """The homography taking the template's corners to `corners` (inverse of
    `homography_to_corners`).

    Args:
        corners: ``(B, 4, 2)`` input-frame ``(x, y)`` positions of the template corners
            (TL, TR, BR, BL).
        template_size: int or ``(h, w)`` of the template.

    Returns:
        ``(B, 3, 3)`` ``input_H_template`` (template pixels -> input pixels), normalised.
    """
    (corners,) = _as_float(corners)
    check_shape("corners", corners, (None, 4, 2), "B x 4 corners x (x, y)")
    src = template_corners(template_size, batch=tf.shape(corners)[0], dtype=corners.dtype)
    return four_point_homography(src, corners)


def centred_homography(input_size: Size, template_size: Size, batch=None,
                       dtype=tf.float32) -> tf.Tensor:
    """The centred guess: the translation placing the template in the middle of the input
    (`deeplk.geometry_np.centred_homography` as a tensor).

    For a 128 template in a 192 input the template corners (0, 0), (127, 0), (127, 127), (0, 127)
    go to (32, 32), (159, 32), (159, 159), (32, 159).

    Args:
        input_size, template_size: int or ``(h, w)``.
        batch: ``None`` for a ``(3, 3)`` result, else a batch size (int or scalar tensor).
        dtype: floating dtype.

    Returns:
        ``(3, 3)`` or ``(batch, 3, 3)`` ``input_H_template``.

    >>> centred_homography(192, 128, batch=2).shape
    TensorShape([2, 3, 3])
    """
    H = tf.constant(geometry_np.centred_homography(input_size, template_size), dtype=dtype)
    if batch is None:
        return H
    return tf.tile(H[None], tf.stack([batch, 1, 1]))


def is_convex_quad(corners, min_cross: float = 0.0) -> tf.Tensor:
    """``(B,)`` bool: quadrilaterals TL, TR, BR, BL strictly convex and clockwise on screen,
    every cross product of consecutive edges above `min_cross` (px^2); the tensor twin of
    `deeplk.geometry_np.is_convex_quad` (one orientation).

    Args:
        corners: ``(B, 4, 2)`` ``(x, y)`` corners.
        min_cross: threshold on the cross products (rejects nearly collinear triples).
    """
    (p,) = _as_float(corners)
    check_shape("corners", p, (None, 4, 2), "B x 4 corners x (x, y)")
    e1 = tf.roll(p, shift=-1, axis=1) - p
    e2 = tf.roll(e1, shift=-1, axis=1)
    cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    return tf.reduce_all(cross > min_cross, axis=1)


# --------------------------------------------------------------------------------------------
# Algebra on homographies
# --------------------------------------------------------------------------------------------


def normalise_homography(H) -> tf.Tensor:
    """Divide ``(B, 3, 3)`` homographies by ``H[..., 2, 2]`` (same map, canonical scale)."""
    (H,) = _as_float(H)
    check_shape("H", H, (None, 3, 3), "B x 3 x 3 homographies")
    return _normalise(H)


def compose_homographies(a_H_b, b_H_c) -> tf.Tensor:
    """Compose ``a_H_b @ b_H_c`` -> ``a_H_c`` (apply ``b_H_c`` first), normalised.

    Args:
        a_H_b: ``(B, 3, 3)`` maps frame b to frame a.
        b_H_c: ``(B, 3, 3)`` maps frame c to frame b.

    Returns:
        ``(B, 3, 3)`` ``a_H_c``, with ``[..., 2, 2] == 1``.
    """
    A, B = _as_float(a_H_b, b_H_c)
    check_shape("a_H_b", A, (None, 3, 3), "B x 3 x 3 homographies")
    check_shape("b_H_c", B, (None, 3, 3), "B x 3 x 3 homographies")
    _check_same_batch("a_H_b", A, "b_H_c", B)
    return _normalise(tf.matmul(A, B))


def invert_homography(H) -> tf.Tensor:
    """Inverse homographies (``a_H_b`` -> ``b_H_a``), computed in float64, normalised.

    Args:
        H: ``(B, 3, 3)`` invertible homographies.

    Returns:
        ``(B, 3, 3)`` inverses with ``[..., 2, 2] == 1``, in the input dtype.
    """
    (H,) = _as_float(H)
    check_shape("H", H, (None, 3, 3), "B x 3 x 3 homographies")
    H_inv = tf.linalg.inv(tf.cast(H, tf.float64))
    return tf.cast(_normalise(H_inv), H.dtype)


def scale_homography(H, scale: Scale, half_pixel_centers: bool = True) -> tf.Tensor:
    """Express a homography at another image resolution (pyramid level).

    Both frames (input and template) are assumed resized by the same factor `scale`
    (``0.5`` = half resolution, the next coarser pyramid level; ``2.0`` goes back to the finer
    one). A pixel coordinate ``x`` at the old resolution becomes

    - ``x' = (x + 0.5) * scale - 0.5`` with ``half_pixel_centers=True`` (pixel areas preserved:
      matches `cv2.resize` with ``INTER_AREA``/``INTER_LINEAR``, ``tf.image.resize`` and 2x2
      average pooling with stride 2),
    - ``x' = x * scale`` with ``half_pixel_centers=False`` (corner-aligned sampling, e.g. strided
      subsampling ``img[::2, ::2]``),

    i.e. ``p' = S p`` and ``H' = S @ H @ S^-1``.

    Args:
        H: ``(B, 3, 3)`` homography between the two frames (any direction; conventionally
            ``input_H_template``).
        scale: positive scalar (both axes) or an ``(sx, sy)`` pair, Python number or tensor.
        half_pixel_centers: which coordinate map to use (see above).

    Returns:
        ``(B, 3, 3)`` homography at the new resolution, normalised, same dtype as `H`.
    """
    (H,) = _as_float(H)
    check_shape("H", H, (None, 3, 3), "B x 3 x 3 homographies")
    if not tf.is_tensor(scale):
        s_np = np.asarray(scale, dtype=np.float64)
        if s_np.shape not in ((), (2,)):
            raise ValueError(f"`scale` must be a scalar or an (sx, sy) pair, got {scale!r}")
        if np.any(~(s_np > 0)):
            raise ValueError(f"`scale` must be positive, got {scale!r}")
    s = tf.cast(tf.convert_to_tensor(scale), H.dtype)
    if s.shape.rank == 0:
        sx = sy = s
    elif s.shape.as_list() == [2]:
        sx, sy = s[0], s[1]
    else:
        raise ValueError(f"`scale` must be a scalar or an (sx, sy) pair, got shape {s.shape}")
    if half_pixel_centers:
        tx, ty = 0.5 * sx - 0.5, 0.5 * sy - 0.5
    else:
        tx = ty = tf.zeros_like(sx)
    zero, one = tf.zeros_like(sx), tf.ones_like(sx)
    S = tf.reshape(tf.stack([sx, zero, tx, zero, sy, ty, zero, zero, one]), [1, 3, 3])
    S_inv = tf.reshape(
        tf.stack([1.0 / sx, zero, -tx / sx, zero, 1.0 / sy, -ty / sy, zero, zero, one]), [1, 3, 3]
    )
    return _normalise(tf.matmul(S, tf.matmul(H, S_inv)))


# --------------------------------------------------------------------------------------------
# Metric
# --------------------------------------------------------------------------------------------


def corner_error(pred_corners, true_corners) -> tf.Tensor:
    """Mean corner error (PE in the DLKFM paper): mean over the 4 corners of the L2 distance.

    Args:
        pred_corners: ``(B, 4, 2)`` predicted corners, ``(x, y)`` pixels.
        true_corners: ``(B, 4, 2)`` ground-truth corners, same frame.

    Returns:
        ``(B,)`` errors in pixels. The gradient is finite everywhere (0 where a corner is exact).
    """
    pred, true = _as_float(pred_corners, true_corners)
    check_shape("pred_corners", pred, (None, 4, 2), "B x 4 corners x (x, y)")
    check_shape("true_corners", true, (None, 4, 2), "B x 4 corners x (x, y)")
    _check_same_batch("pred_corners", pred, "true_corners", true)
    sq = tf.reduce_sum(tf.square(pred - true), axis=-1)  # (B, 4)
    positive = sq > 0
    dist = tf.where(positive, tf.sqrt(tf.where(positive, sq, tf.ones_like(sq))), tf.zeros_like(sq))
    return tf.reduce_mean(dist, axis=-1)
