"""deeplk.data.modality: renderings keep structure (edges, gradient orientation) but not
intensities (normalised cross-correlation with the photo is low or negative)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from deeplk.data import modality as M
from deeplk.data.demo import demo_base_image

PHOTOS = ["astronaut", "coffee", "camera", "brick", "rocket"]


def _grey(img):
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)


def ncc(a, b):
    a, b = _grey(a).ravel(), _grey(b).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def orientation_agreement(a, b, quantile=0.8):
    """Mean |cos| of the angle between gradients where both are strong (orientation mod pi).
    Unrelated images score about 2 / pi = 0.64, identical structure 1."""
    ga, gb = _grey(a), _grey(b)
    ax, ay = cv2.Sobel(ga, cv2.CV_64F, 1, 0), cv2.Sobel(ga, cv2.CV_64F, 0, 1)
    bx, by = cv2.Sobel(gb, cv2.CV_64F, 1, 0), cv2.Sobel(gb, cv2.CV_64F, 0, 1)
    ma, mb = np.hypot(ax, ay), np.hypot(bx, by)
    strong = (ma > np.quantile(ma, quantile)) & (mb > np.quantile(mb, quantile))
    cos = np.abs(ax * bx + ay * by) / (ma * mb + 1e-12)
    return float(cos[strong].mean())


@pytest.fixture(scope="module")
def photos():
    return {n: demo_base_image(n) for n in PHOTOS}


@pytest.mark.parametrize("style", M.MODALITY_STYLES)
def test_shape_dtype_and_determinism(photos, style):
    img = photos["astronaut"]
    out = M.render_modality(img, style, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    again = M.render_modality(img, style, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("style", M.MODALITY_STYLES)
def test_structure_kept_intensity_changed(photos, style):
    for name, img in photos.items():
        out = M.render_modality(img, style, np.random.default_rng(1))
        assert ncc(img, out) < 0.35, (name, style, ncc(img, out))
        assert orientation_agreement(img, out) > 0.75, (name, style)


def test_control_unrelated_images_disagree(photos):
    a, b = photos["astronaut"][:256, :256], photos["brick"][:256, :256]
    assert orientation_agreement(a, b) < 0.72


def test_season_inverts_and_shifts_colour(photos):
    img = photos["coffee"]
    out = M.render_season(img)
    assert ncc(img, out) < -0.5
    # strong colour cast: channel means differ much more than in the photo
    assert np.ptp(out.reshape(-1, 3).mean(0)) > 50


def test_season_random_parameters_vary(photos):
    img = photos["camera"]
    a = M.render_season(img, np.random.default_rng(1))
    b = M.render_season(img, np.random.default_rng(2))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_map_is_flat_palette_with_dark_edges(photos):
    out = M.render_map(photos["astronaut"])
    colours = np.unique(out.reshape(-1, 3), axis=0)
    allowed = np.concatenate([M.MAP_PALETTE, M.MAP_EDGE_COLOUR[None]])
    assert len(colours) <= len(allowed)
    assert all((allowed == c).all(1).any() for c in colours)
    assert (out == M.MAP_EDGE_COLOUR).all(-1).mean() > 0.02


def test_errors():
    with pytest.raises(ValueError, match="style"):
        M.render_modality(np.zeros((8, 8, 3), np.uint8), "winter")
    with pytest.raises(ValueError, match="image"):
        M.render_map(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        M.render_season(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="levels"):
        M.render_map(np.zeros((8, 8, 3), np.uint8), levels=9)
