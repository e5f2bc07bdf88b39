"""Synthetic second modalities: structure kept, intensities changed (for `demo_multimodal`).

Both renderers take and return (H, W, 3) uint8 RGB images of the same size, and keep the scene
geometry pixel for pixel, so an aligned photo/rendering pair behaves like the map/satellite or
cross-season pairs of the paper: edges and shapes coincide, intensities do not (their normalised
cross-correlation with the photo is low or negative), so intensity-based matching fails.

- ``"map"``: a map-like render. Edge-preserving smoothing (OpenCV's recursive filter), then
  quantisation of the smoothed luminance into `levels` bands by the image's own quantiles, each
  band painted a flat colour from a map palette whose brightness order is scrambled on purpose
  (dark regions can become light fills and vice versa), then dark outlines on the band
  boundaries and on strong edges.
- ``"season"``: a cross-season look. A per-channel nonlinear, inverting tone curve
  ``out = lo + (hi - lo) * (1 - x ** gamma) ** (1 / gamma2)`` (x the channel in [0, 1]) with a
  strong colour cast (winter blue-white or autumn orange-brown, parameters drawn from a random
  generator or fixed defaults), plus a light blur.
"""

from __future__ import annotations

import cv2
import numpy as np

from .._checks import check_shape

#: Names accepted by `render_modality`.
MODALITY_STYLES = ("map", "season")

#: Map palette (RGB), index = luminance band from darkest to lightest: scrambled brightness.
MAP_PALETTE = np.array(
    [
        [242, 239, 233],  # darkest band -> light beige land
        [170, 211, 223],  # -> water blue
        [255, 255, 255],  # -> white roads
        [200, 222, 170],  # -> park green
        [214, 208, 200],  # -> grey buildings
        [246, 226, 170],  # lightest band -> yellow major-road fill
    ],
    dtype=np.uint8,
)
#: Colour of outlines in the map style (RGB).
MAP_EDGE_COLOUR = np.array([90, 90, 100], dtype=np.uint8)


def _check_rgb(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    check_shape(name, image, (None, None, 3), "RGB image")
    if image.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8, got {image.dtype}")
    return image


def render_map(image: np.ndarray, levels: int = 6, edge_threshold: float = 60.0) -> np.ndarray:
    """Render a photograph as a flat-coloured map with dark outlines.

    Args:
        image: (H, W, 3) uint8 RGB.
        levels: number of flat colours (2..6, taken from `MAP_PALETTE`).
        edge_threshold: Canny's upper threshold on the smoothed image (the lower is half).

    Returns:
        (H, W, 3) uint8 RGB, same geometry as `image`.
    """
    image = _check_rgb("image", image)
    if not 2 <= levels <= len(MAP_PALETTE):
        raise ValueError(f"`levels` must be in [2, {len(MAP_PALETTE)}], got {levels}")
    smooth = cv2.edgePreservingFilter(image, flags=cv2.RECURS_FILTER, sigma_s=20, sigma_r=0.25)
    grey = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY)
    qs = np.quantile(grey, np.linspace(0, 1, levels + 1)[1:-1])
    band = np.searchsorted(qs, grey, side="right").astype(np.uint8)
    band = cv2.medianBlur(band, 5)
    palette = MAP_PALETTE[np.linspace(0, len(MAP_PALETTE) - 1, levels).round().astype(int)]
    out = palette[band]
    boundaries = cv2.morphologyEx(band, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) > 0
    edges = cv2.Canny(grey, edge_threshold / 2, edge_threshold) > 0
    out[boundaries | edges] = MAP_EDGE_COLOUR
    return out


def season_parameters(rng: np.random.Generator | None = None) -> dict:
    """Parameters of the season tone curve: fixed defaults, or drawn from `rng`.

    Returns ``{"lo": (3,), "hi": (3,), "gamma": (3,), "gamma2": (3,), "blur": float}``.
    """
    if rng is None:
        return {
            "lo": np.array([0.30, 0.22, 0.10]),
            "hi": np.array([1.00, 0.80, 0.45]),
            "gamma": np.array([1.6, 1.0, 0.7]),
            "gamma2": np.array([1.0, 1.4, 2.0]),
            "blur": 0.8,
        }
    if rng.random() < 0.5:  # winter: cold blue-white
        lo = rng.uniform([0.05, 0.12, 0.25], [0.15, 0.25, 0.40])
        hi = rng.uniform([0.80, 0.88, 0.95], [0.92, 0.97, 1.00])
    else:  # autumn: warm orange-brown
        lo = rng.uniform([0.10, 0.02, 0.00], [0.25, 0.10, 0.05])
        hi = rng.uniform([0.90, 0.60, 0.25], [1.00, 0.80, 0.45])
    return {
        "lo": lo,
        "hi": hi,
        "gamma": rng.uniform(0.6, 1.8, size=3),
        "gamma2": rng.uniform(0.7, 2.0, size=3),
        "blur": float(rng.uniform(0.5, 1.2)),
    }


def season_lut(params: dict) -> np.ndarray:
    """(256, 3) uint8 look-up table of the season tone curve, one column per channel."""
    x = np.linspace(0.0, 1.0, 256)[:, None]
    inv = np.clip(1.0 - x ** params["gamma"], 0.0, 1.0) ** (1.0 / params["gamma2"])
    y = params["lo"] + (params["hi"] - params["lo"]) * inv
    return np.clip(np.round(255.0 * y), 0, 255).astype(np.uint8)


def render_season(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render a photograph in another "season": inverted, nonlinear per-channel tones.

    Args:
        image: (H, W, 3) uint8 RGB.
        rng: draws the curve parameters (`season_parameters`); None uses fixed defaults.

    Returns:
        (H, W, 3) uint8 RGB, same geometry as `image`.
    """
    image = _check_rgb("image", image)
    params = season_parameters(rng)
    lut = season_lut(params)
    out = np.empty_like(image)
    for c in range(3):
        out[..., c] = cv2.LUT(image[..., c], lut[:, c])
    return cv2.GaussianBlur(out, (0, 0), params["blur"])


def render_modality(
    image: np.ndarray, style: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render `image` ((H, W, 3) uint8 RGB) in the modality `style` (see `MODALITY_STYLES`).

    `rng` randomises the season curve; the map style is deterministic.
    """
    if style == "map":
        return render_map(image)
    if style == "season":
        return render_season(image, rng)
    raise ValueError(f"`style` must be one of {MODALITY_STYLES}, got {style!r}")
