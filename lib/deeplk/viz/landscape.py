"""Loss landscapes: the LK alignment loss around the true homography (the paper's convexity plot).

The alignment loss of an estimate ``H`` (``input_H_template``) is the mean squared difference
between the template's features and the input's features warped into the template frame by
``H``, over the valid pixels (sampling position inside the input) and the channels:

    loss(H) = sum_x m(x) |F_I(H x) - F_T(x)|^2 / (C * sum_x m(x))

DLKFM learns features whose loss is (nearly) convex over a wide basin around the true ``H``, so
LK converges from far away; on raw intensities of two modalities the basin is narrow and full of
local minima. `loss_landscape` evaluates the loss over a 1-D or 2-D grid of perturbations of the
true ``H``; `plot_landscapes` draws several (learned features, intensities) side by side.

Perturbation parameters (all in **pixels of the full-resolution input**, so one range serves
every parameter and level):

- ``"tx"``, ``"ty"``: all four corners moved by ``d`` along x / y (a translation in the input);
- ``"tl_x"``, ``"tl_y"``, ``"tr_x"``, ... ``"bl_y"``: one corner coordinate moved by ``d``;
- ``"p1"`` ... ``"p8"``: the eight parameters of LK's warp increment ``W(p) = I + [p, 0]`` in
  the normalised template frame of `deeplk.lk` (coordinates in [-1, 1]), scaled so that a value
  ``d`` moves the farthest template corner by about ``d`` template pixels:
  ``H = H_true N^-1 W(p) N`` with ``p_k = d / s``, ``s`` half the template side minus one half.
  ``p1, p2, p4, p5`` are the linear part, ``p3, p6`` the translation, ``p7, p8`` the projective
  terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from deeplk._checks import check_shape
from deeplk.geometry_np import template_corners

__all__ = ["PARAMETERS", "Landscape", "alignment_loss", "perturbed_homographies", "loss_landscape", "plot_landscapes"]

_CORNER_NAMES = ("tl", "tr", "br", "bl")
PARAMETERS = (("tx", "ty") + tuple(f"{c}_{a}" for c in _CORNER_NAMES for a in "xy")
              + tuple(f"p{k}" for k in range(1, 9)))


def _homographies_from_corners(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` homographies taking ``src`` ``(4, 2)`` to each ``dst`` ``(N, 4, 2)`` (float64 DLT,
    exact for four points)."""
    n = dst.shape[0]
    A = np.zeros((n, 8, 8))
    b = np.zeros((n, 8))
    for i in range(4):
        x, y = src[i]
        u, v = dst[:, i, 0], dst[:, i, 1]
        A[:, 2 * i, 0:3] = [x, y, 1]
        A[:, 2 * i, 6] = -u * x
        A[:, 2 * i, 7] = -u * y
        A[:, 2 * i + 1, 3:6] = [x, y, 1]
        A[:, 2 * i + 1, 6] = -v * x
        A[:, 2 * i + 1, 7] = -v * y
        b[:, 2 * i], b[:, 2 * i + 1] = u, v
    h = np.linalg.solve(A, b[..., None])[..., 0]
    return np.concatenate([h, np.ones((n, 1))], axis=1).reshape(n, 3, 3)


def perturbed_homographies(true_corners, template_size, params: Sequence[str], values) -> np.ndarray:
    """Full-resolution ``input_H_template`` for perturbations of the true homography.

    Args:
        true_corners: ``(4, 2)`` where the template's corners land in the input (ground truth).
        template_size: int or ``(h, w)`` of the full-resolution template.
        params: names from `PARAMETERS` (module docstring), one per column of `values`.
        values: ``(N, len(params))`` perturbations in pixels (0 = the true H).

    Returns:
        ``(N, 3, 3)`` float64 homographies, ``H[..., 2, 2] == 1``.
    """
    tc = np.asarray(true_corners, dtype=np.float64)
    check_shape("true_corners", tc, (4, 2), "(x, y) pixels, TL, TR, BR, BL")
    params = list(params)
    for p in params:
        if p not in PARAMETERS:
            raise ValueError(f"unknown perturbation parameter {p!r}; choose from {PARAMETERS}")
    if len(set(params)) != len(params):
        raise ValueError(f"`params` must be distinct, got {params}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 and len(params) == 1:
        values = values[:, None]
    check_shape("values", values, (None, len(params)), f"N x {len(params)} perturbations in pixels")
    h, w = (int(template_size),) * 2 if np.ndim(template_size) == 0 else (int(template_size[0]), int(template_size[1]))
    n = values.shape[0]
    dst = np.repeat(tc[None], n, axis=0)
    p = np.zeros((n, 8))
    s = max(w - 1, h - 1, 1) / 2.0
    for j, name in enumerate(params):
        d = values[:, j]
        if name in ("tx", "ty"):
            dst[:, :, 0 if name == "tx" else 1] += d[:, None]
        elif name.startswith("p"):
            p[:, int(name[1:]) - 1] = d / s
        else:
            corner, axis = name.split("_")
            dst[:, _CORNER_NAMES.index(corner), "xy".index(axis)] += d
    H = _homographies_from_corners(template_corners((h, w)), dst)
    if np.any(p):
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        N = np.array([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1]])
        N_inv = np.array([[s, 0, cx], [0, s, cy], [0, 0, 1]])
        W = np.eye(3)[None] + np.concatenate([p, np.zeros((n, 1))], axis=1).reshape(n, 3, 3)
        H = H @ N_inv @ W @ N
        H = H / H[:, 2:3, 2:3]
    return H


def alignment_loss(input_features, template_features, input_H_template, batch_size: int = 16):
    """Masked mean squared feature difference for many estimates of one pair (module docstring).

    Args:
        input_features: ``(1, Hi, Wi, C)`` or ``(Hi, Wi, C)`` input feature map.
        template_features: ``(1, h, w, C)`` or ``(h, w, C)`` template feature map.
        input_H_template: ``(N, 3, 3)`` (or ``(3, 3)``) estimates, pixels of *these* maps.
        batch_size: estimates warped at once (memory: ``batch_size * h * w * C`` floats).

    Returns:
        ``(loss (N,), valid_fraction (N,))`` float64; the loss is NaN where no pixel is valid.
        The warp is `deeplk.warp.sample_bilinear` (bilinear, zero outside, valid where the
        position lies in ``[0, Wi-1] x [0, Hi-1]``), as LK's.
    """
    import tensorflow as tf

    from deeplk.warp import sample_bilinear

    fi = np.asarray(input_features, dtype=np.float32)
    ft = np.asarray(template_features, dtype=np.float32)
    if fi.ndim == 3:
        fi = fi[None]
    if ft.ndim == 3:
        ft = ft[None]
    check_shape("input_features", fi, (1, None, None, None), "1 x Hi x Wi x C")
    check_shape("template_features", ft, (1, None, None, fi.shape[-1]), "1 x h x w x C, C of the input")
    H = np.asarray(input_H_template, dtype=np.float64)
    if H.ndim == 2:
        H = H[None]
    check_shape("input_H_template", H, (None, 3, 3), "N x 3 x 3 homographies")
    h, w, c = ft.shape[1:]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1).reshape(-1, 3)  # (h*w, 3)
    losses, fractions = [], []
    fi_t = tf.constant(fi)
    tmpl = ft[0].reshape(-1, c).astype(np.float64)
    for start in range(0, H.shape[0], int(batch_size)):
        Hc = H[start:start + int(batch_size)]
        uvw = np.einsum("nij,pj->npi", Hc, pts)  # (n, h*w, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = uvw[..., 0] / uvw[..., 2]
            y = uvw[..., 1] / uvw[..., 2]
        n = Hc.shape[0]
        values, mask = sample_bilinear(fi_t, x.reshape(1, n * h, w).astype(np.float32),
                                       y.reshape(1, n * h, w).astype(np.float32))
        values = values.numpy().reshape(n, h * w, c).astype(np.float64)
        mask = mask.numpy().reshape(n, h * w).astype(np.float64)
        sq = ((values - tmpl[None]) ** 2).sum(axis=-1) * mask
        count = mask.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            losses.append(np.where(count > 0, sq.sum(axis=1) / (count * c), np.nan))
        fractions.append(count / (h * w))
    return np.concatenate(losses), np.concatenate(fractions)


@dataclass(frozen=True)
class Landscape:
    """Alignment loss over a grid of perturbations of the true homography.

    Attributes:
        params: the perturbed parameters (one or two names of `PARAMETERS`).
        axes: one 1-D array of perturbation values (pixels) per parameter.
        loss: ``(n,)`` or ``(n0, n1)`` loss; ``loss[i, j]`` at ``(axes[0][i], axes[1][j])``.
        valid_fraction: same shape, fraction of template pixels sampling inside the input.
        level: pyramid level of the features (1 = full resolution).
        name: label of the feature source.
    """

    params: tuple
    axes: tuple
    loss: np.ndarray
    valid_fraction: np.ndarray
    level: int
    name: str = ""

    def argmin(self) -> tuple:
        """Perturbation values (pixels) at the grid minimum of the loss."""
        idx = np.unravel_index(np.nanargmin(self.loss), self.loss.shape)
        return tuple(float(a[i]) for a, i in zip(self.axes, idx))


def loss_landscape(input_features, template_features, true_corners, params=("tx", "ty"), radius: float = 16.0,
                   steps: int = 17, level: int = 1, template_size=128, name: str = "",
                   batch_size: int = 16, half_pixel_centers: bool = True) -> Landscape:
    """The alignment loss on a grid around the true homography.

    Args:
        input_features, template_features: ``(1, h, w, C)`` maps of one pair at `level`.
        true_corners: ``(4, 2)`` ground truth in the full-resolution input.
        params: one or two names of `PARAMETERS`.
        radius: the grid spans ``[-radius, radius]`` pixels (full resolution) per parameter.
        steps: grid points per parameter (odd: the true H is on the grid).
        level: pyramid level of the features (DLKFM numbering): estimates are scaled by
            ``0.5 ** (level - 1)`` (`deeplk.geometry.scale_homography`).
        template_size: full-resolution template size.
        name: label for the plots.
        batch_size: see `alignment_loss`.
        half_pixel_centers: how the level's coordinates relate to full resolution (True: 2x2
            average pooling; False: stride-2 convolutions on the even pixels, DLKFM's).

    Returns:
        `Landscape`.
    """
    from deeplk.geometry import scale_homography
    from deeplk.viz.sources import level_scale

    params = tuple([params] if isinstance(params, str) else params)
    if len(params) not in (1, 2):
        raise ValueError(f"`params` must name one or two parameters, got {params!r}")
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"`steps` must be >= 2, got {steps!r}")
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"`radius` must be a positive number, got {radius!r}")
    axis = np.linspace(-radius, radius, steps)
    if len(params) == 1:
        values = axis[:, None]
    else:
        a, b = np.meshgrid(axis, axis, indexing="ij")
        values = np.stack([a.ravel(), b.ravel()], axis=1)
    H = perturbed_homographies(true_corners, template_size, params, values)
    s = level_scale(level)
    if s != 1.0:
        H = scale_homography(H, s, bool(half_pixel_centers)).numpy()
    loss, frac = alignment_loss(input_features, template_features, H, batch_size)
    shape = (steps,) * len(params)
    return Landscape(params, (axis,) * len(params), loss.reshape(shape), frac.reshape(shape), int(level), name)


def plot_landscapes(landscapes: Sequence[Landscape], figsize_per_panel=(3.6, 3.2), normalise: bool = True):
    """Several landscapes side by side (e.g. learned features vs intensities).

    2-D landscapes: one filled contour plot each (the true H at the origin marked ``+``, the grid
    minimum ``x``); 1-D landscapes: one panel with all curves. With `normalise`, each loss is
    divided by its maximum so shapes compare across feature scales.
    """
    import matplotlib.pyplot as plt

    landscapes = list(landscapes)
    if not landscapes:
        raise ValueError("`landscapes` is empty")
    dims = {len(ls.params) for ls in landscapes}
    if len(dims) != 1:
        raise ValueError("`landscapes` must all be 1-D or all 2-D")

    def scaled(ls):
        loss = ls.loss
        if normalise:
            top = np.nanmax(loss)
            loss = loss / top if top > 0 else loss
        return loss

    if dims == {1}:
        fig, ax = plt.subplots(figsize=figsize_per_panel)
        for ls in landscapes:
            ax.plot(ls.axes[0], scaled(ls), marker=".", label=f"{ls.name} (level {ls.level})")
        ax.axvline(0.0, color="k", linewidth=0.8)
        ax.set_xlabel(f"{landscapes[0].params[0]} perturbation (px)")
        ax.set_ylabel("alignment loss" + (" / max" if normalise else ""))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig
    n = len(landscapes)
    fig, axes = plt.subplots(1, n, figsize=(figsize_per_panel[0] * n, figsize_per_panel[1]), squeeze=False)
    for ax, ls in zip(axes[0], landscapes):
        a0, a1 = ls.axes
        cs = ax.contourf(a1, a0, scaled(ls), levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, fraction=0.046, pad=0.04)
        ax.plot([0], [0], "+", color="w", markersize=12, mew=2, label="true H")
        m0, m1 = ls.argmin()
        ax.plot([m1], [m0], "x", color="r", markersize=9, mew=2, label="minimum")
        ax.set_xlabel(f"{ls.params[1]} (px)")
        ax.set_ylabel(f"{ls.params[0]} (px)")
        ax.set_title(f"{ls.name}, level {ls.level}", fontsize=9)
        ax.set_aspect("equal")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
