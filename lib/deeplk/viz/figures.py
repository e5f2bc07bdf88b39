"""Pictures: samples with the template's outline on the input, overlays and grids.

Figures are returned (never shown) so that notebooks display them and scripts save them.
"""

from __future__ import annotations

import numpy as np

from deeplk._checks import check_shape

__all__ = ["draw_quadrilateral", "show_samples", "save_figure"]

TRUE_COLOUR = "#2ca02c"
PRED_COLOUR = "#d62728"


def draw_quadrilateral(ax, corners, colour=TRUE_COLOUR, label=None, linewidth=1.6, linestyle="-"):
    """Draw the closed outline of `corners` ((4, 2) (x, y) pixels, TL, TR, BR, BL) on `ax`."""
    corners = np.asarray(corners, dtype=np.float64)
    check_shape("corners", corners, (4, 2), "(x, y) pixels, TL, TR, BR, BL")
    closed = np.vstack([corners, corners[:1]])
    ax.plot(closed[:, 0], closed[:, 1], color=colour, linewidth=linewidth, linestyle=linestyle, label=label)
    ax.plot(corners[0, 0], corners[0, 1], "o", color=colour, markersize=3)  # marks the top-left corner


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
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
