"""Batched, differentiable bilinear warping of images and feature maps by homographies.

`warp_image` resamples an input image (or a many-channel feature map) into the template frame:
for every template pixel ``(x, y)`` it reads the input at ``input_H_template @ (x, y, 1)``.
It is the TensorFlow equivalent of::

    cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)

and is differentiable with respect to the image and to the homography (through the sampling
coordinates). Pixel centres sit at integer coordinates (OpenCV convention). Sampling is one
``tf.gather`` of the four bilinear neighbours per output pixel on the flattened image, so the cost
grows with the number of channels only through that gather; there is no loop over the batch and
the batch dimension may be unknown inside `tf.function`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deeplk._checks import check_shape
from deeplk.geometry import Size, parse_size

__all__ = ["sample_bilinear", "warp_image", "pixel_grid"]


def _as_float_images(images) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(
            f"`images` must be a floating tensor (float32 in [0, 1] by convention), got dtype "
            f"{images.dtype.name}; convert uint8 images with `images / 255`"
        )
    return images


def pixel_grid(size: Size, dtype=tf.float32) -> tuple[tf.Tensor, tf.Tensor]:
    """Pixel-centre coordinates of an ``h x w`` image.

    Args:
        size: int or ``(h, w)``.
        dtype: floating dtype.

    Returns:
        ``(x, y)``, each ``(h, w)``: ``x[i, j] == j`` and ``y[i, j] == i``.
    """
    h, w = parse_size("size", size)
    x, y = tf.meshgrid(tf.range(w, dtype=dtype), tf.range(h, dtype=dtype), indexing="xy")
    return x, y


def sample_bilinear(images, x, y, return_mask: bool = True):
    """Sample images at real-valued pixel positions with bilinear interpolation, zero outside.

    Each of the four neighbours ``(floor(x) + {0, 1}, floor(y) + {0, 1})`` contributes its bilinear
    weight times its value if it lies inside the image and 0 otherwise (as OpenCV's
    ``BORDER_CONSTANT`` with value 0), so samples next to the border blend with black and samples
    farther out are exactly 0.

    Args:
        images: ``(B, H, W, C)`` floating images or feature maps (any number of channels).
        x: ``(B, h, w)`` column coordinates, pixels (pixel centres at integers).
        y: ``(B, h, w)`` row coordinates, pixels.
        return_mask: also return the validity mask.

    Returns:
        ``values`` ``(B, h, w, C)`` in the dtype of `images`, and, if `return_mask`, ``mask``
        ``(B, h, w, 1)`` (same dtype): 1 where ``0 <= x <= W - 1`` and ``0 <= y <= H - 1``, i.e.
        where every neighbour with a non-zero weight is inside the image (a sample exactly on the
        last row or column is valid), 0 elsewhere (including non-finite coordinates).

    Differentiable with respect to `images` and to `x`, `y` (gradient of the bilinear
    interpolant; it is discontinuous across integer coordinates, as for any bilinear sampler).
    """
    images = _as_float_images(images)
    check_shape("images", images, (None, None, None, None), "B x H x W x C")
    dtype = images.dtype
    x = tf.cast(tf.convert_to_tensor(x), dtype)
    y = tf.cast(tf.convert_to_tensor(y), dtype)
    check_shape("x", x, (None, None, None), "B x h x w sampling columns")
    check_shape("y", y, (None, None, None), "B x h x w sampling rows")
    if not x.shape.is_compatible_with(y.shape):
        raise ValueError(f"`x` and `y` must have the same shape, got {x.shape} and {y.shape}")
    b_img, b_xy = images.shape[0], x.shape[0]
    if b_img is not None and b_xy is not None and b_img != b_xy:
        raise ValueError(f"`x` and `y` must have the batch size of `images` ({b_img}), got {b_xy}")
    return _sample_bilinear(images, x, y, return_mask)


def _sample_bilinear(images: tf.Tensor, x: tf.Tensor, y: tf.Tensor, return_mask: bool):
    """`sample_bilinear` without argument checks; `x`, `y` already in the images' dtype."""
    dtype = images.dtype
    shape = tf.shape(images)
    height, width, channels = shape[1], shape[2], shape[3]
    w_max = tf.cast(width - 1, dtype)
    h_max = tf.cast(height - 1, dtype)

    # Non-finite coordinates (points sent to infinity) are moved out of the image, and all
    # coordinates are clipped to [-2, size + 1] so that the int32 casts below cannot overflow.
    # Clipping only changes samples that are entirely outside (weight 0 for every neighbour).
    finite = tf.math.is_finite(x) & tf.math.is_finite(y)
    outside = tf.constant(-2.0, dtype)
    x = tf.clip_by_value(tf.where(finite, x, outside), outside, w_max + 2.0)
    y = tf.clip_by_value(tf.where(finite, y, outside), outside, h_max + 2.0)

    mask = finite & (x >= 0.0) & (x <= w_max) & (y >= 0.0) & (y <= h_max)

    x0f = tf.floor(x)
    y0f = tf.floor(y)
    fx = x - x0f  # floor has no gradient: d/dx flows through the fractional parts
    fy = y - y0f
    x0 = tf.cast(x0f, tf.int32)
    y0 = tf.cast(y0f, tf.int32)
    x1 = x0 + 1
    y1 = y0 + 1

    in_x0 = (x0 >= 0) & (x0 < width)
    in_x1 = (x1 >= 0) & (x1 < width)
    in_y0 = (y0 >= 0) & (y0 < height)
    in_y1 = (y1 >= 0) & (y1 < height)

    # Neighbour order: (x0, y0), (x1, y0), (x0, y1), (x1, y1); shape (B, h, w, 4).
    weights = tf.stack(
        [(1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy], axis=-1
    )
    inside = tf.stack([in_x0 & in_y0, in_x1 & in_y0, in_x0 & in_y1, in_x1 & in_y1], axis=-1)
    weights = weights * tf.cast(inside, dtype)

    xc0 = tf.clip_by_value(x0, 0, width - 1)
    xc1 = tf.clip_by_value(x1, 0, width - 1)
    yc0 = tf.clip_by_value(y0, 0, height - 1) * width
    yc1 = tf.clip_by_value(y1, 0, height - 1) * width
    index = tf.stack([yc0 + xc0, yc0 + xc1, yc1 + xc0, yc1 + xc1], axis=-1)  # (B, h, w, 4)

    flat = tf.reshape(images, tf.stack([shape[0], height * width, channels]))
    neighbours = tf.gather(flat, index, batch_dims=1)  # (B, h, w, 4, C)
    values = tf.reduce_sum(neighbours * weights[..., None], axis=-2)
    if not return_mask:
        return values
    return values, tf.cast(mask, dtype)[..., None]


def warp_image(images, input_H_template, output_size: Size, return_mask: bool = True):
    """Warp input images into the template frame (inverse mapping, bilinear, zero outside).

    For every output pixel ``(x, y)`` (template frame, pixel centres at integers) the result is
    `images` sampled with `sample_bilinear` at ``(u / s, v / s)``, ``(u, v, s) =
    input_H_template @ (x, y, 1)``. Same as ``cv2.warpPerspective(img, H, (w, h),
    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)``: equal up
    to float32 rounding for images of up to 4 channels; for more channels OpenCV rounds the
    sampling positions to 1/32 pixel, this function does not.

    Args:
        images: ``(B, H, W, C)`` floating input images or feature maps, any number of channels.
        input_H_template: ``(B, 3, 3)`` homographies mapping template pixel coordinates to input
            pixel coordinates (need not be normalised; cast to the dtype of `images`).
        output_size: int or ``(h, w)``: template size.
        return_mask: also return the validity mask.

    Returns:
        ``warped`` ``(B, h, w, C)`` in the dtype of `images`, and, if `return_mask`, ``mask``
        ``(B, h, w, 1)``: 1 where the sampling position lies in ``[0, W-1] x [0, H-1]`` (every
        bilinear neighbour with a non-zero weight is inside; the last row/column counts as
        inside), else 0. Where the mask is 0 the warped value is 0 or, within one pixel of the
        border, a blend of the edge pixels with 0 (as OpenCV).

    Differentiable with respect to `images` and `input_H_template`. Works inside `tf.function`
    with unknown batch and image sizes (`output_size` must be static).

    Raises:
        ValueError: bad shapes, mismatched batch sizes, non-floating images or a bad size.
    """
    images = _as_float_images(images)
    dtype = images.dtype
    H = tf.convert_to_tensor(input_H_template)
    H = tf.cast(H, dtype) if H.dtype != dtype else H
    check_shape("images", images, (None, None, None, None), "B x H x W x C")
    check_shape("input_H_template", H, (None, 3, 3), "B x 3 x 3 homographies")
    if images.shape[0] is not None and H.shape[0] is not None and images.shape[0] != H.shape[0]:
        raise ValueError(
            f"`images` and `input_H_template` must have the same batch size, got "
            f"{images.shape[0]} and {H.shape[0]}"
        )
    h, w = parse_size("output_size", output_size)

    gx, gy = pixel_grid((h, w), dtype)
    # (u, v, s) for every pixel, (B, h, w): explicit sums keep the identity exact and avoid
    # materialising homogeneous coordinates.
    H = H[:, None, None, :, :]  # (B, 1, 1, 3, 3)
    u = H[..., 0, 0] * gx + H[..., 0, 1] * gy + H[..., 0, 2]
    v = H[..., 1, 0] * gx + H[..., 1, 1] * gy + H[..., 1, 2]
    s = H[..., 2, 0] * gx + H[..., 2, 1] * gy + H[..., 2, 2]
    # Guard s == 0 (point at infinity): divide by 1 there and send the sample out of the image,
    # so that neither the value nor its gradient becomes nan.
    s_ok = tf.abs(s) > np.finfo(dtype.as_numpy_dtype).tiny
    s_safe = tf.where(s_ok, s, tf.ones_like(s))
    outside = tf.constant(-2.0, dtype)
    x = tf.where(s_ok, u / s_safe, outside)
    y = tf.where(s_ok, v / s_safe, outside)
    return _sample_bilinear(images, x, y, return_mask)
