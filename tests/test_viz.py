"""Figures: shapes are checked, outlines land where the corners are, files are written whole."""

import matplotlib

matplotlib.use("Agg")

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from deeplk import viz
from deeplk.geometry import centred_homography


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


# ----------------------------------------------------------------------------------------------
# Exact arrays: outlines, overlays, feature grids
# ----------------------------------------------------------------------------------------------

SQUARE = np.array([[10, 12], [40, 12], [40, 50], [10, 50]], float)


def test_to_rgb_uint8():
    grey = np.array([[0.0, 0.5], [1.2, -1.0]])
    out = viz.to_rgb_uint8(grey)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 128], [255, 0]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    rgb = np.zeros((2, 2, 3), np.uint8) + 7
    np.testing.assert_array_equal(viz.to_rgb_uint8(rgb), rgb)
    with pytest.raises(ValueError, match="image"):
        viz.to_rgb_uint8(np.zeros((2, 2, 2)))


def test_draw_outline_hits_the_corners_and_nothing_far_away():
    img = np.zeros((64, 64, 3), np.uint8)
    out = viz.draw_outline(img, SQUARE, colour=(1, 2, 3))
    assert img.sum() == 0  # a copy
    for x, y in SQUARE.astype(int):
        assert tuple(out[y, x]) == (1, 2, 3)
    assert tuple(out[12, 25]) == (1, 2, 3)  # on the top edge
    assert tuple(out[30, 25]) == (0, 0, 0)  # inside
    assert tuple(out[5, 5]) == (0, 0, 0)  # outside
    # Scale 3: corner (x, y) lands on pixel (3x + 1, 3y + 1).
    big = viz.draw_outline(np.zeros((192, 192, 3), np.uint8), SQUARE, colour=(9, 9, 9), scale=3)
    for x, y in SQUARE.astype(int):
        assert tuple(big[3 * y + 1, 3 * x + 1]) == (9, 9, 9)
    # A failed estimate (NaN) draws nothing.
    assert viz.draw_outline(img, np.full((4, 2), np.nan)).sum() == 0


def test_draw_outline_bad_arguments():
    with pytest.raises(ValueError, match="corners"):
        viz.draw_outline(np.zeros((8, 8, 3), np.uint8), SQUARE[:3])
    with pytest.raises(ValueError, match="uint8"):
        viz.draw_outline(np.zeros((8, 8, 3)), SQUARE)


def test_overlay_array_blends_the_warped_template_inside_its_footprint():
    rng = np.random.default_rng(1)
    inp = rng.random((48, 48, 3)).astype(np.float32)
    tmpl = rng.random((16, 16, 3)).astype(np.float32)
    H = np.array([[1, 0, 20], [0, 1, 10], [0, 0, 1]], float)  # template pixel (x, y) -> (x + 20, y + 10)
    true = np.array([[20, 10], [35, 10], [35, 25], [20, 25]], float)
    pred = true + [2, 30]  # a different, non-overlapping outline lower down
    pred[:, 1] = np.clip(pred[:, 1], 0, 47)
    out = viz.overlay_array(inp, tmpl, H, true_corners=true, pred_corners=pred, alpha=0.25)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    expected = np.rint(np.clip(0.25 * tmpl[5, 7] + 0.75 * inp[15, 27], 0, 1) * 255)
    np.testing.assert_allclose(out[15, 27], expected, atol=1)  # inside: template pixel (7, 5)
    np.testing.assert_allclose(out[3, 3], np.rint(inp[3, 3] * 255), atol=1)  # outside: the input
    assert tuple(out[10, 20]) == viz.TRUE_RGB
    assert tuple(out[25, 35]) == viz.TRUE_RGB
    assert tuple(out[int(pred[3, 1]), int(pred[3, 0])]) == viz.PRED_RGB
    up = viz.overlay_array(inp, tmpl, H, scale=2)
    assert up.shape == (96, 96, 3)
    np.testing.assert_array_equal(up[::2, ::2], viz.overlay_array(inp, tmpl, H))


def test_overlay_array_bad_arguments():
    inp, tmpl = np.zeros((8, 8, 3)), np.zeros((4, 4, 1))
    with pytest.raises(ValueError, match="template_image"):
        viz.overlay_array(inp, tmpl, np.eye(3))
    with pytest.raises(ValueError, match="input_H_template"):
        viz.overlay_array(inp, np.zeros((4, 4, 3)), np.eye(2))


def test_normalise_map_and_feature_grid():
    ramp = np.arange(20, dtype=float).reshape(4, 5)
    n = viz.normalise_map(ramp, percentiles=(0, 100))
    np.testing.assert_allclose(n, ramp / 19, atol=1e-6)
    assert np.all(viz.normalise_map(np.ones((3, 3))) == 0)
    f = np.random.default_rng(0).random((6, 5, 7))
    grid = viz.feature_grid(f, max_channels=5, columns=3, pad=1, percentiles=(0, 100))
    assert grid.shape == (2 * 7 - 1, 3 * 6 - 1)
    for k in range(5):  # channel k at tile (k // 3, k % 3)
        r, q = divmod(k, 3)
        np.testing.assert_allclose(grid[r * 7:r * 7 + 6, q * 6:q * 6 + 5], viz.normalise_map(f[..., k], (0, 100)))
    assert np.all(grid[7:, 12:] == 1)  # the unused sixth tile
    with pytest.raises(ValueError, match="features"):
        viz.feature_grid(f[..., 0])


# ----------------------------------------------------------------------------------------------
# Feature sources
# ----------------------------------------------------------------------------------------------


def _textured(size, seed=0, sigma=2.0):
    """A smooth random RGB texture in [0, 1] (blurred noise: LK has a basin of a few pixels)."""
    import cv2

    img = cv2.GaussianBlur(np.random.default_rng(seed).random((size, size, 3)).astype(np.float32), (0, 0), sigma)
    return (img - img.min()) / (img.max() - img.min())


def _warp_template(inp, corners, size):
    """The template whose corners land at `corners` in `inp` (OpenCV, independent of deeplk)."""
    import cv2

    src = np.float32([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]])
    H = cv2.getPerspectiveTransform(src, np.float32(corners))
    return cv2.warpPerspective(inp, H, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP), H


def test_intensity_source_is_the_luma_pyramid():
    import tensorflow as tf

    from deeplk import lk

    img = _textured(32)[None]
    src = viz.intensity_source()
    grey = src(img, 1, "input")
    np.testing.assert_allclose(grey, lk.to_greyscale(tf.constant(img)).numpy(), atol=1e-6)
    lvl3 = src(img, 3, "template")
    assert lvl3.shape == (1, 8, 8, 1)
    manual = grey[0, :, :, 0].reshape(8, 4, 8, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(lvl3[0, ..., 0], manual, atol=1e-6)
    assert [p.shape[1] for p in src.pyramid(img, "input")] == [8, 16, 32]  # coarsest first


def test_feature_source_checks():
    src = viz.intensity_source(levels=(1, 2))
    img = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="level"):
        src(img, 3, "input")
    with pytest.raises(ValueError, match="branch"):
        src(img, 1, "left")
    with pytest.raises(ValueError, match="images"):
        src(img[..., :1], 1, "input")
    bad = viz.FeatureSource("bad", lambda images, level, branch: images[:, ::3, ::3], levels=(1, 2))
    with pytest.raises(ValueError, match="size"):
        bad(img, 2, "input")


def test_untrained_source_shapes_branches_and_seed():
    src = viz.untrained_source(channels=4, seed=3)
    assert not src.trained and "untrained" in src.label
    img = _textured(32)[None]
    maps = [src(img, level, "input") for level in (1, 2, 3)]
    assert [m.shape for m in maps] == [(1, 32, 32, 4), (1, 16, 16, 4), (1, 8, 8, 4)]
    assert not np.allclose(src(img, 1, "template"), maps[0])  # separate weights per branch
    np.testing.assert_allclose(viz.untrained_source(channels=4, seed=3)(img, 2, "input"), maps[1], atol=1e-6)


def test_channel_map_views():
    from deeplk.features import special_feature_map

    f = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(viz.channel_map(f, 2), f[..., 2])
    np.testing.assert_allclose(viz.channel_map(f, "mean"), np.abs(f).mean(-1), rtol=1e-6)
    np.testing.assert_allclose(viz.channel_map(f, "special"), special_feature_map(f[None]).numpy()[0, ..., 0])
    for bad in (5, -1, "max"):
        with pytest.raises(ValueError, match="channel"):
            viz.channel_map(f, bad)


# ----------------------------------------------------------------------------------------------
# LK playback and animations
# ----------------------------------------------------------------------------------------------

#: A small pair for the LK tests: 64 input, 32 template, two levels (64/32, 32/16).
PAIR_CORNERS = np.array([[17, 14], [47, 17], [49, 47], [15, 46]], float)


@pytest.fixture(scope="module")
def small_pair():
    inp = _textured(64, seed=5, sigma=2.5)
    tmpl, _ = _warp_template(inp, PAIR_CORNERS, 32)
    return inp, tmpl


@pytest.fixture(scope="module")
def small_playback(small_pair):
    inp, tmpl = small_pair
    src = viz.intensity_source(levels=(1, 2))
    ip, tp = src.pyramid(inp[None], "input"), src.pyramid(tmpl[None], "template")
    pb = viz.trace_pyramid_lk(ip, tp, None, PAIR_CORNERS, max_iterations=(20, 10))
    return ip, tp, pb


def _numpy_corner_errors(H, true_corners, size):
    src = np.array([[0, 0, 1], [size - 1, 0, 1], [size - 1, size - 1, 1], [0, size - 1, 1]], float)
    errors = []
    for h in H:
        p = src @ h.T
        p = p[:, :2] / p[:, 2:]
        errors.append(np.mean(np.sqrt(((p - true_corners) ** 2).sum(axis=1))))
    return np.array(errors)


def test_trace_matches_pyramid_lucas_kanade(small_playback):
    from deeplk import lk

    ip, tp, pb = small_playback
    ref = lk.pyramid_lucas_kanade(ip, tp, centred_homography(64, 32, 1), max_iterations=(20, 10),
                                  return_history=True, jit_compile=False)
    history = ref.history.numpy()[:, 0]
    # Same frames: every level's initial guess and one frame per update.
    assert len(pb) == history.shape[0] == int(ref.iterations.numpy()[0]) + 2
    np.testing.assert_allclose(pb.H, history, atol=1e-3)
    np.testing.assert_allclose(pb.H[-1], ref.H.numpy()[0], atol=1e-3)
    # Level labels: coarsest (2) first, iterations restart at 0 on each level.
    k = int(np.argmax(pb.levels == 1))
    assert set(pb.levels[:k]) == {2} and set(pb.levels[k:]) == {1}
    np.testing.assert_array_equal(pb.iterations[:k], np.arange(k))
    np.testing.assert_array_equal(pb.iterations[k:], np.arange(len(pb) - k))
    assert not pb.failed and pb.converged


def test_playback_errors_match_an_independent_computation(small_playback):
    _, _, pb = small_playback
    errors = _numpy_corner_errors(pb.H, PAIR_CORNERS, 32)
    np.testing.assert_allclose(pb.errors, errors, rtol=1e-9)
    assert errors[0] > 1.5 and errors[-1] < 0.05  # LK converged on a mono-modal pair
    assert "level 2 iteration 0" in pb.caption(0) and f"PE {errors[0]:.2f} px" in pb.caption(0)


def test_playback_from_history_levels_and_checks():
    rng = np.random.default_rng(0)
    H = np.tile(np.eye(3), (5, 2, 1, 1)) + np.concatenate([rng.normal(scale=0.01, size=(5, 2, 2, 3)),
                                                           np.zeros((5, 2, 1, 3))], axis=2)
    true = np.array([[0, 0], [9, 0], [9, 9], [0, 9]], float)
    pb = viz.playback_from_history(H, 10, true, level_lengths=[3, 2], sample=1)
    np.testing.assert_array_equal(pb.levels, [2, 2, 2, 1, 1])
    np.testing.assert_array_equal(pb.iterations, [0, 1, 2, 0, 1])
    np.testing.assert_allclose(pb.errors, _numpy_corner_errors(H[:, 1], true, 10))
    assert viz.playback_from_history(H[:, 0], 10).errors is None
    with pytest.raises(ValueError, match="level_lengths"):
        viz.playback_from_history(H, 10, level_lengths=[3, 3])
    with pytest.raises(ValueError, match="sample"):
        viz.playback_from_history(H, 10, sample=2)
    with pytest.raises(ValueError, match="history"):
        viz.playback_from_history(H[..., :2], 10)


def test_playback_frames_and_gif(small_pair, small_playback, tmp_path):
    from PIL import Image, ImageSequence

    inp, tmpl = small_pair
    _, _, pb = small_playback
    frames = viz.playback_frames(inp, tmpl, pb, scale=2, title="intensity")
    assert len(frames) == len(pb)
    assert all(f.shape == (64 * 2 + 22, 128, 3) and f.dtype == np.uint8 for f in frames)
    # The last estimate sits on the truth: the red corner pixel of the last frame (scale 2).
    x, y = np.rint(pb.corners[-1][1]).astype(int)
    assert tuple(frames[-1][2 * y + 1, 2 * x + 1]) == viz.PRED_RGB
    path = tmp_path / "anim" / "lk.gif"
    out = viz.save_animation(frames, path, fps=5, mp4=False)
    assert out == {"gif": path, "mp4": None, "frames": len(pb)}
    with Image.open(path) as im:
        assert im.n_frames == len(pb)
        assert im.info["duration"] == 200 and im.info["loop"] == 0
        first = np.asarray(next(iter(ImageSequence.Iterator(im))).convert("RGB"))
    assert first.shape == frames[0].shape
    assert np.abs(first.astype(int) - frames[0]).mean() < 8  # GIF palette quantisation only
    assert sorted(p.name for p in path.parent.iterdir()) == ["lk.gif"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_save_animation_is_atomic_on_failure(tmp_path, monkeypatch):
    from PIL import Image

    frames = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)]
    path = tmp_path / "a.gif"
    viz.save_animation(frames, path, mp4=False)
    before = path.read_bytes()

    def broken(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"GIF89a partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        viz.save_animation(frames[::-1], path, mp4=False)
    assert path.read_bytes() == before  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]


def test_save_animation_checks(tmp_path, monkeypatch):
    frames = [np.zeros((4, 4, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match="gif"):
        viz.save_animation(frames, tmp_path / "a.png")
    with pytest.raises(ValueError, match="frames"):
        viz.save_animation([frames[0], np.zeros((5, 4, 3), np.uint8)], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="frames"):
        viz.save_animation([], tmp_path / "a.gif")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="ffmpeg"):
        viz.save_animation(frames, tmp_path / "b.gif", mp4=True)
    assert viz.save_animation(frames, tmp_path / "c.gif")["mp4"] is None  # auto: no ffmpeg, GIF only


def test_save_animation_pipes_frames_to_ffmpeg(tmp_path, monkeypatch):
    """With ffmpeg on the PATH the MP4 is written through a temporary name; a stand-in ffmpeg
    records its arguments and the raw frames it receives."""
    import stat

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nfor a; do last=$a; done\necho \"$@\" > \"$last.args\"\ncat > \"$last\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    frames = [np.full((5, 6, 3), k, np.uint8) for k in range(3)]  # odd height: padded to 6
    out = viz.save_animation(frames, tmp_path / "out" / "lk.gif", fps=2)
    mp4 = tmp_path / "out" / "lk.mp4"
    assert out["mp4"] == mp4
    raw = np.frombuffer(mp4.read_bytes(), np.uint8).reshape(3, 6, 6, 3)
    np.testing.assert_array_equal(raw[:, :5], np.stack(frames))
    assert np.all(raw[:, 5] == 255)
    args = next((tmp_path / "out").glob("*.args")).read_text()
    assert "-s 6x6" in args and "-r 2" in args and "yuv420p" in args
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".args", ".gif", ".mp4"]


# ----------------------------------------------------------------------------------------------
# Loss landscapes
# ----------------------------------------------------------------------------------------------


def _numpy_bilinear(img, x, y):
    """Bilinear sample of ``img`` (H, W) at (x, y), zero outside; valid where inside [0, W-1] x [0, H-1]."""
    h, w = img.shape
    pad = np.pad(img, 1)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    xi, yi = x0.astype(int) + 1, y0.astype(int) + 1
    ok = (xi >= 0) & (xi < w + 1) & (yi >= 0) & (yi < h + 1)
    xi, yi = np.clip(xi, 0, w), np.clip(yi, 0, h)
    v = ((1 - fx) * (1 - fy) * pad[yi, xi] + fx * (1 - fy) * pad[yi, xi + 1]
         + (1 - fx) * fy * pad[yi + 1, xi] + fx * fy * pad[yi + 1, xi + 1])
    v = np.where(ok, v, 0.0)
    valid = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return v, valid


def _numpy_loss_H(inp_grey, tmpl_grey, H):
    """Masked MSE of the template against the input warped by ``H`` (NumPy sampling): the
    reference for `alignment_loss`."""
    h, w = tmpl_grey.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    uvw = np.stack([xs, ys, np.ones_like(xs)], -1) @ H.T
    v, valid = _numpy_bilinear(inp_grey, uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2])
    return ((v - tmpl_grey) ** 2)[valid].mean()


def _numpy_loss(inp_grey, tmpl_grey, corners, size):
    """`_numpy_loss_H` with the homography of the template's corners to `corners` (OpenCV)."""
    import cv2

    src = np.float32([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]])
    H = cv2.getPerspectiveTransform(src, np.float32(corners)).astype(np.float64)
    return _numpy_loss_H(inp_grey, tmpl_grey, H)


def test_landscape_minimum_at_the_true_h_and_values_match_numpy(small_pair):
    inp, tmpl = small_pair
    src = viz.intensity_source(levels=(1, 2))
    fi, ft = src(inp[None], 1, "input"), src(tmpl[None], 1, "template")
    ls = viz.loss_landscape(fi, ft, PAIR_CORNERS, ("tx", "ty"), radius=6.0, steps=7, template_size=32, name="grey")
    assert ls.loss.shape == (7, 7) and ls.valid_fraction.shape == (7, 7)
    assert ls.argmin() == (0.0, 0.0)
    assert ls.loss[3, 3] < 1e-3 * np.nanmedian(ls.loss)
    np.testing.assert_allclose(ls.axes[0], np.linspace(-6, 6, 7))
    for i, j in ((3, 3), (0, 6), (2, 5), (6, 1)):
        corners = PAIR_CORNERS + [ls.axes[0][i], ls.axes[1][j]]  # (tx, ty)
        expected = _numpy_loss(fi[0, ..., 0].astype(float), ft[0, ..., 0].astype(float), corners, 32)
        np.testing.assert_allclose(ls.loss[i, j], expected, rtol=1e-4, atol=1e-9)
    # One parameter of one corner, and level 2 (half resolution): still minimal at the truth.
    one = viz.loss_landscape(fi, ft, PAIR_CORNERS, "br_y", radius=4.0, steps=5, template_size=32)
    assert one.loss.shape == (5,) and one.argmin() == (0.0,)
    expected = _numpy_loss(fi[0, ..., 0].astype(float), ft[0, ..., 0].astype(float),
                           PAIR_CORNERS + [[0, 0], [0, 0], [0, 4], [0, 0]], 32)
    np.testing.assert_allclose(one.loss[-1], expected, rtol=1e-4)
    f2i, f2t = src(inp[None], 2, "input"), src(tmpl[None], 2, "template")
    lvl2 = viz.loss_landscape(f2i, f2t, PAIR_CORNERS, ("p1", "p8"), radius=4.0, steps=5, level=2, template_size=32)
    assert lvl2.argmin() == (0.0, 0.0) and lvl2.level == 2


def test_perturbed_homographies_known_answers():
    from deeplk.geometry import homography_to_corners

    true = np.array([[10, 20], [41, 20], [41, 51], [10, 51]], float)  # a 32 template shifted by (10, 20)
    H = viz.perturbed_homographies(true, 32, ["tx", "tl_y", "p3", "p1"], [[0, 0, 0, 0], [2, 0, 0, 0], [0, 3, 0, 0],
                                                                           [0, 0, 1.5, 0], [0, 0, 0, 1.0]])
    c = homography_to_corners(H, 32).numpy()
    np.testing.assert_allclose(c[0], true, atol=1e-9)
    np.testing.assert_allclose(c[1], true + [2, 0], atol=1e-9)
    np.testing.assert_allclose(c[2], true + [[0, 3], [0, 0], [0, 0], [0, 0]], atol=1e-9)
    np.testing.assert_allclose(c[3], true + [1.5, 0], atol=1e-9)  # p3: translation along x by d
    np.testing.assert_allclose(c[4], true + [[-1, 0], [1, 0], [1, 0], [-1, 0]], atol=1e-9)  # p1: x-stretch
    np.testing.assert_allclose(H[:, 2, 2], 1.0)
    with pytest.raises(ValueError, match="unknown"):
        viz.perturbed_homographies(true, 32, ["shear"], [[1.0]])
    with pytest.raises(ValueError, match="values"):
        viz.perturbed_homographies(true, 32, ["tx", "ty"], [[1.0]])


def test_alignment_loss_is_nan_without_valid_pixels():
    f = np.ones((1, 8, 8, 2), np.float32)
    far = np.array([[[1, 0, 100], [0, 1, 0], [0, 0, 1]]], float)
    loss, frac = viz.alignment_loss(f, f[:, :4, :4], np.concatenate([np.eye(3)[None], far]))
    assert loss[0] == 0.0 and frac[0] == 1.0
    assert np.isnan(loss[1]) and frac[1] == 0.0
    with pytest.raises(ValueError, match="template_features"):
        viz.alignment_loss(f, f[..., :1], np.eye(3))


def test_plot_landscapes(small_pair):
    inp, tmpl = small_pair
    src = viz.intensity_source(levels=(1,))
    fi, ft = src(inp[None], 1, "input"), src(tmpl[None], 1, "template")
    two = [viz.loss_landscape(fi, ft, PAIR_CORNERS, ("tx", "ty"), 4.0, 3, template_size=32, name=n) for n in "ab"]
    fig = viz.plot_landscapes(two)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["a, level 1", "b, level 1"]
    one = viz.loss_landscape(fi, ft, PAIR_CORNERS, "tx", 4.0, 3, template_size=32, name="a")
    fig = viz.plot_landscapes([one])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), one.loss / one.loss.max())
    with pytest.raises(ValueError, match="1-D or all 2-D"):
        viz.plot_landscapes([one, two[0]])


# ----------------------------------------------------------------------------------------------
# Explorer callbacks, widgets, frontend detection
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer(small_pair):
    inp, tmpl = small_pair
    sources = [viz.untrained_source(channels=3, seed=0, levels=(1, 2)), viz.intensity_source(levels=(1, 2))]
    inputs = np.stack([inp, inp[::-1].copy()])
    templates = np.stack([tmpl, _warp_template(inputs[1], PAIR_CORNERS, 32)[0]])
    return viz.Explorer(inputs, templates, np.stack([PAIR_CORNERS] * 2), sources, names=["a", "b"],
                        lk_options={"max_iterations": (20, 10)})


def test_explorer_feature_figure(explorer):
    import matplotlib.pyplot as plt

    fig = explorer.feature_figure(sample=0, level=2, branch="template", channel=1)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 6
    assert image_axes[3].images[0].get_array().shape == (32, 32)  # input (64) features at level 2
    assert image_axes[4].images[0].get_array().shape == (16, 16)  # template (32) features at level 2
    assert "untrained weights" in fig._suptitle.get_text()
    assert any("UNTRAINED WEIGHTS" in t.get_text() for t in fig.texts)
    # True outline on the input panel where the label says.
    lines = [ln for ln in image_axes[0].get_lines() if len(ln.get_xdata()) == 5]
    np.testing.assert_allclose(lines[0].get_xdata()[:4], PAIR_CORNERS[:, 0])
    plt.close(fig)
    fig = explorer.feature_figure(sample=1, level=1, branch="input", channel="special", source="intensity")
    assert not any("UNTRAINED" in t.get_text() for t in fig.texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="sample"):
        explorer.feature_figure(sample=2)
    with pytest.raises(ValueError, match="source"):
        explorer.feature_figure(source="dlkfm")


@pytest.mark.parametrize("channel", ["special", "mean", 0])
def test_explorer_intensity_panels_show_the_grey_levels(explorer, channel):
    # The special map of one channel is identically 0: the panels were flat squares.
    import matplotlib.pyplot as plt

    for branch in viz.BRANCHES:
        fig = explorer.feature_figure(sample=1, level=2, branch=branch, channel=channel, source="intensity")
        panels = [ax.images[0].get_array() for ax in fig.axes if ax.images][3:]
        grey = {b: explorer.features(1, 2, b, "intensity")[..., 0] for b in viz.BRANCHES}
        assert len(panels) == 3
        for panel, want in zip(panels, (grey["input"], grey["template"], grey[branch])):
            assert np.ptp(panel) > 0.5
            np.testing.assert_allclose(panel, viz.normalise_map(want), atol=1e-6)
        plt.close(fig)


def test_explorer_playback_and_landscape_figures(explorer):
    import matplotlib.pyplot as plt

    pb = explorer.playback(0, "intensity")
    assert pb is explorer.playback(0, "intensity")  # cached
    assert pb.errors[-1] < 0.05
    n = explorer.num_frames(0)
    assert n == max(len(explorer.playback(0, s)) for s in ("stand-in", "intensity"))
    fig = explorer.playback_figure(sample=0, iteration=n - 1)
    curves = [ln for ln in fig.axes[-1].get_lines() if len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(curves[1].get_ydata(), np.maximum(pb.errors, 1e-3))
    plt.close(fig)
    fig = explorer.filmstrip_figure(sample=0, source="intensity")
    starts = [0] + list(np.flatnonzero(np.diff(pb.levels)) + 1) + [len(pb) - 1]
    assert viz.filmstrip_frames(pb) == starts
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == [f"frame {t}" for t in starts]
    last = [ln for ln in fig.axes[-1].get_lines() if len(ln.get_xdata()) == 5][-1]
    np.testing.assert_allclose(last.get_xdata()[:4], pb.corners[-1][:, 0])
    plt.close(fig)
    with pytest.raises(ValueError, match="frame"):
        viz.plot_filmstrip(explorer.inputs[0], explorer.templates[0], pb, frames=[len(pb)])
    fig = explorer.landscape_figure(sample=0, params=("tx", "ty"), radius=4.0, steps=3, level=2)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    plt.close(fig)
    out = explorer.save_animation(explorer_tmp := Path(tempfile.mkdtemp()) / "x.gif", sample=0, source="intensity", mp4=False)
    assert out["frames"] == len(pb)
    shutil.rmtree(explorer_tmp.parent)


def test_build_widgets_calls_the_callbacks(explorer, monkeypatch):
    calls = []
    real_features, real_playback = explorer.feature_figure, explorer.playback_figure
    monkeypatch.setattr(explorer, "feature_figure", lambda *a: calls.append(("features",) + a) or real_features(*a))
    monkeypatch.setattr(explorer, "playback_figure", lambda *a: calls.append(("playback",) + a) or real_playback(*a))
    box, c = viz.build_widgets(explorer, sample=0, level=1, branch="input", channel=0, show_figures=False)
    assert calls == [("features", 0, 1, "input", 0, "stand-in"), ("playback", 0, 0)]
    assert c["iteration"].max == explorer.num_frames(0) - 1
    calls.clear()
    c["channel"].value = "special"
    c["level"].value = 2
    c["iteration"].value = 3
    assert calls == [("features", 0, 1, "input", "special", "stand-in"), ("features", 0, 2, "input", "special", "stand-in"),
                     ("playback", 0, 3)]
    calls.clear()
    c["sample"].value = 1
    assert [k[0] for k in calls] == ["features", "playback"] and calls[0][1] == 1
    assert c["iteration"].max == explorer.num_frames(1) - 1
    calls.clear()
    c["source"].value = "intensity"
    assert calls[-1] == ("features", 1, 2, "input", "special", "intensity")
    assert list(c["level"].options) == [1, 2]
    assert box.children  # a displayable VBox


def test_frontend_available(monkeypatch):
    import IPython

    from deeplk.viz import explore

    monkeypatch.delenv("DEEPLK_INTERACTIVE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    assert not viz.frontend_available()  # plain Python (pytest)

    class Shell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert not explore.frontend_available()  # a kernel run by papermill / nbval: no frontend
    monkeypatch.setenv("JPY_SESSION_NAME", "/work/notebooks/06_explore_feature_maps.ipynb")
    assert explore.frontend_available()  # JupyterLab
    monkeypatch.setenv("DEEPLK_INTERACTIVE", "0")
    assert not explore.frontend_available()


def test_landscape_with_corner_aligned_levels(small_pair):
    """Features subsampled on the even pixels (as DLKFM's stride-2 layers) relate to the full
    resolution by x / 2 (``half_pixel_centers=False``): the level-2 loss is the reference loss with
    ``H_2 = S H S^-1``, ``S = diag(1/2, 1/2, 1)``; the pixel-area convention gives other values."""
    import cv2

    inp, tmpl = small_pair
    src = viz.intensity_source(levels=(1,))
    fi, ft = src(inp[None], 1, "input")[:, ::2, ::2], src(tmpl[None], 1, "template")[:, ::2, ::2]
    kw = dict(params=("tl_x", "br_y"), radius=6.0, steps=3, level=2, template_size=32)
    even = viz.loss_landscape(fi, ft, PAIR_CORNERS, half_pixel_centers=False, **kw)
    area = viz.loss_landscape(fi, ft, PAIR_CORNERS, half_pixel_centers=True, **kw)
    S = np.diag([0.5, 0.5, 1.0])
    square = np.float32([[0, 0], [31, 0], [31, 31], [0, 31]])
    for i, j in ((0, 0), (1, 1), (2, 0)):
        corners = PAIR_CORNERS + [[even.axes[0][i], 0], [0, 0], [0, even.axes[1][j]], [0, 0]]
        H = cv2.getPerspectiveTransform(square, np.float32(corners)).astype(np.float64)
        expected = _numpy_loss_H(fi[0, ..., 0].astype(float), ft[0, ..., 0].astype(float), S @ H @ np.linalg.inv(S))
        np.testing.assert_allclose(even.loss[i, j], expected, rtol=1e-4)
        assert abs(area.loss[i, j] - expected) > 1e-3 * expected


def test_load_learned_source_without_the_dlkfm_module(monkeypatch, tmp_path):
    import deeplk.models

    monkeypatch.setitem(sys.modules, "deeplk.models.dlkfm", None)  # import fails
    # ... also when an earlier test imported it (then the package holds it as an attribute)
    monkeypatch.delattr(deeplk.models, "dlkfm", raising=False)
    src = viz.load_learned_source(tmp_path / "checkpoints")
    assert not src.trained and "untrained weights" in src.label
    assert "could not be imported" in src.note
    assert "UNTRAINED WEIGHTS" in viz.untrained_banner(src)
    assert viz.untrained_banner(viz.intensity_source()) == ""


def test_dlkfm_source_matches_the_model():
    dlkfm = pytest.importorskip("deeplk.models.dlkfm")
    model = dlkfm.make_dlkfm_net(2, channels=4, num_blocks=1)
    src = viz.dlkfm_source(model, trained=True, note="tiny")
    assert src.levels == (1, 2) and not src.half_pixel_centers and src.lk_features == model.feature_type
    rng = np.random.default_rng(0)
    images, templates = rng.random((2, 32, 32, 3), np.float32), rng.random((2, 16, 16, 3), np.float32)
    pairs = model.extract(images, templates, training=False)
    for level in (2, 1):  # level 2 first: level 1 then comes from the kept outputs
        np.testing.assert_allclose(src(images, level, "input"), pairs[level - 1][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(src(templates, level, "template"), pairs[level - 1][1].numpy(), atol=1e-5)


def test_dlkfm_source_of_a_mind_model_matches_the_model():
    dlkfm = pytest.importorskip("deeplk.models.dlkfm")
    model = dlkfm.make_dlkfm_net(2, channels=5, num_blocks=1, normalise=False, input_representation="mind")
    for ext in model.input_extractors + model.template_extractors:  # non-zero residuals
        ext.head.kernel.assign(np.full(ext.head.kernel.shape, 0.01, np.float32))
    src = viz.dlkfm_source(model, trained=True, note="tiny")
    assert src.half_pixel_centers
    rng = np.random.default_rng(0)
    images, templates = rng.random((2, 32, 32, 3), np.float32), rng.random((2, 16, 16, 3), np.float32)
    pairs = model.extract(images, templates, training=False)
    for level in (2, 1):
        np.testing.assert_allclose(src(images, level, "input"), pairs[level - 1][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(src(templates, level, "template"), pairs[level - 1][1].numpy(), atol=1e-5)


def test_load_learned_source_with_and_without_checkpoints(tmp_path, monkeypatch):
    dlkfm = pytest.importorskip("deeplk.models.dlkfm")
    src = viz.load_learned_source(tmp_path / "none")
    assert not src.trained and src.levels == (1, 2, 3) and "no trained DLKFM" in src.note
    tiny = dlkfm.make_dlkfm_net(2, channels=4, num_blocks=1)
    loaded = []
    monkeypatch.setattr(dlkfm, "trained_levels", lambda checkpoint_dir: [1, 2])
    monkeypatch.setattr(dlkfm, "load_dlkfm", lambda checkpoint_dir, levels: loaded.append(levels) or tiny)
    src = viz.load_learned_source(tmp_path / "ckpt")
    assert loaded == [2] and src.trained and src.levels == (1, 2) and src.label == "DLKFM"


def test_save_success_curve(tmp_path):
    errors = {"a": np.array([0.2, 0.7, np.inf]), "b": np.array([5.0, 15.0, 30.0])}
    fig = viz.plot_success_curves(errors)
    # One curve and one marker line per method; curve "a" reaches 2/3 of the samples by 1 px.
    curves = [line for line in fig.axes[0].lines if line.get_label() in errors]
    assert [c.get_label() for c in curves] == ["a", "b"]
    x, y = curves[0].get_data()
    assert y[np.searchsorted(x, 1.0)] == pytest.approx(100 * 2 / 3)
    path = viz.save_success_curve(tmp_path / "res", errors)
    assert path == tmp_path / "res" / "success_curve.png" and path.stat().st_size > 1000
    assert not [p for p in (tmp_path / "res").iterdir() if p != path]
    with pytest.raises(ValueError, match="errors_by_method"):
        viz.save_success_curve(tmp_path, {})


class TestAlignmentExamples:
    def _problem(self):
        from deeplk.geometry_np import centred_corners

        rng = np.random.default_rng(0)
        inputs = rng.uniform(0, 1, (2, 192, 192, 3)).astype(np.float32)
        templates = inputs[:, 32:160, 32:160].copy()
        true = np.repeat(centred_corners(192, 128)[None], 2, axis=0)
        return inputs, templates, true

    def test_panels_show_each_methods_overlay_and_error(self):
        import matplotlib.pyplot as plt

        from deeplk.geometry_np import corners_to_homography
        from deeplk.viz import alignment_examples, overlay_array

        inputs, templates, true = self._problem()
        off = true + 3.0  # every corner 3 px right and down: PE 3 * sqrt(2)
        failed = np.full_like(true, np.nan)
        fig = alignment_examples(inputs, templates, true, {"good": true, "off": off, "none": failed})
        axes = np.array(fig.axes).reshape(4, 2)
        assert [axes[r, 0].get_title() for r in range(4)] == [
            "#0: template", "good: 0.0 px", f"off: {3 * np.sqrt(2):.1f} px", "none: failed"]
        expected = overlay_array(inputs[1], templates[1], corners_to_homography(off[1], 128),
                                 true_corners=true[1], pred_corners=off[1])
        np.testing.assert_array_equal(np.asarray(axes[2, 1].images[0].get_array()), expected)
        plt.close(fig)

    def test_bad_arguments_name_what_is_wrong(self):
        from deeplk.viz import alignment_examples

        inputs, templates, true = self._problem()
        with pytest.raises(ValueError, match="`predictions` is empty"):
            alignment_examples(inputs, templates, true, {})
        with pytest.raises(ValueError, match="predictions\\['m'\\]"):
            alignment_examples(inputs, templates, true, {"m": true[:1]})
