"""Batched inverse-compositional Lucas-Kanade for 8-parameter homographies on feature maps.

The aligner estimates ``input_H_template`` (template pixel coordinates -> input pixel
coordinates, the library's one direction) such that ``warp_image(input, H, template_size)``
reproduces the template. It works on any number of channels (grey intensities, RGB, the 64-channel
or the 1-channel "special" DLKFM feature maps), is vectorised over the batch (no Python loop over
samples), runs in one ``tf.while_loop`` per pyramid level and is differentiable with respect to
both feature maps and the initial homography (DLKFM trains its feature extractor through it).

Method (Baker & Matthews, "Lucas-Kanade 20 years on", inverse compositional algorithm, with the
parametrisation of the DLKFM code):

- Warp increment ``W(dp) = I + reshape([dp, 0], (3, 3))``, ``dp`` in R^8, Jacobian rows
  ``[x, y, 1, 0, 0, 0, -x^2, -x*y]`` and ``[0, 0, 0, x, y, 1, -x*y, -y^2]`` at ``dp = 0``.
- Everything that depends only on the template is computed once per level: gradients (central
  differences, one-sided at the border, so that a constant template has exactly zero gradient),
  the Gauss-Newton Hessian and its damped inverse. The Jacobian entries are monomials of the
  template coordinates, so the Hessian and the steepest-descent vector are *moments* of small
  per-pixel fields (structure tensor, ``e * grad T``) computed with two separable contractions;
  the steepest-descent images are never materialised.
- Each iteration reduces ``b = sum SD^T e`` from the masked error
  ``e = mask * (I(W(x; H)) - T(x))``, solves ``dp`` in float64, updates
  ``H <- H (I + dp)^-1`` (closed-form adjugate, renormalised so ``H[2, 2] == 1``) and warps the
  input once for the new estimate (bilinear, zero outside: the values and validity mask of
  `deeplk.warp.warp_image`, reimplemented as four flat gathers, see `_Input`); the new error is
  carried by the loop to the next iteration, so that XLA computes it once.

Update rules (``algorithm``):

- ``"inverse_compositional"`` (default of `lucas_kanade` and `pyramid_lucas_kanade`): the above;
  the Hessian is the template's, computed once.
- ``"esm"`` (efficient second-order minimisation, Benhimane & Malis 2004): the steepest-descent
  images use the mean of the template's gradient and the gradient of the warped input (central
  differences of ``I(W(x; H))`` on the template grid; pixels at the edge of the valid area are
  left out), so the Hessian and ``b`` are recomputed at every iteration (moments of degree 4 of
  three fields, about twice the cost of an inverse-compositional iteration) and the same
  composition ``H <- H (I + dp)^-1`` applies. Its basin is much wider: on 560 MSCOCO-protocol
  pairs from the centred guess (``bench/lk_vs_ecc.py``) 3-level LK goes from 80 % to 95 % under
  1 px.
- Coarse motion stages (``coarse_motions`` of the pyramid): a few iterations with a translation
  (or affine) increment at the coarsest level before the full homography (the other parameters
  of ``dp`` are held at 0 by restricting the damped Hessian). `align_images` (the ``lk`` method)
  uses 5 translation iterations, ESM at the coarse levels and the inverse-compositional update at
  the finest: 97 % under 1 px on those pairs.

Design choices (parameters in `lucas_kanade`):

- **Normalised frame.** The iterations run in a normalised template frame
  ``x_n = (x - cx) / s``, ``y_n = (y - cy) / s``, ``(cx, cy)`` the template centre and ``s`` half
  the larger side minus one, so ``x_n, y_n`` lie in ``[-1, 1]`` and the eight parameters have
  comparable scales (well-conditioned Hessian). ``H`` is converted in and out
  (``input_H_template_n = input_H_template @ N^-1``) and kept in float64 inside the loop; the
  8 x 8 systems are solved in float64.
- **Masking.** Template pixels whose warped input sample is invalid (outside the input) get a
  zero error and so contribute nothing to ``b``. By default the Hessian is the template's full
  Hessian, computed once (the standard inverse-compositional algorithm): one warp and one
  reduction per iteration; the fixed point (``b == 0``) is the same, only the step is shorter
  while part of the template falls outside the input. ``masked_hessian=True`` recomputes the
  Hessian over the valid pixels at every iteration (exact Gauss-Newton step; one more moment
  reduction per iteration).
- **Damping.** Levenberg-Marquardt style Tikhonov term scaled to the Hessian:
  ``(Hessian + damping * trace(Hessian) / 8 * I) dp = b``. The relative scale makes `damping`
  independent of the feature magnitude and template size; it bounds the condition number of the
  solved system by about ``(1 + damping) / damping`` and does not move the fixed point.
  ``adaptive_damping=True`` turns it into a Levenberg-Marquardt loop: a step that increases the
  mean squared error is rejected (the sample stays and retries with 10x the damping; accepted
  steps divide it by 10, down to `damping`). Off by default (plain Gauss-Newton, as in the
  paper).
- **Failure** (``failed`` is set, H is returned equal to the initial guess of that level, the
  sample stops): the template is textureless or degenerate (non-finite values; mean squared
  gradient below ``1e-10`` times the mean squared value; or estimated reciprocal condition number
  (1-norm) of the undamped Hessian below `min_rcond`, e.g. a constant template or stripes in one
  direction); or, during the iterations, an update is non-finite or fewer than
  `min_valid_fraction` of the template's pixels sample inside the input (the estimate left the
  image). No NaN leaves the functions unless the initial homography itself is not finite.
- **Convergence** without the ground truth: a sample is frozen once its update moves its four
  template corners (in the input frame, pixels of the current level) by less than `tolerance`
  (maximum over the corners), or after `max_iterations`; the loop ends when every sample is
  frozen. The last (small) update is applied.

Compilation: called eagerly, the public functions run a cached `tf.function` (with XLA by
default, ``jit_compile=True``: about 5x faster than plain graph mode on a 2-core CPU, see
``bench/lk_speed.py``; the first call per input shape compiles, ~5-10 s); tolerance and damping
are passed as tensors, so changing them does not retrace. Called inside a `tf.function` or a
Keras model, the loop is built inline in the caller's graph (and the caller decides on XLA).
In a batch, every level runs until its last sample stops, so samples that do not converge cost
the full iteration cap of each level: the caps, not the typical sample, set the run time. No warp
is computed after a level's last iteration. `align_images` called eagerly builds the grey
pyramids on the host with OpenCV (``preprocess_on_host``): inside the program those passes over
the RGB images took over a third of its time (XLA re-read the RGB input in several fusions). On
560 MSCOCO-protocol pairs in batches of 64, this and the skipped last warps brought the CPU time
from ~3.5 to ~2.2 ms per pair with identical accuracy (``bench/lk_vs_ecc.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_positive_int, check_shape
from deeplk.geometry import centred_homography, scale_homography, transform_points

__all__ = [
    "LKResult",
    "lucas_kanade",
    "pyramid_lucas_kanade",
    "build_pyramid",
    "check_pyramid_doubles",
    "to_grayscale",
    "gaussian_blur",
    "align_images",
    "LucasKanadeLayer",
]

#: A template whose mean squared gradient is below this fraction of its mean squared value is
#: treated as textureless (scale-invariant; a constant template has exactly zero gradient).
_MIN_RELATIVE_TEXTURE = 1e-10

#: Luma weights (ITU-R 601), as `tf.image.rgb_to_grayscale`.
_LUMA = (0.2989, 0.5870, 0.1140)


class LKResult(NamedTuple):
    """Result of `lucas_kanade`, `pyramid_lucas_kanade` and `align_images`.

    Attributes:
        H: ``(B, 3, 3)`` estimated ``input_H_template`` (template pixels -> input pixels, full
            resolution for the pyramid), ``H[..., 2, 2] == 1``, dtype of the features.
        iterations: ``(B,)`` int32, updates computed per sample (summed over pyramid levels).
        converged: ``(B,)`` bool, the last update moved the corners by less than `tolerance`
            (at the finest level for the pyramid).
        failed: ``(B,)`` bool, textureless template, non-finite update or estimate outside the
            input (at any level for the pyramid); ``H`` is then the initial guess of the level
            that failed.
        history: ``(T, B, 3, 3)`` the estimate before the first and after every iteration, at full
            resolution (stopped samples repeat their final value), or ``None`` if not requested.
            For the pyramid the levels' histories are concatenated, coarsest first, each starting
            with its initial guess.
    """

    H: tf.Tensor
    iterations: tf.Tensor
    converged: tf.Tensor
    failed: tf.Tensor
    history: Optional[tf.Tensor] = None


class _Config(NamedTuple):
    """Static (trace-time) settings; hashable, part of the `tf.function` cache key."""

    max_iterations: tuple  # one per level, coarsest first
    masked_hessian: bool
    adaptive: bool
    min_rcond: float
    min_valid_fraction: float
    half_pixel_centers: bool
    return_history: bool
    template_shapes: tuple = ()  # (h, w, C) per level, static even if a trace generalises
    preprocess: tuple = ()  # (levels, grayscale, blur_sigma) for `align_images`, else ()
    algorithms: tuple = ()  # "inverse_compositional" or "esm", one per level
    input_shapes: tuple = ()  # (H, W[, C]) per level as handed to the core
    preprocess_template_shape: tuple = ()  # (h, w[, C]) of the template before preprocessing
    coarse_motions: tuple = ()  # ((motion, max_iterations), ...) before the coarsest level


# --------------------------------------------------------------------------------------------
# Constant grids and moment tables (NumPy, float64, built at trace time)
# --------------------------------------------------------------------------------------------

# The warp Jacobian entries are signed monomials x^a y^b of the normalised template coordinates:
# dW_x/dp = [x, y, 1, 0, 0, 0, -x^2, -x*y], dW_y/dp = [0, 0, 0, x, y, 1, -x*y, -y^2].
# Entries are (a, b, sign), or None for 0.
_JX = [(1, 0, 1), (0, 1, 1), (0, 0, 1), None, None, None, (2, 0, -1), (1, 1, -1)]
_JY = [None, None, None, (1, 0, 1), (0, 1, 1), (0, 0, 1), (1, 1, -1), (0, 2, -1)]


def _frame(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, N_inv)``: N maps template pixels to the normalised frame ``(p - centre) / s``."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    s = max(w - 1, h - 1, 1) / 2.0
    N = np.array([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1]], dtype=np.float64)
    N_inv = np.array([[s, 0, cx], [0, s, cy], [0, 0, 1]], dtype=np.float64)
    return N, N_inv


def _powers(h: int, w: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X (w, degree+1), Y (h, degree+1))``: powers 0..degree of the normalised columns / rows."""
    N, _ = _frame(h, w)
    xn = N[0, 0] * np.arange(w) + N[0, 2]
    yn = N[1, 1] * np.arange(h) + N[1, 2]
    e = np.arange(degree + 1)
    return xn[:, None] ** e, yn[:, None] ** e


def _gradient_selector() -> np.ndarray:
    """``(18, 8)``: ``b = [M(ex), M(ey)] @ S`` where ``M(f)[b*3 + a] = sum f x^a y^b`` are the
    moments of degree <= 2 of a template-shaped field."""
    S = np.zeros((2, 9, 8))
    for k in range(8):
        for t, table in enumerate((_JX, _JY)):
            if table[k] is not None:
                a, b, sign = table[k]
                S[t, b * 3 + a, k] += sign
    return S.reshape(18, 8)


def _hessian_selector() -> np.ndarray:
    """``(75, 64)``: ``vec(Hessian) = [M(Axx), M(Axy), M(Ayy)] @ S`` with the moments of degree
    <= 4 (``M(f)[b*5 + a] = sum f x^a y^b``) of the channel-summed structure tensor ``A``."""
    S = np.zeros((3, 25, 64))
    for k in range(8):
        for l in range(8):
            terms = ((0, _JX[k], _JX[l]), (1, _JX[k], _JY[l]), (1, _JY[k], _JX[l]),
                     (2, _JY[k], _JY[l]))
            for t, u, v in terms:
                if u is not None and v is not None:
                    S[t, (u[1] + v[1]) * 5 + u[0] + v[0], k * 8 + l] += u[2] * v[2]
    return S.reshape(75, 64)


def _moments(fields: tf.Tensor, X: tf.Tensor, Y: tf.Tensor) -> tf.Tensor:
    """Moments ``sum_ij f_ij y_i^b x_j^a`` of template-shaped fields ``(B, K, h, w)`` with powers
    ``X (w, P)``, ``Y (h, Q)``; returns ``(B, K * Q * P)`` ordered ``[k, b, a]``. Separable: two
    small contractions instead of a per-pixel Jacobian."""
    rows = tf.einsum("bkhw,wp->bkhp", fields, X)
    m = tf.einsum("bkhp,hq->bkqp", rows, Y)
    return tf.reshape(m, [-1, int(fields.shape[1]) * int(X.shape[1]) * int(Y.shape[1])])


# --------------------------------------------------------------------------------------------
# Small TF helpers (internal tensors are (B, H, W) for one channel, (B, H, W, C) otherwise:
# XLA on CPU is markedly slower on a trailing axis of size 1)
# --------------------------------------------------------------------------------------------


def _squeeze_channel(x: tf.Tensor) -> tf.Tensor:
    return x[..., 0] if x.shape.rank == 4 and x.shape[-1] == 1 else x


def _channel_sum(x: tf.Tensor, c: int) -> tf.Tensor:
    return x if c == 1 else tf.reduce_sum(x, axis=-1)


def _safe_normalize(H: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(H / H[2, 2], ok)``; where ``|H[2, 2]|`` is tiny, H is left as is and ``ok`` is False."""
    d = H[..., 2:3, 2:3]
    ok = tf.abs(d) > np.finfo(H.dtype.as_numpy_dtype).tiny * 1e6
    return H / tf.where(ok, d, tf.ones_like(d)), ok[..., 0, 0]


def _adjugate3(A: tf.Tensor) -> tf.Tensor:
    """Adjugate of ``(B, 3, 3)`` matrices (``det(A) * A^-1``): polynomial, never raises."""
    a0, a1, a2 = A[:, 0], A[:, 1], A[:, 2]
    cols = [tf.linalg.cross(a1, a2), tf.linalg.cross(a2, a0), tf.linalg.cross(a0, a1)]
    return tf.stack(cols, axis=-1)


def _all_finite(x: tf.Tensor, axes) -> tf.Tensor:
    return tf.reduce_all(tf.math.is_finite(x), axis=axes)


def _template_gradients(T: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Central differences in pixel units, one-sided at the border: ``(gx, gy)`` like ``T``
    (axes 1 and 2 are rows and columns).

    Written as ``c1 * (next - previous) + c2 * T`` on a zero-padded copy (``c1`` = 1/2 inside,
    1 at the border; ``c2`` = -1 / +1 at the first / last pixel, 0 inside), which gives exactly
    the values of the one-sided and central differences: XLA on CPU fuses a pad into the
    consumers, whereas a concatenation of the border columns was left unfused (~10 % of the
    aligner's time)."""
    tail = [[0, 0]] * (T.shape.rank - 3)

    def along(axis):
        n = int(T.shape[axis])
        pad = [[0, 0], [0, 0], [0, 0]] + tail
        pad[axis] = [1, 1]
        p = tf.pad(T, pad)
        hi = [slice(None)] * T.shape.rank
        lo = [slice(None)] * T.shape.rank
        hi[axis], lo[axis] = slice(2, None), slice(None, -2)
        c1 = np.full(n, 0.5)
        c1[[0, -1]] = 1.0
        c2 = np.zeros(n)
        c2[0], c2[-1] = -1.0, 1.0
        shape = [1] * T.shape.rank
        shape[axis] = n
        c1 = tf.constant(c1.reshape(shape), T.dtype)
        c2 = tf.constant(c2.reshape(shape), T.dtype)
        return c1 * (p[tuple(hi)] - p[tuple(lo)]) + c2 * T

    return along(2), along(1)


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


def _to_gray(x: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, 3)`` -> ``(B, H, W)`` luma."""
    return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]


# Host preprocessing of `align_images` (eager calls): the same grey conversion, 2x2 average
# pyramid and normalised Gaussian blur as `_preprocess`, on NumPy arrays with OpenCV. Inside the
# compiled program these few passes over the RGB images cost ~0.4 ms per pair (XLA re-reads the
# RGB input in several fusions); here ~0.15 ms, and only the grey pyramids are copied to
# TensorFlow. Equal to `_preprocess` up to float rounding (tested).


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


def _host_gray(x: np.ndarray) -> np.ndarray:
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
    x = _host_gray(images) if grayscale and images.shape[-1] == 3 else images[..., 0]
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(_host_pool2(pyramid[-1]))
    return [tf.convert_to_tensor(np.ascontiguousarray(_host_blur(p, s))[..., None])
            for p, s in zip(pyramid[::-1], sigmas)]


# --------------------------------------------------------------------------------------------
# One level
# --------------------------------------------------------------------------------------------


class _Template:
    """Everything that depends only on the template (one pyramid level)."""

    def __init__(self, T: tf.Tensor, min_rcond: float):
        dtype = T.dtype
        T = _squeeze_channel(T)
        h, w = int(T.shape[1]), int(T.shape[2])
        c = 1 if T.shape.rank == 3 else int(T.shape[3])
        self.h, self.w, self.c, self.n = h, w, c, h * w
        self.T = T
        axes = list(range(1, T.shape.rank))
        N, N_inv = _frame(h, w)
        self.N = tf.constant(N, tf.float64)
        self.N_inv = tf.constant(N_inv, tf.float64)
        # Normalised corners (TL, TR, BR, BL) for the convergence test.
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
        self.corners_n = tf.constant(corners * N[0, 0] + N[:2, 2], tf.float64)
        # Template pixel coordinates, broadcastable to (B, h, w).
        self.xs = tf.constant(np.arange(w)[None, None, :], dtype)
        self.ys = tf.constant(np.arange(h)[None, :, None], dtype)
        X, Y = _powers(h, w, 4)
        self.X4, self.Y4 = tf.constant(X, dtype), tf.constant(Y, dtype)
        self.X2, self.Y2 = tf.constant(X[:, :3], dtype), tf.constant(Y[:, :3], dtype)
        self.S_b = tf.constant(_gradient_selector(), tf.float64)
        self.S_h = tf.constant(_hessian_selector(), tf.float64)

        s = N_inv[0, 0]
        self.scale = float(s)
        gx, gy = _template_gradients(T)
        # Gradients with respect to the normalised coordinates.
        self.gx, self.gy = gx * s, gy * s
        # Channel-summed structure tensor, (B, 3, h, w).
        self.structure = tf.stack(
            [_channel_sum(self.gx * self.gx, c), _channel_sum(self.gx * self.gy, c),
             _channel_sum(self.gy * self.gy, c)],
            axis=1,
        )
        moments = tf.cast(_moments(self.structure, self.X4, self.Y4), tf.float64)  # (B, 75)
        self.hessian_full = tf.reshape(tf.matmul(moments, self.S_h), [-1, 8, 8])

        # Texture / conditioning test on the undamped, unmasked Hessian (no gradient needed).
        hs = tf.stop_gradient(self.hessian_full)
        grad_energy = tf.stop_gradient(moments[:, 0] + moments[:, 50]) / (s * s)
        value_energy = tf.cast(tf.stop_gradient(tf.reduce_sum(tf.square(T), axis=axes)),
                               tf.float64)
        trace = tf.linalg.trace(hs)
        finite = (_all_finite(hs, [1, 2]) & tf.math.is_finite(value_energy)
                  & tf.math.is_finite(grad_energy))
        textured = grad_energy > _MIN_RELATIVE_TEXTURE * value_energy
        usable = finite & textured & (trace > 0)
        eye = tf.eye(8, dtype=tf.float64)[None]
        # 1-norm reciprocal condition number of H + 1e-12 * trace / 8 * I (the ridge keeps an
        # exactly singular Hessian invertible: its estimate is then about 1e-12).
        ridge = tf.where(usable, 1e-12 * trace / 8.0, tf.ones_like(trace))[:, None, None]
        hr = tf.where(usable[:, None, None], hs, eye) + ridge * eye
        norm1 = tf.reduce_max(tf.reduce_sum(tf.abs(hr), axis=1), axis=-1)
        inv_norm1 = tf.reduce_max(tf.reduce_sum(tf.abs(tf.linalg.inv(hr)), axis=1), axis=-1)
        rcond = 1.0 / (norm1 * inv_norm1)
        self.ok = usable & (rcond > min_rcond)

    def hessian(self, mask: tf.Tensor) -> tf.Tensor:
        """``(B, 8, 8)`` float64 Gauss-Newton Hessian over the pixels where ``mask`` ``(B, h, w)``
        is 1."""
        st = self.structure * mask[:, None]
        m = tf.cast(_moments(st, self.X4, self.Y4), tf.float64)
        return tf.reshape(tf.matmul(m, self.S_h), [-1, 8, 8])

    def gradient(self, ex: tf.Tensor, ey: tf.Tensor) -> tf.Tensor:
        """``b = sum_pixels J^T (ex, ey)`` ``(B, 8)`` float64 for ``ex, ey`` ``(B, h, w)``."""
        # Two contractions rather than one on stack([ex, ey]), which XLA on CPU materialised
        # markedly slower.
        mx = _moments(ex[:, None], self.X2, self.Y2)
        my = _moments(ey[:, None], self.X2, self.Y2)
        m = tf.cast(tf.concat([mx, my], axis=1), tf.float64)
        return tf.matmul(m, self.S_b)

    @staticmethod
    def damped_inverse(hessian: tf.Tensor, ok: tf.Tensor, lam, free=None) -> tf.Tensor:
        """``(Hessian + lam * trace / n * I)^-1`` (``lam`` scalar or ``(B,)``); the identity where
        ``ok`` is False (never raises). With ``free`` (8 flags, a motion model), the inverse of
        the Hessian restricted to the free parameters, zero in the rows and columns of the
        others (so ``dp`` leaves them at 0)."""
        eye = tf.eye(8, dtype=tf.float64)[None]
        lam = tf.reshape(tf.cast(lam, tf.float64), [-1, 1, 1])
        n = 8.0
        if free is not None:
            P = tf.constant(np.outer(free, free), tf.float64)[None]
            hessian = hessian * P
            n = float(np.sum(free))
        scale = tf.linalg.trace(hessian)[:, None, None] / n
        damped = hessian + lam * scale * eye
        inv = tf.linalg.inv(tf.where(ok[:, None, None], damped, eye))
        return inv if free is None else inv * P


def _esm_system(tmpl: "_Template", error: tf.Tensor, mask: tf.Tensor):
    """Gauss-Newton system of the ESM update (Benhimane & Malis 2004): the steepest-descent images
    use the mean of the template's gradient and the gradient of the warped input (central
    differences of the warped input on the template grid, i.e. the gradient of ``I(W(x))``);
    pixels next to the edge of the valid area are left out. Returns ``(Hessian (B, 8, 8),
    b (B, 8))`` float64 for the masked error ``(B, h, w[, C])`` and mask ``(B, h, w)``."""
    m = mask if tmpl.c == 1 else mask[..., None]
    warped = error + tmpl.T * m
    gwx, gwy = _template_gradients(warped)
    dmx, dmy = _template_gradients(mask)
    mg = mask * tf.cast(tf.equal(dmx, 0.0) & tf.equal(dmy, 0.0), mask.dtype)
    mgc = mg if tmpl.c == 1 else mg[..., None]
    gx = 0.5 * (tmpl.gx + tmpl.scale * gwx) * mgc
    gy = 0.5 * (tmpl.gy + tmpl.scale * gwy) * mgc
    st = tf.stack([_channel_sum(gx * gx, tmpl.c), _channel_sum(gx * gy, tmpl.c),
                   _channel_sum(gy * gy, tmpl.c)], axis=1)
    mom = tf.cast(_moments(st, tmpl.X4, tmpl.Y4), tf.float64)
    hess = tf.reshape(tf.matmul(mom, tmpl.S_h), [-1, 8, 8])
    b = tmpl.gradient(_channel_sum(error * gx, tmpl.c), _channel_sum(error * gy, tmpl.c))
    return hess, b


#: Free parameters of the increment ``W(dp) = I + [[p0, p1, p2], [p3, p4, p5], [p6, p7, 0]]``
#: (normalised template frame) of the motion models of the coarse stages.
_MOTIONS = {
    "translation": (0, 0, 1, 0, 0, 1, 0, 0),
    "affine": (1, 1, 1, 1, 1, 1, 0, 0),
}

#: Update rules of `lucas_kanade` (``algorithm``).
_ALGORITHMS = ("inverse_compositional", "esm")


class _Plan(NamedTuple):
    """Where to sample: flat index of the top-left of the 2x2 block read, offsets, mask."""

    index: tf.Tensor  # (B, h, w) int32
    fx: tf.Tensor  # (B, h, w) x minus the block's left column, in [-1, 2]
    fy: tf.Tensor  # (B, h, w) y minus the block's top row, in [-1, 2]
    mask: tf.Tensor  # (B, h, w), 1 where valid


def _tent(f: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Bilinear weights of the two columns ``0`` and ``1`` of a block for a position ``f`` in
    ``[-1, 2]`` relative to column 0 (zero for a column farther than one pixel). For ``f`` in
    ``[0, 1]`` they are ``(1 - f, f)``, with the usual derivatives."""
    w0 = tf.where(f < 0, 1.0 + f, tf.where(f > 1, tf.zeros_like(f), 1.0 - f))
    w1 = tf.where(f < 0, tf.zeros_like(f), tf.where(f > 1, 2.0 - f, f))
    return w0, w1


class _Input:
    """The input feature map prepared for fast bilinear sampling in the iterations.

    Same values and validity mask as `deeplk.warp.warp_image` (bilinear, zero outside, valid where
    ``0 <= x <= W-1`` and ``0 <= y <= H-1``; checked by the tests), organised for the loop: the
    map is only flattened over batch and pixels (no copy), every sample reads one 2x2 block that
    lies inside its own image (the block's top-left corner is clamped to ``[0, W-2] x [0, H-2]``)
    and the bilinear weights of the block's pixels vanish for pixels farther than one pixel from
    the position, which gives zero padding without padding. Four plain gathers per sample (scalar
    ones for one channel), no bounds checks. Indices are int32: ``B * H * W`` must stay below
    2^31.
    """

    def __init__(self, images: tf.Tensor):
        images = _squeeze_channel(images)
        self.dtype = images.dtype
        self.c = 1 if images.shape.rank == 3 else int(images.shape[3])
        shape = tf.shape(images)
        self.height, self.width = shape[1], shape[2]
        self.h_max = tf.cast(self.height - 1, self.dtype)
        self.w_max = tf.cast(self.width - 1, self.dtype)
        self.row = self.width
        self.plane = self.height * self.width
        self.flat = tf.reshape(images, [-1] if self.c == 1 else [-1, self.c])

    def plan(self, x: tf.Tensor, y: tf.Tensor) -> _Plan:
        """The sampling plan for positions ``x``, ``y`` ``(B, h, w)`` (input pixels)."""
        mask = (x >= 0) & (x <= self.w_max) & (y >= 0) & (y <= self.h_max)
        # Positions with no inside neighbour (and non-finite ones) get zero weights.
        near = (x > -1) & (x < self.w_max + 1) & (y > -1) & (y < self.h_max + 1)
        minus_one = tf.constant(-1.0, self.dtype)
        x = tf.where(near, x, minus_one)
        y = tf.where(near, y, minus_one)
        # floor has no gradient: d/dx flows through the offsets.
        x0 = tf.clip_by_value(tf.floor(x), 0.0, self.w_max - 1.0)
        y0 = tf.clip_by_value(tf.floor(y), 0.0, self.h_max - 1.0)
        offset = tf.range(tf.shape(x)[0]) * self.plane
        index = (tf.cast(y0, tf.int32) * self.row + tf.cast(x0, tf.int32)
                 + offset[:, None, None])
        return _Plan(index, x - x0, y - y0, tf.cast(mask, self.dtype))

    def gather(self, plan: _Plan) -> tf.Tensor:
        """Bilinear values ``(B, h, w)`` (one channel) or ``(B, h, w, C)`` following `plan`."""
        index = plan.index
        v00 = tf.gather(self.flat, index)
        v10 = tf.gather(self.flat, index + 1)
        v01 = tf.gather(self.flat, index + self.row)
        v11 = tf.gather(self.flat, index + (self.row + 1))
        ax0, ax1 = _tent(plan.fx)
        ay0, ay1 = _tent(plan.fy)
        if self.c != 1:
            ax0, ax1, ay0, ay1 = (a[..., None] for a in (ax0, ax1, ay0, ay1))
        return ay0 * (ax0 * v00 + ax1 * v10) + ay1 * (ax0 * v01 + ax1 * v11)

    def sample(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Values (as `gather`) and mask ``(B, h, w)`` at positions ``x``, ``y`` ``(B, h, w)``."""
        plan = self.plan(x, y)
        return self.gather(plan), plan.mask


def _warp_coordinates(H: tf.Tensor, xs: tf.Tensor, ys: tf.Tensor):
    """Input positions ``(B, h, w)`` of the template pixels (``xs`` ``(1, 1, w)``, ``ys``
    ``(1, h, 1)``) under ``H`` ``(B, 3, 3)`` (same dtype); points sent to infinity are moved
    outside (to -2)."""
    Hb = H[:, :, :, None, None]  # (B, 3, 3, 1, 1)
    u = Hb[:, 0, 0] * xs + Hb[:, 0, 1] * ys + Hb[:, 0, 2]
    v = Hb[:, 1, 0] * xs + Hb[:, 1, 1] * ys + Hb[:, 1, 2]
    s = Hb[:, 2, 0] * xs + Hb[:, 2, 1] * ys + Hb[:, 2, 2]
    s_ok = tf.abs(s) > np.finfo(H.dtype.as_numpy_dtype).tiny
    inv_s = 1.0 / tf.where(s_ok, s, tf.ones_like(s))
    outside = tf.constant(-2.0, H.dtype)
    return tf.where(s_ok, u * inv_s, outside), tf.where(s_ok, v * inv_s, outside)


class _State(NamedTuple):
    """Loop state of `_lk_level` (normalised-frame homographies, float64)."""

    i: tf.Tensor  # iteration counter
    H_acc: tf.Tensor  # (B, 3, 3) last evaluated and accepted estimate
    H_try: tf.Tensor  # (B, 3, 3) estimate to evaluate next (the latest update)
    evaluation: tuple  # (masked error, mask) of H_try
    b_acc: tf.Tensor  # (B, 8) steepest-descent vector at H_acc
    E_acc: tf.Tensor  # (B,) mean squared error at H_acc (adaptive damping only)
    lam: tf.Tensor  # (B,) current relative damping
    hess_acc: tf.Tensor  # (B, 8, 8) masked Hessian at H_acc (masked_hessian only)
    active: tf.Tensor  # (B,) bool
    converged: tf.Tensor  # (B,) bool
    failed: tf.Tensor  # (B,) bool
    iterations: tf.Tensor  # (B,) int32
    history: object  # TensorArray, or a placeholder scalar


def _lk_level(
    images: tf.Tensor,
    tmpl: _Template,
    H0: tf.Tensor,
    max_iterations: int,
    tolerance: tf.Tensor,
    damping: tf.Tensor,
    config: _Config,
    free=None,
    level: int = 0,
):
    """Inverse-compositional LK at one level.

    Args:
        images: ``(B, Hi, Wi)`` or ``(B, Hi, Wi, C)`` input features.
        tmpl: the precomputed template.
        H0: ``(B, 3, 3)`` float64 initial ``input_H_template`` (pixels of this level).

    Returns:
        ``(H (B, 3, 3) float64, iterations, converged, failed, history or None, steps)`` where
        ``history`` is ``(max_iterations + 1, B, 3, 3)`` float64 (rows after ``steps`` repeat the
        final value) and ``steps`` is the number of loop iterations run.
    """
    dtype = images.dtype
    adaptive, masked = config.adaptive, config.masked_hessian
    source = _Input(images)
    batch = tf.shape(H0)[0]
    H0n, ok0 = _safe_normalize(tf.matmul(H0, tmpl.N_inv[None]))
    start_ok = tmpl.ok & ok0 & _all_finite(H0n, [1, 2])
    corners = tf.tile(tmpl.corners_n[None], tf.stack([batch, 1, 1]))
    eye3 = tf.eye(3, dtype=tf.float64)[None]
    zeros_b = tf.zeros(tf.stack([batch, 1]), tf.float64)
    min_count = config.min_valid_fraction * tmpl.n
    esm = config.algorithms[level] == "esm"
    masked = masked or esm  # ESM: a new Hessian at every iteration
    if not (masked or adaptive):
        hessian_inv = tmpl.damped_inverse(tmpl.hessian_full, tmpl.ok, damping, free)

    def to_pixels(Hn):
        return _safe_normalize(tf.matmul(Hn, tmpl.N[None]))[0]

    def evaluate(Hn):
        """Masked error and mask of the estimate ``Hn`` (one warp)."""
        x, y = _warp_coordinates(tf.cast(to_pixels(Hn), dtype), tmpl.xs, tmpl.ys)
        warped, mask = source.sample(x, y)
        error = (warped - tmpl.T) * (mask if tmpl.c == 1 else mask[..., None])
        return error, mask

    def body(st: _State) -> tuple:
        # The trial estimate was warped at the end of the previous iteration (loop-carried, so
        # XLA materialises the error once); here one reduction and the update.
        error, mask = st.evaluation
        count = tf.reduce_sum(mask, axis=[1, 2])
        valid = count >= min_count
        first = tf.equal(st.i, 0)
        active = st.active
        if esm:
            hess, b = _esm_system(tmpl, error, mask)
        else:
            if masked:
                hess = tmpl.hessian(mask)
            ex = _channel_sum(error * tmpl.gx, tmpl.c)  # (B, h, w)
            ey = _channel_sum(error * tmpl.gy, tmpl.c)
            b = tmpl.gradient(ex, ey)  # (B, 8) float64
        if adaptive:
            sse = tf.reduce_sum(tf.square(error), axis=list(range(1, error.shape.rank)))
            E = tf.cast(tf.stop_gradient(sse / (count * tmpl.c + 1e-30)), tf.float64)
            better = (valid & _all_finite(b, [1]) & tf.math.is_finite(E)
                      & (first | (E <= st.E_acc)))
        else:
            E = st.E_acc
            better = valid & _all_finite(b, [1])
        if masked:
            better = better & _all_finite(hess, [1, 2]) & (tf.linalg.trace(hess) > 0)
        # Accept (move the base point) or, adaptive only, reject (stay and damp more).
        take = active & better
        H_acc = tf.where(take[:, None, None], st.H_try, st.H_acc)
        b_acc = tf.where(take[:, None], b, st.b_acc)
        E_acc = tf.where(take, E, st.E_acc)
        hess_acc = st.hess_acc
        if masked:
            hess_acc = tf.where(take[:, None, None], hess, hess_acc)
        lam = st.lam
        if adaptive:
            fail_now = active & ~better & first
            lam = tf.where(take, tf.maximum(lam * 0.1, damping), lam * 10.0)
        else:
            fail_now = active & ~better
        # Next trial from the accepted point.
        if masked or adaptive:
            hess_base = hess_acc if masked else tmpl.hessian_full
            ok = tmpl.ok & _all_finite(hess_base, [1, 2]) & (tf.linalg.trace(hess_base) > 0)
            hinv = tmpl.damped_inverse(hess_base, ok, lam, free)
        else:
            hinv = hessian_inv
        dp = tf.linalg.matvec(hinv, b_acc)
        finite_dp = _all_finite(dp, [1])
        dp = tf.where(finite_dp[:, None], dp, tf.zeros_like(dp))
        W = eye3 + tf.reshape(tf.concat([dp, zeros_b], axis=1), [-1, 3, 3])
        H_next, ok_norm = _safe_normalize(tf.matmul(H_acc, _adjugate3(W)))
        moved = transform_points(H_next, corners) - transform_points(H_acc, corners)
        displacement = tf.reduce_max(tf.norm(tf.stop_gradient(moved), axis=-1), axis=-1)
        step_ok = (finite_dp & ok_norm & _all_finite(H_next, [1, 2])
                   & tf.math.is_finite(displacement))
        fail_now = fail_now | (active & ~step_ok)
        go = active & ~fail_now
        H_try = tf.where(go[:, None, None], H_next, st.H_try)
        done = go & (displacement < tolerance)
        # Failed samples revert to the initial guess.
        H_acc = tf.where(fail_now[:, None, None], H0n, H_acc)
        H_try = tf.where(fail_now[:, None, None], H0n, H_try)
        history = st.history
        if config.return_history:
            history = history.write(st.i + 1, H_try)
        still = go & ~done
        # Warp for the next iteration, unless this was the last one (every sample stopped, or
        # the cap is reached: the loop ends without reading it).
        more = tf.reduce_any(still) & (st.i + 1 < max_iterations)
        evaluation = tf.cond(more, lambda: evaluate(H_try), lambda: st.evaluation)
        new = _State(
            i=st.i + 1, H_acc=H_acc, H_try=H_try, evaluation=evaluation, b_acc=b_acc,
            E_acc=E_acc, lam=lam, hess_acc=hess_acc, active=still,
            converged=st.converged | done, failed=st.failed | fail_now,
            iterations=st.iterations + tf.cast(active, tf.int32), history=history,
        )
        return (new,)

    def cond(st: _State):
        return tf.reduce_any(st.active)

    if config.return_history:
        history = tf.TensorArray(
            tf.float64, size=max_iterations + 1, element_shape=tf.TensorShape([None, 3, 3])
        ).write(0, H0n)
    else:
        history = tf.zeros([], tf.float64)  # placeholder loop variable
    zeros_f = tf.zeros(tf.stack([batch]), tf.float64)
    state = _State(
        i=tf.constant(0),
        H_acc=H0n,
        H_try=H0n,
        evaluation=evaluate(H0n),
        b_acc=tf.zeros(tf.stack([batch, 8]), tf.float64),
        E_acc=zeros_f + np.inf,
        lam=zeros_f + damping,
        hess_acc=(tf.zeros(tf.stack([batch, 8, 8]), tf.float64) if masked
                  else tf.zeros([], tf.float64)),
        active=start_ok,
        converged=tf.zeros(tf.stack([batch]), tf.bool),
        failed=~start_ok,
        iterations=tf.zeros(tf.stack([batch]), tf.int32),
        history=history,
    )
    (st,) = tf.while_loop(cond, body, (state,), maximum_iterations=max_iterations)
    if adaptive:
        # Converged samples end on their last (tiny) step, the others on the best evaluated
        # estimate.
        Hn = tf.where(st.converged[:, None, None], st.H_try, st.H_acc)
    else:
        Hn = st.H_try  # Gauss-Newton: the last update is applied
    history_pix = None
    if config.return_history:
        # Rows from the last iteration on hold the final value (fixed size, for XLA).
        def fill(j, ta):
            return j + 1, ta.write(j, Hn)

        _, history = tf.while_loop(
            lambda j, ta: j < max_iterations + 1, fill, (st.i, st.history),
            maximum_iterations=max_iterations + 1,
        )
        stacked = history.stack()  # (T, B, 3, 3)
        history_pix = tf.reshape(to_pixels(tf.reshape(stacked, [-1, 3, 3])), tf.shape(stacked))
    return to_pixels(Hn), st.iterations, st.converged, st.failed, history_pix, st.i


# --------------------------------------------------------------------------------------------
# Pyramid core (the function that gets compiled)
# --------------------------------------------------------------------------------------------


def _preprocess(images: tf.Tensor, levels: int, grayscale: bool, sigma: float) -> list:
    """Grey conversion (3 channels), 2x2 average pyramid (coarsest first) and blur per level."""
    if grayscale and images.shape.rank == 4 and images.shape[-1] == 3:
        images = _to_gray(images)
    pyramid = [_squeeze_channel(images)]
    for _ in range(levels - 1):
        pyramid.append(_avg_pool2(pyramid[-1]))
    return [_blur(x, s) for x, s in zip(pyramid[::-1], sigma)]


def _pyramid_core(inputs, templates, init_H, tolerance, damping, config: _Config):
    """Coarse-to-fine LK on lists of tensors (coarsest first), or on single images when
    ``config.preprocess`` is set. Returns ``(H, iterations, converged, failed, histories,
    steps)`` (the last two are tuples, one entry per level, empty without history)."""
    # `reduce_retracing` may relax the traced shapes: image sizes and channels are static.
    inputs = [tf.ensure_shape(x, (None,) + shape) for x, shape in zip(inputs, config.input_shapes)]
    if config.preprocess:
        levels, grayscale, sigma = config.preprocess
        templates = [tf.ensure_shape(templates[0], (None,) + config.preprocess_template_shape)]
        with tf.name_scope("preprocess"):
            inputs = _preprocess(inputs[0], levels, grayscale, sigma)
            templates = _preprocess(templates[0], levels, grayscale, sigma)
    levels = len(inputs)
    dtype = inputs[-1].dtype
    # `reduce_retracing` may relax the traced shapes: template sizes and channels are static.
    templates = [tf.ensure_shape(t, (None,) + shape[: t.shape.rank - 1])
                 for t, shape in zip(templates, config.template_shapes)]
    H = tf.cast(init_H, tf.float64)
    H = scale_homography(H, 0.5 ** (levels - 1), config.half_pixel_centers)
    batch = tf.shape(H)[0]
    iterations = tf.zeros(tf.stack([batch]), tf.int32)
    failed = tf.zeros(tf.stack([batch]), tf.bool)
    failed_everywhere = tf.ones(tf.stack([batch]), tf.bool)
    converged = failed
    histories, steps = [], []

    def record(hist, st, k):
        to_full = 2.0 ** (levels - 1 - k)
        if to_full != 1.0:
            T = tf.shape(hist)[0]
            hist = tf.reshape(
                scale_homography(tf.reshape(hist, [-1, 3, 3]), to_full,
                                 config.half_pixel_centers),
                tf.stack([T, batch, 3, 3]),
            )
        histories.append(tf.cast(hist, dtype))
        steps.append(st)

    for k in range(levels):
        with tf.name_scope(f"template_{k}"):
            tmpl = _Template(templates[k], config.min_rcond)
        if k == 0:
            # Restricted motion models first (widen the basin); a sample that fails here goes
            # on unchanged (its initial guess), only the full homography levels report failure.
            for j, (motion, n_it) in enumerate(config.coarse_motions):
                with tf.name_scope(f"stage_{j}_{motion}"):
                    H, it, _, _, hist, st = _lk_level(
                        inputs[k], tmpl, H, n_it, tolerance[k], damping, config, level=k,
                        free=_MOTIONS[motion])
                iterations += it
                if config.return_history:
                    record(hist, st, k)
        with tf.name_scope(f"level_{k}"):
            H, it, converged, fl, hist, st = _lk_level(
                inputs[k], tmpl, H, config.max_iterations[k], tolerance[k], damping, config,
                level=k)
        iterations += it
        failed |= fl
        failed_everywhere &= fl
        if config.return_history:
            record(hist, st, k)
        if k + 1 < levels:
            H = scale_homography(H, 2.0, config.half_pixel_centers)
    # A sample that failed at every level gets its initial guess back exactly (no round trip
    # through the level scalings).
    H = tf.where(failed_everywhere[:, None, None], tf.cast(init_H, dtype), tf.cast(H, dtype))
    return (H, iterations, converged, failed, tuple(histories), tuple(steps))


_COMPILED: dict = {}


def _compiled(jit_compile: bool):
    fn = _COMPILED.get(jit_compile)
    if fn is None:
        fn = tf.function(_pyramid_core, jit_compile=jit_compile, reduce_retracing=True,
                         autograph=False)
        _COMPILED[jit_compile] = fn
    return fn


def _run(inputs, templates, init_H, tolerance, damping, config: _Config, jit_compile) -> LKResult:
    """Run `_pyramid_core`: compiled when eager, inline inside a graph."""
    dtype = inputs[-1].dtype
    if config.preprocess:
        levels, grayscale, _ = config.preprocess
        shape = templates[0].shape
        h, w = int(shape[1]), int(shape[2])
        c = 1 if grayscale and shape[3] == 3 else int(shape[3])
        sizes = [(h // 2 ** k, w // 2 ** k) for k in range(levels)][::-1]
        shapes = tuple((a, b, c) for a, b in sizes)
    else:
        shapes = tuple(tuple(int(d) for d in t.shape[1:]) for t in templates)
    config = config._replace(template_shapes=shapes)
    tol = tf.constant(tolerance, tf.float64)
    damp = tf.constant(float(damping), tf.float64)
    init_H = tf.cast(init_H, dtype)
    if tf.executing_eagerly():
        # One channel: hand (B, H, W) tensors to the compiled function (faster with XLA).
        inputs = [_squeeze_channel(x) for x in inputs]
        templates = [_squeeze_channel(t) for t in templates]
    config = config._replace(
        input_shapes=tuple(tuple(x.shape[1:]) for x in inputs),
        preprocess_template_shape=(tuple(templates[0].shape[1:]) if config.preprocess else ()),
    )
    if tf.executing_eagerly():
        out = _compiled(bool(jit_compile))(inputs, templates, init_H, tol, damp, config)
    else:
        out = _pyramid_core(list(inputs), list(templates), init_H, tol, damp, config)
    H, iterations, converged, failed, histories, steps = out
    history = None
    if config.return_history:
        history = tf.concat([h[: s + 1] for h, s in zip(histories, steps)], axis=0)
    return LKResult(H, iterations, converged, failed, history)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _features(name: str, x) -> tf.Tensor:
    """A floating ``(B, H, W, C)`` tensor with ``H, W >= 2`` and ``C >= 1``, else ValueError."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"`{name}` must be a floating tensor (float32 or float64), got dtype "
                         f"{x.dtype.name}")
    check_shape(name, x, (None, None, None, None), "B x H x W x C")
    for axis, what, least in ((1, "height", 2), (2, "width", 2), (3, "channel count", 1)):
        d = x.shape[axis]
        if d is not None and d < least:
            raise ValueError(f"`{name}` must have a {what} of at least {least}, got shape "
                             f"{tuple(x.shape)}")
    return x


def _check_pair(inp, tmpl, H, suffix: str = ""):
    """Check one level's input and template against each other and against ``H``."""
    name_i, name_t = f"input_features{suffix}", f"template_features{suffix}"
    inp, tmpl = _features(name_i, inp), _features(name_t, tmpl)
    if tmpl.shape[1] is None or tmpl.shape[2] is None:
        raise ValueError(f"`{name_t}` must have a static height and width, got "
                         f"{tuple(tmpl.shape)}")
    if inp.dtype != tmpl.dtype:
        raise ValueError(f"`{name_i}` and `{name_t}` must have the same dtype, got "
                         f"{inp.dtype.name} and {tmpl.dtype.name}")
    ci, ct = inp.shape[3], tmpl.shape[3]
    if ci is not None and ct is not None and ci != ct:
        raise ValueError(f"`{name_i}` and `{name_t}` must have the same number of channels, "
                         f"got {ci} and {ct}")
    for name, x in ((name_i, inp), (name_t, tmpl)):
        if H.shape[0] is not None and x.shape[0] is not None and x.shape[0] != H.shape[0]:
            raise ValueError(f"`{name}` must have the batch size of `init_H` ({H.shape[0]}), "
                             f"got {x.shape[0]}")
    return inp, tmpl


def _per_level(name: str, value, levels: int, check) -> tuple:
    if np.ndim(value) == 0:
        return (check(name, value),) * levels
    values = tuple(check(name, v) for v in np.asarray(value, dtype=object).reshape(-1))
    if len(values) != levels:
        raise ValueError(f"`{name}` must be a scalar or one value per level ({levels}), got "
                         f"{value!r}")
    return values


def _non_negative(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return v


#: Default iteration caps of the pyramid (coarsest, intermediate, finest level): the coarsest
#: level starts farthest from the answer; at the finest one a sample that is in the basin needs
#: 2-4 updates. In a batch every level runs until its last sample stops, so samples that do not
#: converge (outside the basin) cost the cap: the caps bound the run time.
_PYRAMID_ITERATIONS = (30, 10, 5)


#: Defaults of `align_images` (coarsest, intermediate, finest level): with ESM at the coarse
#: levels the finest level starts within a pixel, 2 updates reach ~0.01 px.
_ALIGN_ITERATIONS = (15, 5, 2)
_ALIGN_TOLERANCES = (0.1, 0.05, 0.01)


def _default_iterations(levels: int) -> tuple:
    coarsest, middle, finest = _PYRAMID_ITERATIONS
    if levels == 1:
        return (coarsest,)
    return (coarsest,) + (middle,) * (levels - 2) + (finest,)


def _check_settings(levels, max_iterations, tolerance, damping, min_rcond, min_valid_fraction):
    if max_iterations is None:
        max_iterations = _default_iterations(levels)
    iters = _per_level("max_iterations", max_iterations, levels, check_positive_int)
    tols = _per_level("tolerance", tolerance, levels, _non_negative)
    _non_negative("damping", damping)
    _non_negative("min_rcond", min_rcond)
    if not 0 <= _non_negative("min_valid_fraction", min_valid_fraction) <= 1:
        raise ValueError(f"`min_valid_fraction` must be in [0, 1], got {min_valid_fraction!r}")
    return iters, tols


def _check_algorithm(levels: int, algorithm) -> tuple:
    """One update rule per level from a name or a sequence of names."""
    def check(name, value):
        if value not in _ALGORITHMS:
            raise ValueError(f"`{name}` must be one of {_ALGORITHMS}, got {value!r}")
        return value

    if isinstance(algorithm, str):
        return (check("algorithm", algorithm),) * levels
    return _per_level("algorithm", list(algorithm), levels, check)


def _check_motions(coarse_motions) -> tuple:
    """``((motion, max_iterations), ...)`` with motions from `_MOTIONS`."""
    if coarse_motions is None:
        return ()
    out = []
    for stage in coarse_motions:
        if isinstance(stage, str) or len(stage) != 2 or stage[0] not in _MOTIONS:
            raise ValueError(
                f"`coarse_motions` must be a sequence of (motion, max_iterations) with motion in "
                f"{tuple(_MOTIONS)}, got {coarse_motions!r}"
            )
        out.append((stage[0], check_positive_int("coarse_motions iterations", stage[1])))
    return tuple(out)


def _check_H(init_H, dtype) -> tf.Tensor:
    H = tf.convert_to_tensor(init_H)
    if not H.dtype.is_floating:
        H = tf.cast(H, dtype)
    check_shape("init_H", H, (None, 3, 3), "B x 3 x 3 homographies input_H_template")
    return H


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def lucas_kanade(
    input_features,
    template_features,
    init_H,
    max_iterations: int = 50,
    tolerance: float = 1e-2,
    damping: float = 1e-4,
    *,
    adaptive_damping: bool = False,
    masked_hessian: bool = False,
    min_rcond: float = 1e-7,
    min_valid_fraction: float = 0.1,
    return_history: bool = False,
    jit_compile: bool = True,
    algorithm: str = "inverse_compositional",
) -> LKResult:
    """Inverse-compositional Lucas-Kanade for homographies, batched (see the module docstring).

    Args:
        input_features: ``(B, Hi, Wi, C)`` floating input image or feature map.
        template_features: ``(B, h, w, C)`` template (static ``h, w >= 2``), same dtype and C.
        init_H: ``(B, 3, 3)`` initial ``input_H_template`` (template pixels -> input pixels).
        max_iterations: maximum number of updates per sample.
        tolerance: a sample stops once an update moves its template corners by less than this
            many input pixels (maximum over the four corners).
        damping: relative Levenberg-Marquardt damping, ``Hessian + damping * trace / 8 * I``.
        adaptive_damping: reject error-increasing steps and adapt the damping per sample.
        masked_hessian: recompute the Hessian over the valid pixels at every iteration.
        min_rcond: a template whose undamped Hessian has an estimated reciprocal condition number
            below this fails (textureless, or texture in one direction only).
        min_valid_fraction: a sample fails if fewer than this fraction of its template pixels
            sample inside the input.
        return_history: also return the per-iteration estimates (for animations).
        jit_compile: compile with XLA when called eagerly (inside a `tf.function` the loop is
            built inline and the caller decides).
        algorithm: ``"inverse_compositional"`` (template Jacobian and Hessian computed once) or
            ``"esm"`` (efficient second-order minimisation: mean of the template's and the
            warped input's gradients, a new Hessian per iteration; much wider basin, about
            twice the cost per iteration; see the module docstring).

    Returns:
        `LKResult` ``(H, iterations, converged, failed, history)``, H in the features' dtype.

    Raises:
        ValueError: bad ranks or shapes, mismatched batch sizes, channels or dtypes, empty or
            non-floating features, bad settings.

    Differentiable with respect to both feature maps and `init_H`, through every iteration.
    """
    inp = _features("input_features", input_features)
    H0 = _check_H(init_H, inp.dtype)
    inp, tmpl = _check_pair(inp, template_features, H0)
    iters, tols = _check_settings(1, max_iterations, tolerance, damping, min_rcond,
                                  min_valid_fraction)
    config = _Config(iters, bool(masked_hessian), bool(adaptive_damping), float(min_rcond),
                     float(min_valid_fraction), True, bool(return_history),
                     algorithms=_check_algorithm(1, algorithm))
    return _run([inp], [tmpl], H0, tols, damping, config, jit_compile)


def _level_defaults(levels: int, max_iterations, tolerance, algorithm):
    """Fill the per-level settings left as None with the aligner's defaults for `levels` levels
    (coarsest, middle levels, finest)."""

    def per_level(values):
        return values[:1] + values[1:2] * (levels - 2) + (values[2:] if levels > 1 else ())

    if max_iterations is None:
        max_iterations = per_level(_ALIGN_ITERATIONS)
    if tolerance is None:
        tolerance = per_level(_ALIGN_TOLERANCES)
    if algorithm is None:
        algorithm = ("esm",) * (levels - 1) + ("inverse_compositional",)
    return max_iterations, tolerance, algorithm


def pyramid_lucas_kanade(
    input_pyramid: Sequence,
    template_pyramid: Sequence,
    init_H,
    max_iterations: Union[None, int, Sequence[int]] = None,
    tolerance: Union[float, Sequence[float]] = 1e-2,
    damping: float = 1e-4,
    *,
    half_pixel_centers: bool = True,
    adaptive_damping: bool = False,
    masked_hessian: bool = False,
    min_rcond: float = 1e-7,
    min_valid_fraction: float = 0.1,
    return_history: bool = False,
    jit_compile: bool = True,
    algorithm: Union[str, Sequence[str]] = "inverse_compositional",
    coarse_motions: Sequence = (),
) -> LKResult:
    """Coarse-to-fine Lucas-Kanade over feature pyramids (one compiled program for all levels).

    Level ``k + 1`` is twice the size of level ``k`` (``size_{k+1}`` is ``2 size_k`` or
    ``2 size_k + 1``, as from `build_pyramid` or stride-2 layers). `init_H` (full resolution) is
    scaled to the coarsest level with `deeplk.geometry.scale_homography`, refined by the
    inverse-compositional loop, scaled up by 2, refined at the next level, and so on. A sample
    that fails at a level keeps that level's initial guess and goes on to the next level;
    ``failed`` reports a failure at any level.

    Args:
        input_pyramid: list of ``(B, Hi_k, Wi_k, C)`` input features, coarsest first (e.g. 48,
            96, 192).
        template_pyramid: list of ``(B, h_k, w_k, C)`` template features, coarsest first (e.g.
            32, 64, 128), same length, dtype and channels.
        init_H: ``(B, 3, 3)`` initial ``input_H_template`` at full (finest) resolution.
        max_iterations: an int, or one int per level (coarsest first); ``None``: 30 at the
            coarsest level (which starts farthest from the answer), 10 at intermediate levels,
            5 at the finest (a sample in the basin needs 2-4 updates there). In a batch a level
            runs until its last sample stops, so these caps bound the run time.
        tolerance: pixels of each level; a number, or one per level (coarsest first).
        damping, adaptive_damping, masked_hessian, min_rcond, min_valid_fraction, jit_compile:
            as in `lucas_kanade`.
        half_pixel_centers: coordinate convention between levels (True: pixel areas, matching 2x2
            average pooling and ``cv2.resize(..., INTER_AREA)``; False: corner-aligned, e.g.
            ``img[::2, ::2]``).
        return_history: also return every iteration's estimate at every level, expressed at
            full resolution (coarse motion stages included, before the coarsest level).
        algorithm: update rule, one name or one per level (coarsest first):
            ``"inverse_compositional"`` or ``"esm"`` (see `lucas_kanade`).
        coarse_motions: stages with a restricted motion model run at the coarsest level before
            the full homography, e.g. ``(("translation", 5),)`` or ``(("translation", 5),
            ("affine", 5))``: ``(motion, max_iterations)`` with motion ``"translation"`` or
            ``"affine"`` (the increment keeps the other parameters at 0). They widen the basin
            when the initial guess is far; a sample that fails in such a stage continues from
            its guess (only the homography levels set ``failed``).

    Returns:
        `LKResult` at full resolution; ``iterations`` summed over the levels.

    Raises:
        ValueError: as `lucas_kanade`, plus lists of different lengths, or sizes that do not
            double from one level to the next.
    """
    if isinstance(input_pyramid, (tf.Tensor, np.ndarray)) or isinstance(
        template_pyramid, (tf.Tensor, np.ndarray)
    ):
        raise ValueError("`input_pyramid` and `template_pyramid` must be lists of feature maps "
                         "(coarsest first), not single tensors")
    input_pyramid, template_pyramid = list(input_pyramid), list(template_pyramid)
    levels = len(input_pyramid)
    if levels == 0 or len(template_pyramid) != levels:
        raise ValueError(
            f"`input_pyramid` and `template_pyramid` must be non-empty lists of the same length, "
            f"got {levels} and {len(template_pyramid)}"
        )
    finest = _features(f"input_pyramid[{levels - 1}]", input_pyramid[-1])
    H0 = _check_H(init_H, finest.dtype)
    inputs, templates = [], []
    for k in range(levels):
        i, t = _check_pair(input_pyramid[k], template_pyramid[k], H0, f" (level {k})")
        for x, ref, what in ((i, finest, "dtype"), (i, finest, "channels")):
            if what == "dtype" and x.dtype != ref.dtype:
                raise ValueError(f"every level must have the dtype {ref.dtype.name} of the "
                                 f"finest level, level {k} has {x.dtype.name}")
            if (what == "channels" and x.shape[3] is not None and ref.shape[3] is not None
                    and x.shape[3] != ref.shape[3]):
                raise ValueError(f"every level must have the {ref.shape[3]} channels of the "
                                 f"finest level, level {k} has {x.shape[3]}")
        inputs.append(i)
        templates.append(t)
    check_pyramid_doubles("input_pyramid", inputs)
    check_pyramid_doubles("template_pyramid", templates)
    max_iterations, tolerance, algorithm = _level_defaults(levels, max_iterations, tolerance, algorithm)
    iters, tols = _check_settings(levels, max_iterations, tolerance, damping, min_rcond,
                                  min_valid_fraction)
    config = _Config(iters, bool(masked_hessian), bool(adaptive_damping), float(min_rcond),
                     float(min_valid_fraction), bool(half_pixel_centers), bool(return_history),
                     algorithms=_check_algorithm(levels, algorithm),
                     coarse_motions=_check_motions(coarse_motions))
    return _run(inputs, templates, H0, tols, damping, config, jit_compile)


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


def to_grayscale(images) -> tf.Tensor:
    """``(B, H, W, 3)`` RGB -> ``(B, H, W, 1)`` luma (ITU-R 601, as `tf.image.rgb_to_grayscale`);
    one-channel images are returned unchanged."""
    images = _features("images", images)
    c = images.shape[-1]
    if c == 1:
        return images
    if c != 3:
        raise ValueError(f"`images` must have 1 or 3 channels, got shape {tuple(images.shape)}")
    return _to_gray(images)[..., None]


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


def align_images(
    inputs,
    templates,
    init_H=None,
    levels: int = 3,
    max_iterations: Union[None, int, Sequence[int]] = None,
    tolerance: Union[None, float, Sequence[float]] = None,
    damping: float = 1e-4,
    *,
    grayscale: bool = True,
    blur_sigma: float = 1.0,
    return_history: bool = False,
    jit_compile: bool = True,
    algorithm: Union[None, str, Sequence[str]] = None,
    coarse_motions: Sequence = (("translation", 5),),
    preprocess_on_host: Optional[bool] = None,
    **kwargs,
) -> LKResult:
    """Classical coarse-to-fine LK on image intensities (the ``lk`` method of the evaluation).

    Grey conversion, the 2x2 average pyramid and the blur run on the host (NumPy / OpenCV) for
    eager calls, else inside the compiled program with the LK iterations (same values up to
    float rounding; see `preprocess_on_host`). Defaults (chosen on MSCOCO-protocol pairs,
    ``bench/lk_vs_ecc.py``): a translation stage at the coarsest level, ESM updates at every
    level but the finest (wide basin), inverse-compositional updates at the finest (cheap, the
    estimate is already within a pixel), iteration caps (15, 5, 2) for 3 levels and tolerances
    0.1 / 0.05 / 0.01 pixels of the level.

    Args:
        inputs: ``(B, Hi, Wi, C)`` input images in [0, 1] (e.g. 192 x 192 RGB), static size.
        templates: ``(B, h, w, C)`` templates (e.g. 128 x 128), static size, same C.
        init_H: ``(B, 3, 3)`` initial ``input_H_template``; ``None`` = the centred placement
            (`deeplk.geometry.centred_homography`, corners (32, 32) ... (159, 159) for 128 in 192).
        levels: pyramid levels (2x2 average pooling).
        max_iterations: as in `pyramid_lucas_kanade`; ``None``: 15 at the coarsest level, 5 at
            the others, 2 at the finest.
        tolerance: as in `pyramid_lucas_kanade`; ``None``: 0.1 at the coarsest level, 0.05 at
            the others, 0.01 at the finest (pixels of each level).
        damping: as in `pyramid_lucas_kanade`.
        grayscale: convert RGB to luma first (else align all channels jointly).
        blur_sigma: Gaussian blur (normalised convolution, pixels of the level) of both
            pyramids. A number blurs every level except the finest (wider basin at the coarse
            levels; blurring the finest level would bias the result by ~0.1 px because the
            template's border is blurred differently from the input); or one value per level,
            coarsest first; 0 disables.
        algorithm: as in `pyramid_lucas_kanade`; ``None``: ``"esm"`` at every level except the
            finest, ``"inverse_compositional"`` there.
        coarse_motions: as in `pyramid_lucas_kanade` (default: 5 translation-only iterations at
            the coarsest level); ``()`` disables.
        preprocess_on_host: where the grey pyramids are built. ``None`` (default): on the host
            when called eagerly with float32/float64 images whose result has one channel (grey
            conversion, or one-channel images), otherwise in the compiled program; ``True``
            requires the host (ValueError if not possible); ``False``: always in the program.
        return_history, jit_compile, **kwargs: as in `pyramid_lucas_kanade`
            (``adaptive_damping``, ``masked_hessian``, ``min_rcond``, ``min_valid_fraction``).

    Returns:
        `LKResult` at full resolution.

    Raises:
        ValueError: bad shapes or settings, images too small for `levels`.
    """
    levels = check_positive_int("levels", levels)
    host = None
    if preprocess_on_host is not False and tf.executing_eagerly():
        host = _host_pair(inputs, templates, init_H, levels, grayscale)
    if preprocess_on_host and host is None:
        raise ValueError(
            "`preprocess_on_host=True` needs an eager call with float32/float64 images of one "
            "channel (or RGB with grayscale=True), the same dtype and batch size, large enough "
            f"for {levels} levels"
        )
    if host is None:
        inputs = _features("inputs", inputs)
        templates = _features("templates", templates)
    else:
        inputs, templates = host
    for name, x in (("inputs", inputs), ("templates", templates)):
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError(f"`{name}` must have a static height and width, got "
                             f"{tuple(x.shape)}")
        if min(x.shape[1], x.shape[2]) // 2 ** (levels - 1) < 2:
            raise ValueError(f"`{name}` of shape {tuple(x.shape)} is too small for {levels} "
                             f"levels")
    if init_H is None:
        batch = inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]
        init_H = centred_homography(tuple(inputs.shape[1:3]), tuple(templates.shape[1:3]),
                                     batch, inputs.dtype)
    H0 = _check_H(init_H, inputs.dtype)
    if host is None:
        inputs, templates = _check_pair(inputs, templates, H0)
    if np.ndim(blur_sigma) == 0:
        sigmas = (float(blur_sigma),) * (levels - 1) + (0.0,)
    else:
        sigmas = tuple(float(v) for v in np.asarray(blur_sigma, dtype=np.float64).reshape(-1))
        if len(sigmas) != levels:
            raise ValueError(f"`blur_sigma` must be a number or one value per level ({levels}), "
                             f"got {blur_sigma!r}")
    if not all(np.isfinite(v) for v in sigmas):
        raise ValueError(f"`blur_sigma` must be finite, got {blur_sigma!r}")
    known = {"half_pixel_centers", "adaptive_damping", "masked_hessian", "min_rcond",
             "min_valid_fraction"}
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"align_images() got unexpected keyword arguments {sorted(unknown)}")
    min_rcond = kwargs.get("min_rcond", 1e-7)
    min_valid_fraction = kwargs.get("min_valid_fraction", 0.1)
    max_iterations, tolerance, algorithm = _level_defaults(levels, max_iterations, tolerance, algorithm)
    iters, tols = _check_settings(levels, max_iterations, tolerance, damping, min_rcond,
                                  min_valid_fraction)
    config = _Config(
        iters, bool(kwargs.get("masked_hessian", False)),
        bool(kwargs.get("adaptive_damping", False)), float(min_rcond), float(min_valid_fraction),
        bool(kwargs.get("half_pixel_centers", True)), bool(return_history),
        preprocess=(levels, bool(grayscale), sigmas),
        algorithms=_check_algorithm(levels, algorithm),
        coarse_motions=_check_motions(coarse_motions),
    )
    if host is not None:
        config = config._replace(preprocess=())
        return _run(_host_pyramid(inputs, levels, grayscale, sigmas),
                    _host_pyramid(templates, levels, grayscale, sigmas), H0, tols, damping,
                    config, jit_compile)
    return _run([inputs], [templates], H0, tols, damping, config, jit_compile)


def _host_pair(inputs, templates, init_H, levels: int, grayscale: bool):
    """``(inputs, templates)`` as NumPy arrays if `align_images` can build the pyramids on the
    host (see its `preprocess_on_host`), else None."""
    a, t = _host_images(inputs), _host_images(templates)
    if a is None or t is None or a.dtype != t.dtype:
        return None
    c = a.shape[-1]
    if c != t.shape[-1] or not (c == 1 or (c == 3 and grayscale)):
        return None
    batch = a.shape[0]
    if t.shape[0] != batch or (init_H is not None and np.shape(init_H)[:1] != (batch,)):
        return None
    if min(a.shape[1:3] + t.shape[1:3]) // 2 ** (levels - 1) < 2:
        return None
    return a, t


# --------------------------------------------------------------------------------------------
# Keras layer
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="deeplk")
class LucasKanadeLayer(keras.layers.Layer):
    """Inverse-compositional LK as a Keras layer (one level; use one per pyramid level).

    ``call([input_features, template_features, init_H])`` returns the refined ``(B, 3, 3)``
    ``input_H_template``; `solve` returns the full `LKResult`. No weights; gradients flow to both
    feature maps and to ``init_H`` through every iteration.

    Args:
        max_iterations, tolerance, damping, adaptive_damping, masked_hessian, min_rcond,
            min_valid_fraction, algorithm: as in `lucas_kanade`.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        max_iterations: int = 50,
        tolerance: float = 1e-2,
        damping: float = 1e-4,
        adaptive_damping: bool = False,
        masked_hessian: bool = False,
        min_rcond: float = 1e-7,
        min_valid_fraction: float = 0.1,
        algorithm: str = "inverse_compositional",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_settings(1, max_iterations, tolerance, damping, min_rcond, min_valid_fraction)
        _check_algorithm(1, algorithm)
        self.algorithm = str(algorithm)
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        self.damping = float(damping)
        self.adaptive_damping = bool(adaptive_damping)
        self.masked_hessian = bool(masked_hessian)
        self.min_rcond = float(min_rcond)
        self.min_valid_fraction = float(min_valid_fraction)

    def solve(self, inputs, return_history: bool = False) -> LKResult:
        """The full `LKResult` for ``inputs = [input_features, template_features, init_H]``."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError(
                "`inputs` must be a list [input_features, template_features, init_H], got "
                f"{type(inputs).__name__}"
                + (f" of length {len(inputs)}" if isinstance(inputs, (list, tuple)) else "")
            )
        input_features, template_features, init_H = inputs
        # Eager calls are typically differentiated (custom loops, tests): no XLA there; inside
        # a model the loop is inlined and Keras' own `jit_compile` applies.
        return lucas_kanade(
            input_features, template_features, init_H,
            max_iterations=self.max_iterations, tolerance=self.tolerance, damping=self.damping,
            adaptive_damping=self.adaptive_damping, masked_hessian=self.masked_hessian,
            min_rcond=self.min_rcond, min_valid_fraction=self.min_valid_fraction,
            return_history=return_history, jit_compile=False, algorithm=self.algorithm,
        )

    def call(self, inputs):
        return self.solve(inputs).H

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 3, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_iterations=self.max_iterations,
            tolerance=self.tolerance,
            damping=self.damping,
            adaptive_damping=self.adaptive_damping,
            masked_hessian=self.masked_hessian,
            min_rcond=self.min_rcond,
            min_valid_fraction=self.min_valid_fraction,
            algorithm=self.algorithm,
        )
        return config
