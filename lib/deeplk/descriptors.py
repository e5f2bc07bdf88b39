"""Modality-independent dense descriptors for Lucas-Kanade across modalities (``lk_mind``).

Intensity LK assumes that the template and the warped input have the same grey values; across
modalities (satellite photo vs map rendering, optical vs infrared) they do not, and may even be
inverted. The descriptors here replace each pixel's intensity by a few channels that depend on
the *local structure* only, so that the project's multi-channel LK (`deeplk.lk.align_images`
with ``grayscale=False``) can align them. Both are batch-first ``(B, H, W, C) -> (B, H, W, K)``,
differentiable TensorFlow functions, and exactly invariant to ``a * image + b`` for any real
``a != 0`` (in particular to inverted contrast, ``1 - image``): every statistic is a ratio of two
quantities that scale alike, and the regularisers are relative to the image's own mean.

- `mind` (Heinrich et al., "MIND: Modality independent neighbourhood descriptor for multi-modal
  deformable registration", Medical Image Analysis 16, 2012): for a few offsets ``r``,
  ``D(x, r) = G_sigma * sum_c (I_c - I_c(. + r))^2`` (a Gaussian-weighted patch SSD between the
  patch at ``x`` and the patch at ``x + r``), ``V(x) = mean_r D(x, r)`` (a local variance
  estimate, plus ``epsilon`` times its image mean so that flat areas do not divide by zero) and
  ``MIND(x, r) = exp(-D(x, r) / V(x)) / max_r exp(-D(x, r) / V(x))``, i.e.
  ``exp(-(D(x, r) - min_r D(x, r)) / V(x))``, in (0, 1].
- `orientation_field`: gradient orientation at the doubled angle, ``(cos 2t, sin 2t)``, so that
  a gradient and its opposite (inverted contrast) give the same value, weighted by the soft
  magnitude ``|g|^2 / (|g|^2 + eps^2)`` (``eps^2 = epsilon^2`` times the image's mean ``|g|^2``)
  and blurred: ``G_sigma * (gx^2 - gy^2, 2 gx gy) / (|g|^2 + eps^2)``. Two channels, smooth
  everywhere (the squared weighting avoids the kink of ``|g|`` at 0). This is a normalised
  gradient field with the sign removed.

Channels of the input are combined inside the statistics (sums of squared differences or of
gradient products over channels), so RGB and grey images are handled alike.

`describe(images, name)` dispatches by name (`DESCRIPTORS`). The ``lk_mind`` method
(`deeplk.methods`) uses `mind` with its defaults: on real satellite / map-rendering pairs it put
more samples under 3, 5 and 10 px than the orientation field or other MIND settings (larger
patches, longer offsets, six or eight offsets).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deeplk._checks import check_non_negative, check_positive_int, check_shape
from deeplk.lk import gaussian_blur

__all__ = ["DESCRIPTORS", "mind", "orientation_field", "describe"]

#: Offsets ``(dx, dy)`` of the MIND search neighbourhoods, in units of `distance`.
_NEIGHBOURHOODS = {
    "four": ((1, 0), (0, 1), (-1, 0), (0, -1)),
    "six": ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1)),
    "eight": ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1)),
}


def _images(name: str, images) -> tf.Tensor:
    x = tf.convert_to_tensor(images)
    if not x.dtype.is_floating:
        raise ValueError(f"`{name}` must be a floating tensor, got dtype {x.dtype.name}")
    check_shape(name, x, (None, None, None, None), "B x H x W x C images")
    if x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"`{name}` must have a static height and width, got {tuple(x.shape)}")
    for axis, what in ((1, "height"), (2, "width"), (3, "channel count")):
        if x.shape[axis] is not None and x.shape[axis] < 1:
            raise ValueError(f"`{name}` must have a {what} of at least 1, got shape "
                             f"{tuple(x.shape)}")
    return x


def _shift(x: tf.Tensor, dx: int, dy: int) -> tf.Tensor:
    """``out[:, y, x] = x[:, y + dy, x + dx]`` with edge replication outside the image."""
    h, w = int(x.shape[1]), int(x.shape[2])
    ys = np.clip(np.arange(h) + dy, 0, h - 1)
    xs = np.clip(np.arange(w) + dx, 0, w - 1)
    return tf.gather(tf.gather(x, ys, axis=1), xs, axis=2)


def _image_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over the pixels (and channels) of each image, shaped to broadcast: (B, 1, 1, 1)."""
    return tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)


def mind(images, neighbourhood: str = "four", distance: int = 1, sigma: float = 1.0,
         epsilon: float = 0.01) -> tf.Tensor:
    """MIND self-similarity descriptor (see the module docstring).

    Args:
        images: ``(B, H, W, C)`` floating images (float32 or float64), static ``H``, ``W``.
        neighbourhood: ``"four"`` (the 2-D four-neighbourhood, K = 4), ``"six"`` or
            ``"eight"`` offsets.
        distance: length of the offsets in pixels (1: the immediate neighbours).
        sigma: standard deviation (pixels) of the Gaussian patch weighting (normalised
            convolution, `deeplk.lk.gaussian_blur`); 0 compares single pixels.
        epsilon: ``V(x)`` gets ``epsilon`` times its image mean added, so that a flat region
            gives ``exp(0) = 1`` instead of 0/0; being relative, it keeps the invariance to
            ``a * image + b``.

    Returns:
        ``(B, H, W, K)`` descriptor in (0, 1], dtype of `images`; at every pixel the largest
        channel is 1. Differentiable (almost everywhere: the max picks one offset).

    Raises:
        ValueError: bad rank, dtype or size of `images`, unknown `neighbourhood`, `distance` not
            a positive integer, negative `sigma` or `epsilon`.

    >>> x = tf.random.uniform((2, 32, 32, 3), seed=0)
    >>> mind(x).shape
    TensorShape([2, 32, 32, 4])
    """
    x = _images("images", images)
    if neighbourhood not in _NEIGHBOURHOODS:
        raise ValueError(f"`neighbourhood` must be one of {sorted(_NEIGHBOURHOODS)}, got "
                         f"{neighbourhood!r}")
    distance = check_positive_int("distance", distance)
    sigma = check_non_negative("sigma", sigma)
    epsilon = check_non_negative("epsilon", epsilon)
    ssd = []
    for dx, dy in _NEIGHBOURHOODS[neighbourhood]:
        diff = x - _shift(x, dx * distance, dy * distance)
        ssd.append(tf.reduce_sum(tf.square(diff), axis=-1))
    d = gaussian_blur(tf.stack(ssd, axis=-1), sigma)  # (B, H, W, K)
    v = tf.reduce_mean(d, axis=-1, keepdims=True)
    v = v + tf.cast(epsilon, x.dtype) * _image_mean(v)
    # A constant image has V == 0 everywhere: give it D/V == 0 (descriptor 1) instead of 0/0.
    v = tf.where(v > 0, v, tf.ones_like(v))
    return tf.exp(-(d - tf.reduce_min(d, axis=-1, keepdims=True)) / v)


def _gradients(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Central differences (one-sided at the border), ``(B, H, W, C)`` each."""
    h, w = int(x.shape[1]), int(x.shape[2])

    def along(axis, n):
        if n == 1:
            return tf.zeros_like(x)
        hi = np.minimum(np.arange(n) + 1, n - 1)
        lo = np.maximum(np.arange(n) - 1, 0)
        step = tf.constant((hi - lo).astype(np.float64), x.dtype)
        shape = [1, 1, 1, 1]
        shape[axis] = n
        return (tf.gather(x, hi, axis=axis) - tf.gather(x, lo, axis=axis)) / tf.reshape(step, shape)

    return along(2, w), along(1, h)


def orientation_field(images, sigma: float = 2.0, epsilon: float = 0.1) -> tf.Tensor:
    """Doubled-angle gradient orientation, softly weighted by magnitude, blurred (see the module
    docstring).

    Args:
        images: ``(B, H, W, C)`` floating images (float32 or float64), static ``H``, ``W``.
        sigma: Gaussian blur (pixels, `deeplk.lk.gaussian_blur`) of the two channels; 0: none.
        epsilon: soft-magnitude scale relative to the image's root mean squared gradient: a
            gradient of ``epsilon`` times that RMS gets weight 1/2. Must be > 0.

    Returns:
        ``(B, H, W, 2)``: ``(cos 2t, sin 2t)`` times ``|g|^2 / (|g|^2 + eps^2)``, blurred, values
        in [-1, 1], dtype of `images`. Gradients (and the channel sums of their products) are
        combined over the input channels.

    Raises:
        ValueError: bad rank, dtype or size of `images`, negative `sigma`, `epsilon` not > 0.

    >>> x = tf.random.uniform((2, 32, 32, 1), seed=0)
    >>> orientation_field(x).shape
    TensorShape([2, 32, 32, 2])
    """
    x = _images("images", images)
    sigma = check_non_negative("sigma", sigma)
    epsilon = check_non_negative("epsilon", epsilon)
    if epsilon == 0:
        raise ValueError("`epsilon` must be > 0 (it keeps flat regions finite)")
    gx, gy = _gradients(x)
    gxx = tf.reduce_sum(gx * gx, axis=-1, keepdims=True)
    gyy = tf.reduce_sum(gy * gy, axis=-1, keepdims=True)
    gxy = tf.reduce_sum(gx * gy, axis=-1, keepdims=True)
    mag2 = gxx + gyy
    eps2 = tf.cast(epsilon ** 2, x.dtype) * _image_mean(mag2)
    # A constant image has no gradient at all: any positive eps2 gives exactly 0 there.
    eps2 = tf.where(eps2 > 0, eps2, tf.ones_like(eps2))
    field = tf.concat([gxx - gyy, 2.0 * gxy], axis=-1) / (mag2 + eps2)
    return gaussian_blur(field, sigma)


#: Descriptor names accepted by `describe` (and by the ``lk_mind`` method's ``descriptor``).
DESCRIPTORS = {"mind": mind, "orientation": orientation_field}


def describe(images, name: str = "mind", **options) -> tf.Tensor:
    """Apply the descriptor `name` (a key of `DESCRIPTORS`) with its `options`."""
    if name not in DESCRIPTORS:
        raise ValueError(f"unknown descriptor {name!r}; choose one of {sorted(DESCRIPTORS)}")
    return DESCRIPTORS[name](images, **options)
