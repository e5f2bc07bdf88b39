"""Image preprocessing of the Lucas-Kanade aligner: grey conversion, 2x2 average pyramids and
normalised Gaussian blur, in TensorFlow (inside the compiled program) and on the host (NumPy /
OpenCV, for eager calls of `deeplk.lk.align_images`).

Host preprocessing: the same grey conversion, 2x2 average pyramid and normalised Gaussian blur as
`_preprocess`, on NumPy arrays with OpenCV. Inside the compiled program these few passes over the
RGB images took over a third of the aligner's time (XLA re-reads the RGB input in several
fusions); on the host ~0.15 ms per pair, and only the grey pyramids are copied to TensorFlow.
Equal to `_preprocess` up to float rounding (tested). On 560 MSCOCO-protocol pairs in batches of
64, this and the skipped last warps of the solver brought the CPU time of `align_images` from
~3.5 to ~2.2 ms per pair with identical accuracy (``bench/lk_vs_ecc.py``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from deeplk._checks import check_positive_int, check_shape

__all__ = ["to_greyscale", "gaussian_blur", "build_pyramid", "check_pyramid_doubles"]

#: Luma weights (ITU-R 601), as `tf.image.rgb_to_grayscale`.
_LUMA = (0.2989, 0.5870, 0.1140)

def _squeeze_channel(x: tf.Tensor) -> tf.Tensor:
    return x[..., 0] if x.shape.rank == 4 and x.shape[-1] == 1 else x

def _avg_pool2(x: tf.Tensor) -> tf.Tensor:
    """2x2 average pooling, stride 2, odd sizes floored; rank 3 or 4, static spatial size."""
    h, w = int(x.shape[1]) // 2, int(x.shape[2]) // 2
    x = x[:, : 2 * h, : 2 * w]
    tail = list(x.shape[3:])
    x = tf.reshape(x, [-1, h, 2, w, 2] + tail)
    return tf.reduce_mean(x, axis=[2, 4])


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur_norm(n: int, k: np.ndarray) -> np.ndarray:
    """``(n,)`` sum of the kernel taps that fall inside a signal of length ``n`` (the blurred
    indicator; also right when ``n`` is shorter than the kernel)."""
    r = (len(k) - 1) // 2
    return np.convolve(np.ones(n), k, mode="full")[r : r + n]


def _blur(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur (radius ``ceil(2 sigma)``) as a normalised convolution: zero
    padding, then division by the blurred indicator of the image, so that borders are averages
    of the pixels inside (a constant image stays constant). Rank 3 or 4, static spatial size."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma)
    r = (len(k) - 1) // 2
    h, w = int(x.shape[1]), int(x.shape[2])
    norm_x = _blur_norm(w, k)
    norm_y = _blur_norm(h, k)
    tail = [[0, 0]] * (x.shape.rank - 3)
    extra = (1,) * (x.shape.rank - 3)

    def along(x, axis, size, norm):
        pad = [[0, 0], [0, 0], [0, 0]] + tail
        pad[axis] = [r, r]
        p = tf.pad(x, pad)
        out = 0.0
        for i, weight in enumerate(k):
            sl = [slice(None)] * x.shape.rank
            sl[axis] = slice(i, i + size)
            out = out + float(weight) * p[tuple(sl)]
        shape = [1, 1, 1] + list(extra)
        shape[axis] = size
        return out * tf.constant((1.0 / norm).reshape(shape), x.dtype)

    return along(along(x, 2, w, norm_x), 1, h, norm_y)


def _to_grey(x: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, 3)`` -> ``(B, H, W)`` luma."""
    return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]

def _host_images(x) -> Optional[np.ndarray]:
    """``x`` as a float32/float64 NumPy array of rank 4 with a static size, or None (then the
    caller takes the TensorFlow path, which validates and raises the errors)."""
    if isinstance(x, tf.Tensor):
        if not hasattr(x, "numpy"):
            return None
        x = x.numpy()
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything odd goes to the validating path
        return None
    if a.dtype not in (np.float32, np.float64) or a.ndim != 4 or min(a.shape) < 1:
        return None
    return a


def _host_grey(x: np.ndarray) -> np.ndarray:
    """``(B, H, W, 3)`` -> ``(B, H, W)`` luma (`_LUMA`), one `cv2.transform` pass."""
    import cv2

    b, h, w, _ = x.shape
    m = np.array([_LUMA], dtype=x.dtype)
    return cv2.transform(np.ascontiguousarray(x).reshape(b * h, w, 3), m).reshape(b, h, w)


def _host_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling of ``(B, H, W)``, odd sizes floored (as `_avg_pool2`)."""
    h, w = x.shape[1] // 2, x.shape[2] // 2
    x = x[:, : 2 * h, : 2 * w]
    quarter = x.dtype.type(0.25)
    return ((x[:, 0::2, 0::2] + x[:, 0::2, 1::2]) + (x[:, 1::2, 0::2] + x[:, 1::2, 1::2])) * quarter


def _host_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """`_blur` of ``(B, H, W)``: separable Gaussian, zero padding, divided by the blurred
    indicator."""
    if sigma <= 0:
        return x
    import cv2

    k = _gaussian_kernel(sigma)
    h, w = x.shape[1], x.shape[2]
    inv_norm = (1.0 / np.outer(_blur_norm(h, k), _blur_norm(w, k))).astype(x.dtype)
    k = k.astype(x.dtype)
    out = np.stack([cv2.sepFilter2D(im, -1, k, k, borderType=cv2.BORDER_CONSTANT) for im in x])
    return out * inv_norm


def _host_pyramid(images: np.ndarray, levels: int, grayscale: bool, sigmas: tuple) -> list:
    """`_preprocess` on the host for one-channel results: list of ``(B, h, w, 1)`` tensors,
    coarsest first."""
    x = _host_grey(images) if grayscale and images.shape[-1] == 3 else images[..., 0]
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(_host_pool2(pyramid[-1]))
    return [tf.convert_to_tensor(np.ascontiguousarray(_host_blur(p, s))[..., None])
            for p, s in zip(pyramid[::-1], sigmas)]

def _preprocess(images: tf.Tensor, levels: int, grayscale: bool, sigma: float) -> list:
    """Grey conversion (3 channels), 2x2 average pyramid (coarsest first) and blur per level."""
    if grayscale and images.shape.rank == 4 and images.shape[-1] == 3:
        images = _to_grey(images)
    pyramid = [_squeeze_channel(images)]
    for _ in range(levels - 1):
        pyramid.append(_avg_pool2(pyramid[-1]))
    return [_blur(x, s) for x, s in zip(pyramid[::-1], sigma)]


def _features(name: str, x) -> tf.Tensor:
    """A floating ``(B, H, W, C)`` tensor with ``H, W >= 2`` and ``C >= 1``, else ValueError.

    Half precision (``float16``, ``bfloat16``, e.g. features of a model under a Keras
    ``mixed_float16`` policy) is cast to float32: warps, errors and the LK solve never run in
    half precision."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"`{name}` must be a floating tensor (float32 or float64), got dtype "
                         f"{x.dtype.name}")
    if x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    check_shape(name, x, (None, None, None, None), "B x H x W x C")
    for axis, what, least in ((1, "height", 2), (2, "width", 2), (3, "channel count", 1)):
        d = x.shape[axis]
        if d is not None and d < least:
            raise ValueError(f"`{name}` must have a {what} of at least {least}, got shape "
                             f"{tuple(x.shape)}")
    return x


def check_pyramid_doubles(name: str, pyramid: Sequence) -> None:
    """Raise ValueError (naming `name`) unless each level of `pyramid` (coarsest first) is twice
    the height and width of the previous one (``2 n`` or ``2 n + 1``, as `build_pyramid` makes
    them); unknown (None) sizes pass."""
    for k in range(len(pyramid) - 1):
        for axis in (1, 2):
            small, big = pyramid[k].shape[axis], pyramid[k + 1].shape[axis]
            if small is not None and big is not None and big not in (2 * small, 2 * small + 1):
                raise ValueError(
                    f"`{name}` levels must double in size (coarsest first): level {k} has "
                    f"shape {tuple(pyramid[k].shape)}, level {k + 1} has "
                    f"{tuple(pyramid[k + 1].shape)}"
                )


def build_pyramid(images, levels: int) -> list:
    """Image / feature pyramid by repeated 2x2 average pooling (stride 2, odd sizes floored).

    Args:
        images: ``(B, H, W, C)`` floating images or feature maps (static ``H``, ``W``).
        levels: number of levels (>= 1); the coarsest is ``2^(levels-1)`` times smaller.

    Returns:
        list of ``levels`` tensors, **coarsest first**, the last one `images` itself. Pixel
        coordinates of consecutive levels are related by ``x_coarse = (x_fine + 0.5) / 2 - 0.5``
        (``scale_homography(H, 0.5, half_pixel_centers=True)``).

    Raises:
        ValueError: bad rank or dtype, or an image too small for the requested levels.
    """
    images = _features("images", images)
    levels = check_positive_int("levels", levels)
    for axis in (1, 2):
        d = images.shape[axis]
        if d is None:
            raise ValueError(f"`images` must have a static height and width, got "
                             f"{tuple(images.shape)}")
        if d // 2 ** (levels - 1) < 1:
            raise ValueError(
                f"`images` of shape {tuple(images.shape)} is too small for {levels} levels"
            )
    pyramid = [images]
    for _ in range(levels - 1):
        pyramid.append(_avg_pool2(pyramid[-1]))
    return pyramid[::-1]


def to_greyscale(images) -> tf.Tensor:
    """``(B, H, W, 3)`` RGB -> ``(B, H, W, 1)`` luma (ITU-R 601, as `tf.image.rgb_to_grayscale`);
    one-channel images are returned unchanged."""
    images = _features("images", images)
    c = images.shape[-1]
    if c == 1:
        return images
    if c != 3:
        raise ValueError(f"`images` must have 1 or 3 channels, got shape {tuple(images.shape)}")
    return _to_grey(images)[..., None]


def gaussian_blur(images, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur, radius ``ceil(2 sigma)``, as a normalised convolution (zero
    padding divided by the blurred indicator: border pixels are weighted averages of the pixels
    inside, a constant image stays constant); ``sigma <= 0`` returns `images`.

    Args:
        images: ``(B, H, W, C)`` floating images (static ``H``, ``W``).
        sigma: standard deviation in pixels.

    Returns:
        Blurred images, same shape and dtype.
    """
    images = _features("images", images)
    if not np.isfinite(sigma):
        raise ValueError(f"`sigma` must be finite, got {sigma!r}")
    if images.shape[1] is None or images.shape[2] is None:
        raise ValueError(f"`images` must have a static height and width, got "
                         f"{tuple(images.shape)}")
    return _blur(images, float(sigma))
