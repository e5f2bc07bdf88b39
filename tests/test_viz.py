"""Figures: shapes are checked, outlines land where the corners are, files are written whole."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from deeplk import viz


def _batch(n=3):
    rng = np.random.default_rng(0)
    corners = np.tile(np.array([[32, 32], [159, 32], [159, 159], [32, 159]], float), (n, 1, 1))
    return rng.random((n, 192, 192, 3)), rng.random((n, 128, 128, 3)), corners


def test_show_samples_draws_true_and_predicted_outlines():
    inputs, templates, corners = _batch()
    fig = viz.show_samples(inputs, templates, corners, pred_corners=corners + 2, max_samples=2)
    axes = fig.axes
    assert len(axes) == 4  # 2 samples x (input, template)
    lines = [ln for ln in axes[0].get_lines() if len(ln.get_xdata()) == 5]
    assert len(lines) == 2  # closed true and predicted outlines
    np.testing.assert_allclose(lines[0].get_xdata(), [32, 159, 159, 32, 32])
    np.testing.assert_allclose(lines[1].get_ydata(), [34, 34, 161, 161, 34])


def test_show_samples_grey_images():
    inputs, templates, corners = _batch(1)
    fig = viz.show_samples(inputs[..., :1], templates[..., :1], corners)
    assert fig.axes[0].images[0].get_cmap().name == "gray"


def test_show_samples_bad_shapes():
    inputs, templates, corners = _batch()
    with pytest.raises(ValueError, match="corners"):
        viz.show_samples(inputs, templates, corners[:, :3])
    with pytest.raises(ValueError, match="templates"):
        viz.show_samples(inputs, templates[:2], corners)
    with pytest.raises(ValueError, match="pred_corners"):
        viz.show_samples(inputs, templates, corners, pred_corners=corners[:1])


def test_save_figure_is_atomic(tmp_path):
    inputs, templates, corners = _batch(1)
    path = tmp_path / "sub" / "fig.png"
    viz.save_figure(viz.show_samples(inputs, templates, corners), path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["fig.png"]
