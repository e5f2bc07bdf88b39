"""The solver: batched inverse-compositional Lucas-Kanade for 8-parameter homographies on feature maps.

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

Design choices (fields of `LKOptions`):

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
is computed after a level's last iteration.

Settings come as one `deeplk.lk.options.LKOptions`; the image preprocessing (grey conversion,
pyramids, blur) lives in `deeplk.lk.preprocess`, the classical aligner on images in
`deeplk.lk.align` and the Keras layer in `deeplk.lk.layer`.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from deeplk._checks import check_shape
from deeplk.geometry import scale_homography, transform_points
from deeplk.lk.options import LevelSettings, LKOptions
from deeplk.lk.preprocess import _features, _preprocess, _squeeze_channel, check_pyramid_doubles

__all__ = ["LKResult", "lucas_kanade", "pyramid_lucas_kanade", "pyramid_defaults"]

#: A template whose mean squared gradient is below this fraction of its mean squared value is
#: treated as textureless (scale-invariant; a constant template has exactly zero gradient).
_MIN_RELATIVE_TEXTURE = 1e-10


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

def _channel_sum(x: tf.Tensor, c: int) -> tf.Tensor:
    return x if c == 1 else tf.reduce_sum(x, axis=-1)


def _safe_normalise(H: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
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
    H0n, ok0 = _safe_normalise(tf.matmul(H0, tmpl.N_inv[None]))
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
        return _safe_normalise(tf.matmul(Hn, tmpl.N[None]))[0]

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
        H_next, ok_norm = _safe_normalise(tf.matmul(H_acc, _adjugate3(W)))
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


#: Default iteration caps of the pyramid (coarsest, intermediate, finest level): the coarsest
#: level starts farthest from the answer; at the finest one a sample that is in the basin needs
#: 2-4 updates. In a batch every level runs until its last sample stops, so samples that do not
#: converge (outside the basin) cost the cap: the caps bound the run time.
_PYRAMID_ITERATIONS = (30, 10, 5)


def _default_iterations(levels: int) -> tuple:
    coarsest, middle, finest = _PYRAMID_ITERATIONS
    if levels == 1:
        return (coarsest,)
    return (coarsest,) + (middle,) * (levels - 2) + (finest,)


def _check_H(init_H, dtype) -> tf.Tensor:
    H = tf.convert_to_tensor(init_H)
    if not H.dtype.is_floating or H.dtype in (tf.float16, tf.bfloat16):
        H = tf.cast(H, dtype)
    check_shape("init_H", H, (None, 3, 3), "B x 3 x 3 homographies input_H_template")
    return H

# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------



def _config(options: LKOptions, levels: LevelSettings, return_history: bool, **static) -> _Config:
    """The static (trace-time) settings of one run."""
    return _Config(levels.max_iterations, options.masked_hessian, options.adaptive_damping,
                   options.min_rcond, options.min_valid_fraction, options.half_pixel_centers,
                   bool(return_history), algorithms=levels.algorithm,
                   coarse_motions=levels.coarse_motions, **static)


#: Defaults of `lucas_kanade` (one level) for the `LKOptions` fields left at ``None``.
_SINGLE_DEFAULTS = dict(max_iterations=(50,), tolerance=(1e-2,),
                        algorithm=("inverse_compositional",), coarse_motions=())


def pyramid_defaults(levels: int) -> dict:
    """Defaults of `pyramid_lucas_kanade` for `levels` levels (the `LKOptions.resolve`
    keywords)."""
    return dict(max_iterations=_default_iterations(levels), tolerance=(1e-2,) * levels,
                algorithm=("inverse_compositional",) * levels, coarse_motions=())


def lucas_kanade(
    input_features,
    template_features,
    init_H,
    options: Union[None, LKOptions, Mapping] = None,
    *,
    return_history: bool = False,
    jit_compile: bool = True,
    **settings,
) -> LKResult:
    """Inverse-compositional Lucas-Kanade for homographies, batched (see the module docstring).

    Args:
        input_features: ``(B, Hi, Wi, C)`` floating input image or feature map.
        template_features: ``(B, h, w, C)`` template (static ``h, w >= 2``), same dtype and C.
        init_H: ``(B, 3, 3)`` initial ``input_H_template`` (template pixels -> input pixels).
        options: the solver settings (`LKOptions`, or a dict of its fields); fields left at
            ``None``: 50 iterations, tolerance 0.01 px, ``"inverse_compositional"`` updates
            (``"esm"``: efficient second-order minimisation, a much wider basin at about twice
            the cost per iteration; see the module docstring).
        return_history: also return the per-iteration estimates (for animations).
        jit_compile: compile with XLA when called eagerly (inside a `tf.function` the loop is
            built inline and the caller decides).
        **settings: `LKOptions` fields replacing those of `options` (``max_iterations=10``).

    Returns:
        `LKResult` ``(H, iterations, converged, failed, history)``, H in the features' dtype
        (float32 for half-precision features, which are cast to float32 on entry).

    Raises:
        ValueError: bad ranks or shapes, mismatched batch sizes, channels or dtypes, empty or
            non-floating features, bad settings. TypeError: a setting that is not an
            `LKOptions` field.

    Differentiable with respect to both feature maps and `init_H`, through every iteration.

    >>> import numpy as np
    >>> t = np.random.default_rng(0).random((1, 16, 16, 1))
    >>> H0 = np.eye(3)[None]
    >>> bool(lucas_kanade(t, t, H0, max_iterations=3, jit_compile=False).converged[0])
    True
    """
    options = LKOptions.coerce(options, **settings)
    inp = _features("input_features", input_features)
    H0 = _check_H(init_H, inp.dtype)
    inp, tmpl = _check_pair(inp, template_features, H0)
    levels = options.resolve(1, **_SINGLE_DEFAULTS)
    return _run([inp], [tmpl], H0, levels.tolerance, options.damping,
                _config(options, levels, return_history), jit_compile)


def pyramid_lucas_kanade(
    input_pyramid: Sequence,
    template_pyramid: Sequence,
    init_H,
    options: Union[None, LKOptions, Mapping] = None,
    *,
    return_history: bool = False,
    jit_compile: bool = True,
    **settings,
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
        options: the solver settings (`LKOptions` or a dict of its fields). Per-level fields
            are one value or one per level (coarsest first); left at ``None``: 30 iterations at
            the coarsest level (which starts farthest from the answer), 10 at intermediate
            levels, 5 at the finest (a sample in the basin needs 2-4 updates there; in a batch
            a level runs until its last sample stops, so these caps bound the run time),
            tolerance 0.01 px of each level, ``"inverse_compositional"`` updates, no coarse
            motion stage. ``half_pixel_centers`` sets the coordinate convention between levels
            (True: pixel areas, matching 2x2 average pooling and ``cv2.resize(..., INTER_AREA)``;
            False: corner-aligned, e.g. ``img[::2, ::2]``). ``coarse_motions`` such as
            ``(("translation", 5),)`` run a restricted increment at the coarsest level before
            the full homography (wider basin when the guess is far; a sample that fails in such
            a stage continues from its guess, only the homography levels set ``failed``).
        return_history: also return every iteration's estimate at every level, expressed at
            full resolution (coarse motion stages included, before the coarsest level).
        jit_compile: as in `lucas_kanade`.
        **settings: `LKOptions` fields replacing those of `options`.

    Returns:
        `LKResult` at full resolution; ``iterations`` summed over the levels.

    Raises:
        ValueError: as `lucas_kanade`, plus lists of different lengths, or sizes that do not
            double from one level to the next.
    """
    options = LKOptions.coerce(options, **settings)
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
        if i.dtype != finest.dtype:
            raise ValueError(f"every level must have the dtype {finest.dtype.name} of the "
                             f"finest level, level {k} has {i.dtype.name}")
        if (i.shape[3] is not None and finest.shape[3] is not None
                and i.shape[3] != finest.shape[3]):
            raise ValueError(f"every level must have the {finest.shape[3]} channels of the "
                             f"finest level, level {k} has {i.shape[3]}")
        inputs.append(i)
        templates.append(t)
    check_pyramid_doubles("input_pyramid", inputs)
    check_pyramid_doubles("template_pyramid", templates)
    per_level = options.resolve(levels, **pyramid_defaults(levels))
    return _run(inputs, templates, H0, per_level.tolerance, options.damping,
                _config(options, per_level, return_history), jit_compile)
