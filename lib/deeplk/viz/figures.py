"""Pictures: samples with the template's outline on the input, overlays, feature-map images.

Two kinds of output:

- Matplotlib figures (`show_samples`, `show_feature_panels`): returned, never shown, so that
  notebooks display them and scripts save them (`save_figure`).
- ``uint8`` RGB arrays (`to_rgb_uint8`, `draw_outline`, `overlay_array`, `feature_grid`): exact
  pixels, used for animation frames and testable pixel by pixel.

Conventions: images ``(H, W, C)`` float in [0, 1] (C = 1 or 3, or ``(H, W)``); corners ``(4, 2)``
``(x, y)`` pixels, TL, TR, BR, BL; ``input_H_template`` maps template pixels to input pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deeplk._checks import check_shape

__all__ = [
    "TRUE_COLOUR",
    "PRED_COLOUR",
    "TRUE_RGB",
    "PRED_RGB",
    "draw_quadrilateral",
    "show_samples",
    "save_figure",
    "to_rgb_uint8",
    "draw_outline",
    "overlay_array",
    "alignment_examples",
    "normalise_map",
    "feature_grid",
    "show_image",
]

TRUE_COLOUR = "#2ca02c"
PRED_COLOUR = "#d62728"
#: The same colours as ``uint8`` RGB triples, for arrays.
TRUE_RGB = (44, 160, 44)
PRED_RGB = (214, 39, 40)


def draw_quadrilateral(ax, corners, colour=TRUE_COLOUR, label=None, linewidth=1.6, linestyle="-"):
    """Draw the closed outline of `corners` ((4, 2) (x, y) pixels, TL, TR, BR, BL) on `ax`."""
    corners = np.asarray(corners, dtype=np.float64)
    check_shape("corners", corners, (4, 2), "(x, y) pixels, TL, TR, BR, BL")
    closed = np.vstack([corners, corners[:1]])
    ax.plot(closed[:, 0], closed[:, 1], color=colour, linewidth=linewidth, linestyle=linestyle, label=label)
    ax.plot(corners[0, 0], corners[0, 1], "o", color=colour, markersize=3)  # marks the top-left corner


def show_image(ax, image, title=None, cmap="gray", vmin=0.0, vmax=1.0) -> None:
    """Show an ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image on `ax` (grey maps with `cmap`),
    without ticks."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
    elif img.ndim == 3 and img.shape[-1] == 3:
        ax.imshow(np.clip(img, 0.0, 1.0) if img.dtype != np.uint8 else img)
    else:
        raise ValueError(f"`image` must have shape (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


def show_samples(inputs, templates, corners, pred_corners=None, titles=None, max_samples=4, figsize_per_sample=(2.6, 4.6)):
    """A figure with one column per sample: the input with the template's outline above the template.

    inputs: (B, Hi, Wi, C) in [0, 1]; templates: (B, Ht, Wt, C); corners: (B, 4, 2) where the
    template's corners land in the input frame; pred_corners: optional (B, 4, 2) predictions drawn
    dashed in red. Grey images (C == 1) are shown in grey.
    """
    import matplotlib.pyplot as plt

    inputs, templates = np.asarray(inputs), np.asarray(templates)
    corners = np.asarray(corners, dtype=np.float64)
    check_shape("inputs", inputs, (None, None, None, None), "(B, H, W, C)")
    batch = inputs.shape[0]
    check_shape("templates", templates, (batch, None, None, None), "(B, H, W, C)")
    check_shape("corners", corners, (batch, 4, 2), "(B, 4, 2)")
    if pred_corners is not None:
        pred_corners = np.asarray(pred_corners, dtype=np.float64)
        check_shape("pred_corners", pred_corners, (batch, 4, 2), "(B, 4, 2)")
    n = min(batch, max_samples)
    if n == 0:
        raise ValueError("show_samples needs at least one sample, got an empty batch")
    fig, axes = plt.subplots(2, n, figsize=(figsize_per_sample[0] * n, figsize_per_sample[1]), squeeze=False,
                             gridspec_kw={"height_ratios": [inputs.shape[1], templates.shape[1]]})
    for i in range(n):
        ax_in, ax_t = axes[0, i], axes[1, i]
        for ax, img in ((ax_in, inputs[i]), (ax_t, templates[i])):
            img = np.clip(img, 0.0, 1.0)
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
        draw_quadrilateral(ax_in, corners[i], TRUE_COLOUR, label="true" if i == 0 else None)
        if pred_corners is not None:
            draw_quadrilateral(ax_in, pred_corners[i], PRED_COLOUR, label="predicted" if i == 0 else None, linestyle="--")
        ax_in.set_xlim(-0.5 - 16, inputs.shape[2] - 0.5 + 16)
        ax_in.set_ylim(inputs.shape[1] - 0.5 + 16, -0.5 - 16)
        ax_in.set_title(titles[i] if titles is not None else f"input #{i}", fontsize=9)
        ax_t.set_title("template", fontsize=9)
    if pred_corners is not None:
        axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=100) -> None:
    """Save `fig` to `path` through a temporary name (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Arrays (exact pixels)
# --------------------------------------------------------------------------------------------


def to_rgb_uint8(image) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image -> ``(H, W, 3)`` ``uint8`` RGB.

    Floating images are read as [0, 1] (clipped, rounded to the nearest level); ``uint8`` images are
    copied; grey images are repeated over the three channels.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"`image` must have shape (H, W), (H, W, 1) or (H, W, 3), got {np.shape(image)}")
    if img.dtype != np.uint8:
        img = np.rint(np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.ascontiguousarray(img)


_SHIFT = 4  # sub-pixel bits of cv2.polylines


def draw_outline(image, corners, colour=TRUE_RGB, thickness: int = 1, scale: int = 1) -> np.ndarray:
    """A copy of `image` (``(H, W, 3)`` ``uint8``) with the closed outline of `corners` drawn.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB (e.g. from `to_rgb_uint8`).
        corners: ``(4, 2)`` ``(x, y)`` pixels of the *unscaled* image, TL, TR, BR, BL. Non-finite
            corners draw nothing (a failed estimate).
        colour: RGB triple.
        thickness: line width in pixels (8-connected lines, no anti-aliasing: exact colours).
        scale: `image` is the original upscaled `scale` times (nearest neighbour); corners are
            mapped to ``x * scale + (scale - 1) / 2`` (pixel centres).

    Returns:
        ``(H, W, 3)`` ``uint8``; the pixel under each (rounded) corner has `colour`.
    """
    import cv2

    img = np.asarray(image)
    check_shape("image", img, (None, None, 3), "H x W x 3 uint8 RGB")
    if img.dtype != np.uint8:
        raise ValueError(f"`image` must be uint8 (see to_rgb_uint8), got {img.dtype}")
    corners = np.asarray(corners, dtype=np.float64)
    check_shape("corners", corners, (4, 2), "(x, y) pixels, TL, TR, BR, BL")
    out = img.copy()
    if not np.all(np.isfinite(corners)):
        return out
    pts = corners * scale + (scale - 1) / 2.0
    # Keep the fixed-point coordinates in cv2's int range for estimates far outside.
    pts = np.clip(pts, -1e5, 1e5)
    pts = np.rint(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(out, [pts], isClosed=True, color=tuple(int(c) for c in colour),
                  thickness=int(thickness), lineType=cv2.LINE_8, shift=_SHIFT)
    return out


def overlay_array(input_image, template_image, input_H_template, true_corners=None,
                  pred_corners=None, alpha: float = 0.5, scale: int = 1,
                  thickness: int = 1) -> np.ndarray:
    """The template warped into the input frame by `input_H_template`, blended over the input.

    Inside the template's footprint a pixel is ``alpha * template + (1 - alpha) * input``
    (bilinear warp, ``cv2.warpPerspective``), elsewhere the input; then the true outline (green)
    and the predicted one (red) are drawn. A good estimate gives a sharp blend, a bad one ghosts.

    Args:
        input_image: ``(Hi, Wi, C)`` in [0, 1] (C = 1 or 3).
        template_image: ``(h, w, C)`` in [0, 1], same C.
        input_H_template: ``(3, 3)`` template pixels -> input pixels (e.g. the estimate).
        true_corners, pred_corners: optional ``(4, 2)`` outlines in the input frame.
        alpha: weight of the template in the blend.
        scale: integer upscaling of the result (nearest neighbour), for animations.
        thickness: width in pixels of the predicted outline (the true one is 2 pixels wider, drawn
            first).

    Returns:
        ``(Hi * scale, Wi * scale, 3)`` ``uint8`` RGB.
    """
    import cv2

    inp = np.asarray(input_image, dtype=np.float32)
    tmpl = np.asarray(template_image, dtype=np.float32)
    if inp.ndim == 2:
        inp = inp[..., None]
    if tmpl.ndim == 2:
        tmpl = tmpl[..., None]
    check_shape("input_image", inp, (None, None, None), "Hi x Wi x C")
    check_shape("template_image", tmpl, (None, None, inp.shape[-1]), "h x w x C, C of the input")
    H = np.asarray(input_H_template, dtype=np.float64)
    check_shape("input_H_template", H, (3, 3), "3 x 3 template -> input homography")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha!r}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"`scale` must be a positive integer, got {scale!r}")
    hi, wi = inp.shape[:2]
    base = inp.copy()
    if np.all(np.isfinite(H)):
        warped = cv2.warpPerspective(tmpl, H, (wi, hi), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inside = cv2.warpPerspective(np.ones(tmpl.shape[:2], np.float32), H, (wi, hi),
                                     flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=0)
        warped = warped.reshape(hi, wi, -1)
        m = (inside > 0.5)[..., None]
        base = np.where(m, alpha * warped + (1.0 - alpha) * inp, inp)
    out = to_rgb_uint8(base)
    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    # The true outline is drawn wider, below the prediction: both stay visible when they agree.
    for corners, colour, width in ((true_corners, TRUE_RGB, thickness + 2), (pred_corners, PRED_RGB, thickness)):
        if corners is not None:
            out = draw_outline(out, corners, colour, thickness=width, scale=scale)
    return out


def alignment_examples(inputs, templates, true_corners, predictions, max_samples: int = 4,
                       titles=None):
    """A figure of aligned samples, one column each: the template, then for every method the
    template warped into the input by the method's estimate and blended over it
    (`overlay_array`), with the true (green) and predicted (red) outlines.

    Args:
        inputs: ``(B, Hi, Wi, C)`` in [0, 1]; templates: ``(B, h, w, C)``.
        true_corners: ``(B, 4, 2)`` where the template's corners truly land.
        predictions: ``{method: (B, 4, 2)}`` estimated corners (NaN where the method failed:
            the input is shown without a blend or red outline).
        max_samples: columns at most.
        titles: optional column titles (default ``#i``).

    Returns:
        The matplotlib figure (``1 + len(predictions)`` rows).
    """
    import matplotlib.pyplot as plt

    from deeplk.geometry_np import corners_to_homography

    inputs, templates = np.asarray(inputs, np.float32), np.asarray(templates, np.float32)
    true_corners = np.asarray(true_corners, np.float64)
    check_shape("inputs", inputs, (None, None, None, None), "(B, H, W, C)")
    batch = inputs.shape[0]
    check_shape("templates", templates, (batch, None, None, inputs.shape[-1]), "(B, h, w, C), C of the inputs")
    check_shape("true_corners", true_corners, (batch, 4, 2), "(B, 4, 2)")
    if not predictions:
        raise ValueError("`predictions` is empty: give at least one method's (B, 4, 2) corners")
    preds = {}
    for name, c in predictions.items():
        c = np.asarray(c, np.float64)
        check_shape(f"predictions[{name!r}]", c, (batch, 4, 2), "(B, 4, 2)")
        preds[name] = c
    n = min(batch, int(max_samples))
    if n < 1:
        raise ValueError(f"nothing to show: {batch} samples, max_samples={max_samples!r}")
    size = templates.shape[1:3]
    fig, axes = plt.subplots(1 + len(preds), n, figsize=(2.3 * n, 2.3 * (1 + len(preds))), squeeze=False)
    for i in range(n):
        show_image(axes[0, i], templates[i], titles[i] if titles is not None else f"#{i}: template")
        for row, (name, c) in enumerate(preds.items(), start=1):
            ok = np.all(np.isfinite(c[i]))
            H = corners_to_homography(c[i], size) if ok else np.full((3, 3), np.nan)
            image = overlay_array(inputs[i], templates[i], H, true_corners=true_corners[i],
                                  pred_corners=c[i] if ok else None)
            pe = float(np.linalg.norm(c[i] - true_corners[i], axis=-1).mean()) if ok else float("nan")
            show_image(axes[row, i], image, f"{name}: {pe:.1f} px" if ok else f"{name}: failed")
    fig.tight_layout()
    return fig


def normalise_map(fmap, percentiles=(1.0, 99.0)) -> np.ndarray:
    """A 2-D map scaled to [0, 1] between two percentiles (robust to outliers), float32.

    A constant (or all non-finite) map gives zeros; non-finite values become 0.
    """
    m = np.asarray(fmap, dtype=np.float64)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    check_shape("fmap", m, (None, None), "H x W map")
    finite = np.isfinite(m)
    if not finite.any():
        return np.zeros(m.shape, np.float32)
    lo, hi = np.percentile(m[finite], percentiles)
    if not hi > lo:
        return np.zeros(m.shape, np.float32)
    out = np.clip((np.where(finite, m, lo) - lo) / (hi - lo), 0.0, 1.0)
    return out.astype(np.float32)


def feature_grid(features, max_channels: int = 16, columns: int = 4, pad: int = 1,
                 percentiles=(1.0, 99.0)) -> np.ndarray:
    """The first channels of a feature map tiled in a grid, each normalised on its own.

    Args:
        features: ``(h, w, C)`` feature map.
        max_channels: channels shown (the first ones).
        columns: tiles per row.
        pad: pixels between tiles (value 1, white).
        percentiles: per-channel normalisation (`normalise_map`).

    Returns:
        ``(rows * (h + pad) - pad, cols * (w + pad) - pad)`` float32 in [0, 1], with
        ``cols = min(columns, n)``, ``rows = ceil(n / cols)``, ``n = min(C, max_channels)``;
        channel ``k`` at tile ``(k // cols, k % cols)``; unused tiles are 1.
    """
    f = np.asarray(features)
    check_shape("features", f, (None, None, None), "h x w x C feature map")
    h, w, c = f.shape
    n = min(c, int(max_channels))
    if n < 1:
        raise ValueError(f"`features` must have at least one channel and `max_channels` >= 1, got C={c}, max_channels={max_channels}")
    cols = min(int(columns), n)
    rows = -(-n // cols)
    grid = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad), np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        grid[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = normalise_map(f[..., k], percentiles)
    return grid
