"""Tests of deeplk.models.dlkfm: extractors, Siamese model, loss, per-level training, inference.

Tiny models (4 channels, 0-1 residual blocks) keep the tests fast. The inference test builds a
model whose weights make every level's features a sub-sampled copy of the image (identity
kernels), so that LK on the "features" must recover a homography on a textured mono-modal pair;
it goes through the checkpoint layout and the method registry like a trained model.
"""

from __future__ import annotations

import functools
import inspect
import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry, methods
from deeplk.features import special_feature_map
from deeplk.lk import LKOptions
from deeplk.models import dlkfm as D
from deeplk.train import FINAL_WEIGHTS_NAME, RUN_CONFIG_NAME, TrainConfig, train, write_run_config

CENTRE_192 = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)
CENTRE_96 = np.array([[16, 16], [79, 16], [79, 79], [16, 79]], dtype=np.float64)
CENTRE_48 = np.array([[8, 8], [39, 8], [39, 39], [8, 39]], dtype=np.float64)
TINY = dict(channels=4, num_blocks=1)


@functools.lru_cache(maxsize=None)
def smooth_rgb(sigma: float = 4.0, seed: int = 0, size: int = 192) -> np.ndarray:
    """``(size, size, 3)`` float32 smoothed noise in [0, 1] (three decorrelated channels)."""
    noise = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), sigma)
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def make_pairs(image: np.ndarray, dst: np.ndarray, size: int = 128):
    """Inputs ``(B, S, S, 3)`` (`image` is ``S x S``) and templates ``(B, size, size, 3)`` for
    input-frame corners ``dst`` ``(B, 4, 2)`` (template = input warped by the true H, OpenCV)."""
    H = geometry.corners_to_homography(dst, size).numpy().astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    templates = np.stack([cv2.warpPerspective(image, h, (size, size), flags=flags) for h in H])
    inputs = np.repeat(image[None], len(dst), axis=0)
    return inputs, templates.astype(np.float32)


def identity_feature_net(levels: int = 3) -> D.DLKFMNet:
    """3 channels, no residual blocks; identity centre taps everywhere, so level 1 returns the
    image (scaled by the batch norms' 1 / sqrt(1 + eps)) and each next level the even pixels of
    the previous one."""
    model = D.make_dlkfm_net(levels, channels=3, num_blocks=0)
    eye = np.zeros((3, 3, 3, 3), np.float32)
    eye[1, 1] = np.eye(3)
    for ext in model.input_extractors + model.template_extractors:
        ext.stem.kernel.assign(eye)
        ext.mid.kernel.assign(eye)
        ext.head.kernel.assign(eye)
        ext.head.bias.assign(np.zeros(3, np.float32))
    return model


def save_as_checkpoint(model: D.DLKFMNet, checkpoint_dir) -> None:
    """Lay `model` out as a trained DLKFM under ``<checkpoint_dir>/dlkfm``."""
    folder = D.level_dir(checkpoint_dir, model.levels)
    write_run_config(folder, D.FAMILY, model.architecture())
    model.save_weights(str(folder / FINAL_WEIGHTS_NAME))


def _dlt(corners, size):
    """float64 ``input_H_template`` taking the ``size``-template corners to `corners` (4, 2)."""
    src = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], np.float64)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, corners):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1.0).reshape(3, 3)


def _bilinear_warp(image, H, size):
    """float64 bilinear warp of `image` ``(S, S, C)`` into the ``size`` template frame by `H`,
    and the mask of template pixels sampling inside ``[0, S-1]^2``."""
    s = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    p = np.einsum("ij,jhw->ihw", H, np.stack([xs, ys, np.ones_like(xs)]))
    u, v = p[0] / p[2], p[1] / p[2]
    valid = (u >= 0) & (u <= s - 1) & (v >= 0) & (v <= s - 1)
    x0 = np.clip(np.floor(u), 0, s - 2).astype(int)
    y0 = np.clip(np.floor(v), 0, s - 2).astype(int)
    ax, ay = (u - x0)[..., None], (v - y0)[..., None]
    out = ((1 - ax) * (1 - ay) * image[y0, x0] + ax * (1 - ay) * image[y0, x0 + 1]
           + (1 - ax) * ay * image[y0 + 1, x0] + ax * ay * image[y0 + 1, x0 + 1])
    return out, valid


# --------------------------------------------------------------------------------------------
# Extractors and the Siamese model
# --------------------------------------------------------------------------------------------


class TestModel:
    def test_level_sizes(self):
        model = D.make_dlkfm_net(3, **TINY)
        x = np.random.default_rng(0).random((2, 192, 192, 3), np.float32)
        t = np.random.default_rng(1).random((2, 128, 128, 3), np.float32)
        shapes = [tuple(f.shape) for f in model([x, t])]
        assert shapes == [(2, 192, 192, 4), (2, 128, 128, 4), (2, 96, 96, 4), (2, 64, 64, 4),
                          (2, 48, 48, 4), (2, 32, 32, 4)]

    @pytest.mark.parametrize("batch", [1, 3])
    def test_any_batch_size(self, batch):
        model = D.make_dlkfm_net(2, **TINY)
        out = model([np.zeros((batch, 24, 24, 3), np.float32), np.zeros((batch, 16, 16, 3),
                                                                        np.float32)])
        assert [o.shape[0] for o in out] == [batch] * 4

    def test_separate_branch_weights(self):
        model = D.make_dlkfm_net(3, **TINY)
        for k in D.LEVELS:
            a = {id(v) for v in model.input_extractors[k - 1].weights}
            b = {id(v) for v in model.template_extractors[k - 1].weights}
            assert a and b and not a & b
        # Same image through both branches: different (independently initialised) features.
        x = np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
        fi, ft = model.extract(x, x)[0]
        assert np.abs(fi.numpy() - ft.numpy()).max() > 1e-3
        # Changing the template branch leaves the input branch alone.
        before = fi.numpy()
        for v in model.template_extractors[0].trainable_variables:
            v.assign(v + 0.5)
        fi2, ft2 = model.extract(x, x)[0]
        np.testing.assert_array_equal(fi2.numpy(), before)
        assert np.abs(ft2.numpy() - ft.numpy()).max() > 1e-3

    def test_stride_two_samples_even_pixels(self):
        """Level 2 of the identity network is the level-1 map at the even pixels (the
        ``x_coarse = x_fine / 2`` convention of `level_homography`)."""
        model = identity_feature_net(2)
        x = smooth_rgb()[None, :40, :40]
        (f1, _), (f2, _) = model.extract(x, x[:, :16, :16])
        np.testing.assert_allclose(f1.numpy(), x / np.sqrt(1 + 1e-3) ** 2, rtol=1e-5)
        np.testing.assert_allclose(f2.numpy(), f1.numpy()[:, ::2, ::2] / (1 + 1e-3), rtol=1e-5)

    def test_special_output(self):
        model = D.make_dlkfm_net(1, **TINY)
        x = np.random.default_rng(0).random((2, 20, 20, 3), np.float32)
        fi, ft = model.extract(x, x[:, :12, :12])[0]
        si, st = model.lk_features((fi, ft), "special")
        assert si.shape == (2, 20, 20, 1) and st.shape == (2, 12, 12, 1)
        np.testing.assert_allclose(si.numpy(), special_feature_map(fi).numpy(), rtol=1e-6)
        # Against the definition (Gram matrix of the centred 3x3xC patch) at an inner pixel.
        f = fi.numpy()[0].astype(np.float64)
        patch = f[4:7, 7:10].reshape(9, -1).T  # C x 9
        patch = patch - patch.mean(axis=0, keepdims=True)
        G = patch.T @ patch
        rows = G.sum(axis=1)
        expected = (rows.max() + rows.min()) / 2 / (np.trace(G) + 1e-6)
        np.testing.assert_allclose(si.numpy()[0, 5, 8, 0], expected, rtol=1e-4)
        # A special-type model aligns the special maps by default.
        special = D.make_dlkfm_net(1, feature_type="special", **TINY)
        assert special.lk_features(fi).shape[-1] == 1

    def test_config_round_trip(self, tmp_path):
        ext = D.FeatureExtractor(channels=5, num_blocks=2, stride=2, leaky_alpha=0.1,
                                 bn_momentum=0.8, name="e")
        clone = D.FeatureExtractor.from_config(ext.get_config())
        assert clone.get_config() == ext.get_config()
        block = D.ResidualBlock(6, 0.3, 0.7)
        assert D.ResidualBlock.from_config(block.get_config()).get_config() == block.get_config()

        model = D.make_dlkfm_net(2, channels=4, num_blocks=1, leaky_alpha=0.1,
                                 feature_type="special", seed=3)
        config = model.get_config()
        for key, value in dict(levels=2, channels=4, num_blocks=1, leaky_alpha=0.1,
                               feature_type="special", seed=3).items():
            assert config[key] == value
        x = np.random.default_rng(0).random((2, 24, 24, 3), np.float32)
        t = x[:, 4:20, 4:20]
        expected = [o.numpy() for o in model([x, t])]
        path = tmp_path / "dlkfm.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, D.DLKFMNet) and loaded.get_config() == config
        for a, b in zip(loaded([x, t]), expected):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-6)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="levels"):
            D.DLKFMNet(levels=4)
        with pytest.raises(ValueError, match="feature_type"):
            D.DLKFMNet(feature_type="fancy")
        with pytest.raises(ValueError, match="stride"):
            D.FeatureExtractor(stride=3)
        with pytest.raises(ValueError, match="num_blocks"):
            D.FeatureExtractor(num_blocks=-1)
        model = D.make_dlkfm_net(1, **TINY)
        with pytest.raises(ValueError, match="images"):
            model.extract(np.zeros((1, 8, 8, 1), np.float32), np.zeros((1, 8, 8, 3), np.float32))
        with pytest.raises(ValueError, match="train_level"):
            model.extract(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32),
                          train_level=2)


def randomize_batchnorms(model, seed: int = 0) -> None:
    """Non-trivial batch-norm state (moving statistics, gamma, beta) and head biases."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.path
        if "moving_variance" in name:
            v.assign(rng.uniform(0.3, 3.0, v.shape).astype(np.float32))
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
        elif "gamma" in name:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))


class TestFoldBatchnorm:
    @pytest.mark.parametrize("use_bias", [False, True])
    def test_single_conv_matches_keras_float64(self, rng, use_bias):
        conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=use_bias, dtype="float64")
        bn = keras.layers.BatchNormalization(epsilon=1e-3, dtype="float64")
        x = rng.random((2, 9, 7, 3))
        conv.build(x.shape)
        bn.build((None, 9, 7, 5))
        for v in conv.weights + bn.weights:
            v.assign(rng.uniform(0.2, 2.0, v.shape) * rng.choice([-1, 1], v.shape)
                     if "variance" not in v.path else rng.uniform(0.2, 2.0, v.shape))
        expected = bn(conv(x), training=False).numpy()
        kernel, bias = D.fold_batchnorm(conv, bn)
        assert kernel.shape == (3, 3, 3, 5) and bias.shape == (5,)
        got = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("stride,num_blocks,size", [(1, 0, 12), (1, 2, 11), (2, 1, 13)])
    def test_extractor_inference_matches_call(self, rng, stride, num_blocks, size):
        ext = D.FeatureExtractor(6, num_blocks, stride)
        ext.build((None, None, None, 3))
        randomize_batchnorms(ext, seed=size)
        x = rng.random((3, size, size + 2, 3)).astype(np.float32)
        expected = ext(x, training=False).numpy()
        got = ext.inference(x).numpy()
        assert got.shape == expected.shape == ext.compute_output_shape(x.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        # differs from the training-mode output (batch statistics), so the check has teeth
        assert np.abs(ext(x, training=True).numpy() - expected).max() > 1e-2

    def test_follows_weight_changes(self, rng):
        ext = D.FeatureExtractor(4, 1)
        ext.build((None, None, None, 3))
        x = rng.random((1, 8, 8, 3)).astype(np.float32)
        before = ext.inference(x).numpy()
        randomize_batchnorms(ext, seed=3)
        after = ext.inference(x).numpy()
        assert np.abs(after - before).max() > 1e-2
        np.testing.assert_allclose(after, ext(x, training=False).numpy(), rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("batch", [1, 3])
    def test_extract_all_levels(self, rng, batch):
        model = D.make_dlkfm_net(3, **TINY)
        randomize_batchnorms(model, seed=batch)
        x = rng.random((batch, 24, 24, 3)).astype(np.float32)
        t = rng.random((batch, 16, 16, 3)).astype(np.float32)
        expected = model.extract(x, t, training=False)
        got = tf.function(lambda a, b: model.extract(a, b, fold_batchnorm=True))(x, t)
        assert len(got) == 3
        for (gi, gt), (ei, et) in zip(got, expected):
            np.testing.assert_allclose(gi.numpy(), ei.numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(gt.numpy(), et.numpy(), rtol=1e-4, atol=1e-5)

    def test_exceptions(self):
        model = D.make_dlkfm_net(2, **TINY)
        x, t = np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32)
        with pytest.raises(ValueError, match="fold_batchnorm"):
            model.extract(x, t, training=True, fold_batchnorm=True)
        with pytest.raises(ValueError, match="fold_batchnorm"):
            model.extract(x, t, train_level=2, fold_batchnorm=True)


class TestNormalise:
    def test_standardise_matches_numpy_float64(self, rng):
        x = rng.normal(3.0, 2.0, (2, 9, 7, 4)).astype(np.float64)
        x[1, ..., 2] = 5.0  # a constant channel becomes 0
        out = D.standardise_features(x, epsilon=1e-3).numpy()
        mean = x.mean(axis=(1, 2), keepdims=True)
        var = x.var(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[1, ..., 2], 0.0, atol=1e-12)
        with pytest.raises(ValueError, match="features"):
            D.standardise_features(np.zeros((3, 3, 2), np.float32))
        with pytest.raises(ValueError, match="epsilon"):
            D.standardise_features(x, epsilon=0.0)

    def test_scale_fixed_loss(self, rng):
        """With normalise, the loss cannot shrink by scaling the features: a per-channel affine
        change (positive gain) of either branch leaves the LK maps (almost) unchanged."""
        model = D.make_dlkfm_net(1, normalise=True, **TINY)
        fi = tf.constant(rng.normal(size=(2, 20, 20, 4)), tf.float32)
        ft = tf.constant(rng.normal(size=(2, 12, 12, 4)), tf.float32)
        gain, bias = np.array([0.1, 5.0, 1.0, 30.0], np.float32), np.float32(-7.0)
        a, b = model.lk_features((fi, ft))
        c, d = model.lk_features((fi * gain + bias, ft * gain))
        np.testing.assert_allclose(c.numpy(), a.numpy(), atol=2e-3)
        np.testing.assert_allclose(d.numpy(), b.numpy(), atol=2e-3)
        # Special maps are taken of the standardised features.
        special = D.make_dlkfm_net(1, normalise=True, feature_type="special", **TINY)
        np.testing.assert_allclose(special.lk_features(fi).numpy(),
                                   special_feature_map(D.standardise_features(fi)).numpy(),
                                   rtol=1e-6)
        # Without normalise the maps are the raw features.
        raw = D.make_dlkfm_net(1, **TINY)
        assert raw.normalise is False
        np.testing.assert_array_equal(raw.lk_features(fi).numpy(), fi.numpy())
        with pytest.raises(ValueError, match="normalise"):
            D.DLKFMNet(normalise="yes")

    def test_config(self, tmp_path):
        model = D.make_dlkfm_net(2, normalise=True, **TINY)
        assert model.get_config()["normalise"] is True
        assert D.DLKFMNet.from_config(model.get_config()).normalise is True
        # New training tasks normalise by default and record it (an older config.json without
        # the key reads as normalise=False: tests/test_checkpoint_compat.py).
        task = D.DLKFMTask(1, tmp_path / "new", **TINY)
        assert task.arch["normalise"] is True
        assert task.build_model().normalise is True
        assert task.run_config()["model"]["normalise"] is True


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


class TestAlignmentMSE:
    def test_identical_features_identity_zero(self):
        f = np.random.default_rng(0).random((2, 16, 16, 5), np.float32)
        mse = D.alignment_mse(f, f, np.repeat(np.eye(3, dtype=np.float32)[None], 2, 0))
        np.testing.assert_allclose(mse.numpy(), 0.0, atol=1e-12)

    def test_matches_opencv_masked_mean(self, rng):
        image = smooth_rgb(3.0)
        template = rng.random((1, 128, 128, 3)).astype(np.float32)
        dst = CENTRE_192 + rng.uniform(-40, 40, size=(1, 4, 2))
        H = geometry.corners_to_homography(dst, 128).numpy().astype(np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpPerspective(image.astype(np.float64), H[0], (128, 128), flags=flags)
        # Valid: the sample position lies inside the input.
        xs, ys = np.meshgrid(np.arange(128.0), np.arange(128.0))
        p = H[0] @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
        u, v = p[0] / p[2], p[1] / p[2]
        valid = ((u >= 0) & (u <= 191) & (v >= 0) & (v <= 191)).reshape(128, 128)
        assert 0.3 < valid.mean() < 1.0  # part of the template falls outside
        sq = ((warped - template[0]) ** 2).sum(axis=-1)
        expected = sq[valid].sum() / (valid.sum() * 3)
        got = D.alignment_mse(image[None], template, H.astype(np.float32)).numpy()[0]
        np.testing.assert_allclose(got, expected, rtol=2e-3)

    def test_gradient_float64(self, rng):
        fi = tf.constant(rng.random((1, 6, 6, 1)))
        ft = tf.constant(rng.random((1, 4, 4, 1)))
        H = tf.constant([[[0.9, 0.1, 0.7], [-0.05, 1.1, 0.6], [0.01, 0.02, 1.0]]], tf.float64)
        theoretical, numerical = tf.test.compute_gradient(
            lambda a, b: D.alignment_mse(a, b, H), [fi, ft], delta=1e-6)
        for t, n in zip(theoretical, numerical):
            np.testing.assert_allclose(t, n, atol=1e-6)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="template_features"):
            D.alignment_mse(np.zeros((1, 8, 8, 2), np.float32), np.zeros((1, 4, 4, 3), np.float32),
                            np.eye(3, dtype=np.float32)[None])
        with pytest.raises(ValueError, match="input_H_template"):
            D.alignment_mse(np.zeros((1, 8, 8, 2), np.float32), np.zeros((1, 4, 4, 2), np.float32),
                            np.eye(3, dtype=np.float32))


class TestConvexityHinge:
    t = np.array([0.0, 1.0, 2.0])

    def test_zero_for_convex_enough(self):
        d = 0.01 * self.t ** 2
        for a in (1.0, 1.5, 10.0):  # f = a d + c grows at least `margin` per unit d
            f = 0.3 + a * d
            assert D.convexity_hinge(f[None], d[None], margin=1.0).numpy()[0] == pytest.approx(0.0)

    def test_positive_otherwise(self):
        d = 0.01 * self.t ** 2
        # Flat: every step misses by margin * (d_k - d_{k-1}), in total margin * d_max.
        flat = np.full(3, 0.3)
        assert D.convexity_hinge(flat, d, margin=2.0).numpy() == pytest.approx(2.0 * 0.04)
        # Too shallow (a = 0.5 < margin 1): misses by (1 - 0.5) * d_max.
        assert D.convexity_hinge(0.5 * d, d, 1.0).numpy() == pytest.approx(0.5 * 0.04)
        # Rises then falls: only the falling step is penalised, by its drop plus its margin.
        f = np.array([0.0, 0.05, 0.02])
        assert D.convexity_hinge(f, d, 1.0).numpy() == pytest.approx(0.03 + 0.03)

    def test_batched_and_exceptions(self):
        f = np.stack([0.3 + 2 * self.t ** 2, np.full(3, 0.3)])
        np.testing.assert_allclose(D.convexity_hinge(f, np.stack([self.t ** 2] * 2)).numpy(),
                                   [0.0, 4.0])
        with pytest.raises(ValueError, match="sq_distances"):
            D.convexity_hinge(np.zeros(3), np.zeros(2))
        with pytest.raises(ValueError, match="losses"):
            D.convexity_hinge(np.zeros(1), np.zeros(1))


class TestDLKFMLoss:
    def test_constant_features_known_answer(self, rng):
        """Constant features: every warp matches, so the MSE is 0 and each direction misses its
        whole margin: hinge = sum_p 2 * margin * rho_p^2 * t_max^2."""
        fi = np.full((2, 48, 48, 3), 0.7, np.float32)
        ft = np.full((2, 32, 32, 3), 0.7, np.float32)
        corners = np.array([[8, 8], [39, 8], [39, 39], [8, 39]], np.float64)[None] + \
            rng.uniform(-3, 3, (2, 4, 2))
        H = geometry.corners_to_homography(corners, 32).numpy().astype(np.float32)
        delta = rng.uniform(-2, 2, (2, 3, 4, 2)).astype(np.float32)
        total, mse, hinge = D.dlkfm_loss(fi, ft, H, delta, convexity_weight=0.2, margin=1.5)
        rho2 = ((delta.astype(np.float64) / 15.5) ** 2).sum(-1).mean(-1)  # (B, P)
        expected = (2 * 1.5 * rho2 * 4.0).sum(axis=1)
        np.testing.assert_allclose(mse.numpy(), 0.0, atol=1e-12)
        np.testing.assert_allclose(hinge.numpy(), expected, rtol=1e-4)
        np.testing.assert_allclose(total.numpy(), 0.2 * expected, rtol=1e-4)

    def test_textured_features_convex_no_hinge(self, rng):
        """Smooth texture, template cut exactly at the true H: the loss is 0 at H* and grows
        with the displacement, so with a small margin the hinge vanishes."""
        image = smooth_rgb(4.0)
        dst = CENTRE_192[None] + rng.uniform(-8, 8, (2, 4, 2))
        inputs, templates = make_pairs(image, dst)
        H = geometry.corners_to_homography(dst, 128).numpy().astype(np.float32)
        delta = rng.uniform(-3, 3, (2, 2, 4, 2)).astype(np.float32)
        total, mse, hinge = D.dlkfm_loss(inputs, templates, H, delta, margin=0.01)
        assert np.all(mse.numpy() < 1e-4)
        np.testing.assert_allclose(hinge.numpy(), 0.0, atol=1e-7)
        # The same pair with a huge margin: the hinge is positive.
        _, _, hinge_big = D.dlkfm_loss(inputs, templates, H, delta, margin=1e3)
        assert np.all(hinge_big.numpy() > 0)

    def test_asymmetric_features_match_numpy_float64(self, rng):
        """Template features = the warped input plus another pattern: the loss tilts, so the
        hinge of ``+delta`` and of ``-delta`` differ; the total must be their sum, as an
        independent float64 NumPy computation (bilinear warp, DLT, hinge) gives it."""
        size, h = 48, 32

        def smooth(shape, sigma):  # float64 smoothed noise, zero mean, unit variance
            x = cv2.GaussianBlur(rng.random(shape), (0, 0), sigma)
            return (x - x.mean()) / x.std()

        fi = np.stack([smooth((size, size, 2), 2.0) for _ in range(2)])
        corners = CENTRE_48[None] + rng.uniform(-2, 2, (2, 4, 2))
        H = np.stack([_dlt(c, h) for c in corners])
        tilt = np.stack([smooth((h, h, 2), 3.0) for _ in range(2)])
        ft = np.stack([_bilinear_warp(f, Hb, h)[0] for f, Hb in zip(fi, H)]) + tilt
        delta = rng.uniform(-1, 1, (2, 2, 4, 2))
        margin, steps = 10.0, (1.0, 2.0)  # growth per unit d ranges 2-23: some steps miss it
        total, mse, hinge = D.dlkfm_loss(fi, ft, H, delta, convexity_weight=0.2, margin=margin, steps=steps)

        def f(b, c):
            warped, valid = _bilinear_warp(fi[b], _dlt(c, h), h)
            return ((warped - ft[b]) ** 2)[valid].sum() / (valid.sum() * fi.shape[-1])

        per_sign = np.zeros((2, 2))  # (sample, direction)
        for b in range(2):
            for p in range(delta.shape[1]):
                rho2 = ((delta[b, p] / 15.5) ** 2).sum(-1).mean()
                for k, sign in enumerate((1.0, -1.0)):
                    fs = [f(b, corners[b])] + [f(b, corners[b] + sign * t * delta[b, p]) for t in steps]
                    ds = [0.0] + [rho2 * t * t for t in steps]
                    per_sign[b, k] += np.maximum(0, margin * np.diff(ds) - np.diff(fs)).sum()
        # The two directions differ: a hinge of one direction counted twice is another number.
        assert np.all(np.abs(per_sign[:, 0] - per_sign[:, 1]) > 0.2 * per_sign.sum(1))
        np.testing.assert_allclose(mse.numpy(), [f(b, corners[b]) for b in range(2)], rtol=1e-9)
        np.testing.assert_allclose(hinge.numpy(), per_sign.sum(1), rtol=1e-9)
        np.testing.assert_allclose(total.numpy(), mse.numpy() + 0.2 * per_sign.sum(1), rtol=1e-9)

    def test_level_homography_matches_even_pixel_sampling(self):
        corners = CENTRE_192[None] + np.array([[[3, -2], [5, 1], [-4, 6], [2, 2]]], np.float64)
        H3 = D.level_homography(corners.astype(np.float32), 3).numpy()
        # x_coarse = x_fine / 4: the 32-template corner (31, 31) is the fine corner (124, 124).
        fine = geometry.transform_points(
            geometry.corners_to_homography(corners, 128), np.array([[[124.0, 124.0]]]))
        coarse = geometry.transform_points(H3.astype(np.float64), np.array([[[31.0, 31.0]]]))
        np.testing.assert_allclose(coarse.numpy() * 4, fine.numpy(), atol=1e-3)

    def test_exceptions(self):
        f = np.zeros((1, 16, 16, 2), np.float32)
        H = np.eye(3, dtype=np.float32)[None]
        with pytest.raises(ValueError, match="perturbations"):
            D.dlkfm_loss(f, f[:, :8, :8], H, np.zeros((1, 4, 2), np.float32))
        with pytest.raises(ValueError, match="steps"):
            D.dlkfm_loss(f, f[:, :8, :8], H, np.zeros((1, 1, 4, 2), np.float32), steps=(2, 1))


# --------------------------------------------------------------------------------------------
# Training task
# --------------------------------------------------------------------------------------------


def tiny_dataset(n: int = 4, batch: int = 2, seed: int = 0):
    """48 x 48 inputs, 32 x 32 templates (the task reads the sizes from the batch)."""
    rng = np.random.default_rng(seed)
    dst = CENTRE_48[None] + rng.uniform(-4, 4, (n, 4, 2))
    H = geometry.corners_to_homography(dst, 32).numpy().astype(np.float64)
    image = smooth_rgb(1.5, seed, size=48)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    templates = np.stack([cv2.warpPerspective(image, h, (32, 32), flags=flags) for h in H])
    inputs = np.repeat(image[None], n, axis=0)
    return tf.data.Dataset.from_tensor_slices(
        (inputs, templates.astype(np.float32), dst.astype(np.float32))).batch(batch)


def variables_by_path(model):
    """Weights by path inside the model (without the model's own, instance-numbered name)."""
    return {v.path.split("/", 1)[1]: v.numpy().copy() for v in model.weights}


class TestTraining:
    def test_levels_chain_and_freeze(self, tmp_path):
        ds = tiny_dataset()
        config = dict(steps=2, learning_rate=1e-2, progress=False, log_every=1)
        task1 = D.DLKFMTask(1, tmp_path, channels=3, num_blocks=0, num_perturbations=1)
        r1 = train(task1, ds, TrainConfig(checkpoint_dir=task1.checkpoint_dir, **config))
        assert np.isfinite(r1.final_loss) and set(r1.metrics) == {"mse", "convexity"}
        record = json.loads((tmp_path / "dlkfm" / "level1" / RUN_CONFIG_NAME).read_text())
        assert record["family"] == "dlkfm" and record["model"]["channels"] == 3
        assert record["task"]["level"] == 1 and record["task"]["num_perturbations"] == 1
        assert D.trained_levels(tmp_path) == [1]
        level1 = variables_by_path(r1.model)

        # Level 2: the architecture comes from level 1's model_config.json; level 1 is loaded
        # and frozen.
        task2 = D.DLKFMTask(2, tmp_path, num_perturbations=1)
        assert task2.arch["channels"] == 3
        model2 = task2.build_model()
        trained_ids = {id(v) for v in task2.trainable_variables(model2)}
        assert trained_ids == {id(v) for v in model2.extractor_variables(2)}
        r2 = train(task2, ds, TrainConfig(checkpoint_dir=task2.checkpoint_dir, **config))
        after = variables_by_path(r2.model)
        # Every level-1 weight, batch-norm moving statistics included, is unchanged ...
        frozen = [p for p in level1 if p.startswith("level1_")]
        assert len(frozen) == len(r1.model.extractor_variables(1, trainable_only=False))
        assert any("moving_variance" in p for p in frozen)
        for path in frozen:
            np.testing.assert_array_equal(after[path], level1[path], err_msg=path)
        # ... while level 2 did train.
        fresh = variables_by_path(D.DLKFMTask(2, tmp_path, load_previous=False).build_model())
        changed = [p for p in after if p.startswith("level2_") and "kernel" in p
                   and not np.array_equal(after[p], fresh[p])]
        assert changed
        assert D.trained_levels(tmp_path) == [1, 2]

    def test_missing_previous_level(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="level 1"):
            D.DLKFMTask(2, tmp_path)
        write_run_config(D.level_dir(tmp_path, 1), D.FAMILY, dict(  # a config but no weights
            channels=3, num_blocks=0, leaky_alpha=0.2, bn_momentum=0.9, feature_type="regular",
            normalise=True))
        with pytest.raises(FileNotFoundError, match="weights|checkpoint"):
            D.DLKFMTask(2, tmp_path)
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dlkfm" / "level2")):
            D.DLKFMTask(3, tmp_path)
        with pytest.raises(ValueError, match="channels"):
            D.DLKFMTask(2, tmp_path, channels=8, load_previous=False)

    def test_task_exceptions(self, tmp_path):
        with pytest.raises(ValueError, match="level"):
            D.DLKFMTask(0, tmp_path)
        with pytest.raises(ValueError, match="num_perturbations"):
            D.DLKFMTask(1, tmp_path, num_perturbations=-1)
        with pytest.raises(ValueError, match="perturbation"):
            D.DLKFMTask(1, tmp_path, perturbation=0.0)


# --------------------------------------------------------------------------------------------
# Inference and the method
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("dlkfm_ckpt")
    save_as_checkpoint(identity_feature_net(3), root)
    return root


@pytest.fixture(scope="module")
def textured_problem():
    """Three 96 / 64 pairs (half the real sizes, to keep the tests fast), corners +-6 px."""
    rng = np.random.default_rng(5)
    dst = CENTRE_96[None] + rng.uniform(-6, 6, (3, 4, 2))
    inputs, templates = make_pairs(smooth_rgb(2.0, seed=2, size=96), dst, 64)
    return inputs, templates, dst


class TestInference:
    def test_recovers_homography_through_registry(self, identity_checkpoint, textured_problem):
        inputs, templates, dst = textured_problem
        # batch_size=2: the three pairs go through in two chunks.
        # lk_options={}: the plain inverse-compositional rule (the default is ESM, below).
        predict = methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint,
                                     jit_compile=False, batch_size=2, lk_options={})
        corners, failed = predict(inputs, templates)
        assert corners.shape == (3, 4, 2) and corners.dtype == np.float64
        assert not failed.any()
        pe = np.linalg.norm(corners - dst, axis=-1).mean(-1)
        start = np.linalg.norm(CENTRE_96[None] - dst, axis=-1).mean(-1)
        assert np.all(start > 2) and np.all(pe < 0.25), (start, pe)

    def test_fold_batchnorm_features_and_corners(self, identity_checkpoint, textured_problem):
        inputs, templates, dst = textured_problem
        plain = D.build_dlkfm_method(identity_checkpoint, jit_compile=False)
        folded = D.build_dlkfm_method(identity_checkpoint, jit_compile=False, batch_size=2,
                                      lk_options={}, fold_batchnorm=True)
        assert folded.fold_batchnorm and not plain.fold_batchnorm
        x, t = tf.constant(inputs), tf.constant(templates)
        for a, b in zip(plain._features(x, t), folded._features(x, t)):
            for fa, fb in zip(a, b):
                np.testing.assert_allclose(fb.numpy(), fa.numpy(), rtol=1e-4, atol=1e-5)
        corners, failed = folded(inputs, templates)
        assert not failed.any()
        assert np.linalg.norm(corners - dst, axis=-1).mean(-1).max() < 0.25

    def test_lk_options_reach_lk(self, identity_checkpoint, textured_problem):
        inputs, templates, dst = textured_problem
        predict = D.build_dlkfm_method(identity_checkpoint, jit_compile=False)
        assert predict.lk_options == D.DEFAULT_LK_OPTIONS
        assert predict.lk_options.algorithm == "esm"
        corners, failed = predict(inputs, templates)
        assert not failed.any()
        assert np.all(np.linalg.norm(corners - dst, axis=-1).mean(-1) < 0.25)
        # A bad option fails when the method is built, naming the field.
        with pytest.raises(ValueError, match="algorithm"):
            D.build_dlkfm_method(identity_checkpoint, jit_compile=False,
                                 lk_options={"algorithm": "newton"})
        with pytest.raises(ValueError, match="tolerance"):
            D.build_dlkfm_method(identity_checkpoint, jit_compile=False,
                                 lk_options=LKOptions(tolerance=0.5))

    def test_special_maps(self, identity_checkpoint, textured_problem):
        inputs, templates, _ = textured_problem
        special = D.build_dlkfm_method(identity_checkpoint, feature_type="special",
                                       jit_compile=False)
        assert special.feature_type == "special"
        ip, tp = special._features(tf.constant(inputs[:1]), tf.constant(templates[:1]))
        assert [tuple(x.shape) for x in ip] == [(1, 24, 24, 1), (1, 48, 48, 1), (1, 96, 96, 1)]
        assert [tuple(x.shape) for x in tp] == [(1, 16, 16, 1), (1, 32, 32, 1), (1, 64, 64, 1)]

    def test_no_ground_truth_in_signature(self, identity_checkpoint):
        predict = D.build_dlkfm_method(identity_checkpoint, jit_compile=False)
        assert list(inspect.signature(predict).parameters) == ["inputs", "templates"]
        assert "dlkfm" in D.METHOD_DESCRIPTIONS
        assert methods.FAMILIES["dlkfm"] == "dlkfm"

    def test_mhn_start_uses_the_predictor(self, identity_checkpoint, textured_problem):
        inputs, templates, dst = textured_problem
        calls = []

        def stand_in(i, t):
            calls.append((i.shape, t.shape))
            corners = dst + 1.0
            corners[1] = np.nan  # a failure: that sample starts centred
            return corners, np.array([False, True, False])

        aligner = D.build_dlkfm_method(identity_checkpoint, init="mhn", init_predictor=stand_in,
                                       jit_compile=False)
        H0 = aligner.initial_homographies(inputs, templates)
        assert calls == [(inputs.shape, templates.shape)]
        start = geometry.homography_to_corners(H0, 64).numpy()
        np.testing.assert_allclose(start[[0, 2]], dst[[0, 2]] + 1.0, atol=1e-6)
        np.testing.assert_allclose(start[1], CENTRE_96, atol=1e-9)
        corners, failed = aligner(inputs, templates)
        assert not failed.any() and np.linalg.norm(corners - dst, axis=-1).mean() < 0.25

    def test_several_starts_keep_the_lowest_residual(self, identity_checkpoint, textured_problem):
        """Two starts, one inside the basin (the truth + 1 px) and one far outside (22 px off):
        whichever order they come in, each pair keeps the estimate from the good start, which is
        the single good start's result exactly; the far start alone ends far from the truth."""
        inputs, templates, dst = textured_problem
        good = lambda i, t: (dst + 1.0, np.zeros(len(i), bool))  # noqa: E731
        far = lambda i, t: (dst + np.array([22.0, -22.0]), np.zeros(len(i), bool))  # noqa: E731
        single = {}
        for name, predictor in (("good", good), ("far", far)):
            single[name], _ = D.build_dlkfm_method(identity_checkpoint, init=name, init_predictor=predictor,
                                                   jit_compile=False)(inputs, templates)
        assert np.linalg.norm(single["good"] - dst, axis=-1).mean() < 0.25
        assert np.all(np.linalg.norm(single["far"] - dst, axis=-1).mean(-1) > 5.0)
        for order in (["good", "far"], ["far", "good"]):
            predictors = [dict(good=good, far=far)[n] for n in order]
            aligner = D.build_dlkfm_method(identity_checkpoint, init=order, init_predictor=predictors,
                                           jit_compile=False)
            assert aligner.start_homographies(inputs, templates).shape == (2, 3, 3, 3)
            corners, failed = aligner(inputs, templates)
            assert not failed.any()
            np.testing.assert_allclose(corners, single["good"], atol=1e-4)
        with pytest.raises(ValueError, match="as many predictors"):
            D.build_dlkfm_method(identity_checkpoint, init=["good", "far"], init_predictor=[good])
        with pytest.raises(ValueError, match="twice"):
            D.build_dlkfm_method(identity_checkpoint, init=["centred", "centred"])

    def test_several_starts_through_methods(self, identity_checkpoint, textured_problem):
        """`methods` builds one predictor per named start (none for the centred guess)."""
        inputs, templates, _ = textured_problem
        aligner = methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint,
                                     init=("centred", "lk_mind"), jit_compile=False)
        assert aligner.init == ["centred", "lk_mind"]
        assert aligner.init_predictor[0] is None and callable(aligner.init_predictor[1])
        with pytest.raises(ValueError, match="cannot start from itself"):
            methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint, init=["lk_mind", "dlkfm"])

    def test_feature_residual_matches_opencv(self):
        """LK's objective at an estimate: float64 NumPy over cv2.warpPerspective's warp and mask."""
        rng = np.random.default_rng(3)
        images = rng.uniform(0, 1, (2, 40, 40, 3)).astype(np.float32)
        templates = rng.uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
        H = np.array([[[1.0, 0.05, 6.3], [-0.03, 0.98, 7.1], [0, 0, 1]],
                      [[1.0, 0.0, 30.0], [0.0, 1.0, 2.0], [0, 0, 1]]])  # the second half outside
        got = D.feature_residual(images, templates, H).numpy()
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        for b in range(2):
            warped = cv2.warpPerspective(images[b].astype(np.float64), H[b], (24, 24), flags=flags)
            ones = cv2.warpPerspective(np.ones((40, 40)), H[b], (24, 24), flags=flags)
            mask = ones > 1 - 1e-6
            ref = np.sum((warped - templates[b]) ** 2 * mask[..., None]) / (mask.sum() * 3)
            if mask.mean() < 0.5:
                assert got[b] == np.inf
            else:
                np.testing.assert_allclose(got[b], ref, rtol=1e-3)
        assert np.isfinite(got[0]) and got[1] == np.inf
        assert D.feature_residual(images[:1], templates[:1], np.full((1, 3, 3), np.nan)).numpy()[0] == np.inf

    def test_sift_start(self, identity_checkpoint, textured_problem):
        inputs, templates, dst = textured_problem
        aligner = D.build_dlkfm_method(identity_checkpoint, init="sift", jit_compile=False)
        sharp = make_pairs(smooth_rgb(1.0, seed=3, size=96), dst, 64)
        flat = np.full_like(inputs, 0.5), np.full_like(templates, 0.5)
        H_sharp = aligner.initial_homographies(*sharp)
        H_flat = aligner.initial_homographies(*flat)
        # SIFT matches the textured pairs; the textureless ones fall back to the centred start.
        err = np.linalg.norm(geometry.homography_to_corners(H_sharp, 64).numpy() - dst, axis=-1)
        assert err.mean() < 1.0
        np.testing.assert_allclose(geometry.homography_to_corners(H_flat, 64).numpy(),
                                   np.broadcast_to(CENTRE_96, (3, 4, 2)), atol=1e-9)

    def test_any_method_can_start_it(self, identity_checkpoint, textured_problem):
        """`methods` builds the method named by `init` (here the training-free lk_mind) and
        DLKFM starts from its corners."""
        inputs, templates, _ = textured_problem
        aligner = methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint, init="lk_mind",
                                     jit_compile=False)
        assert aligner.init == "lk_mind"
        # a model on RGB features starts from the centred guess unless told otherwise
        assert methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint,
                                  jit_compile=False).init == "centred"
        assert D.default_init(identity_checkpoint / "nothing") == "centred"
        expected, failed = methods.get_method("lk_mind")(inputs, templates)
        start = geometry.homography_to_corners(aligner.initial_homographies(inputs, templates), 64)
        ok = ~failed
        assert ok.any()
        np.testing.assert_allclose(start.numpy()[ok], expected[ok], atol=1e-3)
        with pytest.raises(ValueError, match="cannot start from itself"):
            methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint, init="dlkfm")
        with pytest.raises(RuntimeError, match="nosuch"):
            methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint, init="nosuch")

    def test_mhn_missing_is_a_clear_error(self, identity_checkpoint, tmp_path):
        with pytest.raises(ValueError, match="init_predictor"):
            D.build_dlkfm_method(identity_checkpoint, init="mhn")
        # deeplk.methods passes the trained mhn method: here there is none.
        with pytest.raises(RuntimeError, match=str(identity_checkpoint / "mhn")):
            methods.get_method("dlkfm", checkpoint_dir=identity_checkpoint, init="mhn")

    def test_missing_checkpoint_names_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dlkfm")):
            methods.get_method("dlkfm", checkpoint_dir=tmp_path)
        write_run_config(D.level_dir(tmp_path, 1), D.FAMILY, dict(  # a config but no weights
            channels=3, num_blocks=0, leaky_alpha=0.2, bn_momentum=0.9, feature_type="regular",
            normalise=True))
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dlkfm")):
            D.build_dlkfm_method(tmp_path)
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dlkfm" / "level3")):
            D.build_dlkfm_method(tmp_path, levels=3)
        with pytest.raises(ValueError, match="init"):
            D.build_dlkfm_method(tmp_path, init="orb")


def test_config_is_validated():
    config = D.DLKFMConfig(channels=4, num_blocks=1)
    assert config.normalise is True and config.to_dict() == {**D.DLKFMConfig().to_dict(), **TINY}
    assert D.DLKFMTask(1, "unused", **config.to_dict()).arch == config.to_dict()
    for bad, name in ((dict(channels=0), "channels"), (dict(feature_type="x"), "feature_type"),
                      (dict(normalise="yes"), "normalise")):
        with pytest.raises(ValueError, match=name):
            D.DLKFMConfig(**bad)


# --------------------------------------------------------------------------------------------
# The MIND input representation and the unrolled loss
# --------------------------------------------------------------------------------------------


def test_aligner_iteration_caps_default_to_align_images():
    """Every DLKFM model, on learned features or MIND, caps LK at `align_images`' 15 / 5 / 2
    iterations per level unless told (the pyramid solver's own default, 30 / 10 / 5, changed
    the released DemoMultimodal mean PE from 54.0 to 66.7 px when it leaked in)."""
    from deeplk.lk.align import align_defaults

    for levels, arch in ((3, TINY), (2, TINY), (3, MIND_TINY)):
        model = D.make_dlkfm_net(levels, **arch)
        aligner = D.DLKFMAligner(model, jit_compile=False)
        assert aligner.max_iterations == align_defaults(levels)["max_iterations"]
        assert aligner._solver_options.max_iterations == ((15, 5, 2) if levels == 3 else (15, 2))
    assert D.DLKFMAligner(model, jit_compile=False, max_iterations=7)._solver_options.max_iterations == 7


MIND_TINY = dict(channels=5, num_blocks=1, normalise=False, input_representation="mind")


@pytest.fixture(scope="module")
def inverted_problem():
    """Three 96 / 64 pairs whose templates have inverted contrast (1 - image), corners +-5 px."""
    rng = np.random.default_rng(11)
    dst = CENTRE_96[None] + rng.uniform(-5, 5, (3, 4, 2))
    inputs, templates = make_pairs(smooth_rgb(2.0, seed=4, size=96), dst, 64)
    return inputs, (1.0 - templates).astype(np.float32), dst


class TestMindRepresentation:
    def test_untrained_model_is_lk_mind(self, inverted_problem):
        """Zero-initialised heads: the features are the lk_mind pyramid (zero-padded), and the
        aligner's defaults are lk_mind's solver settings, so the two give the same corners."""
        inputs, templates, dst = inverted_problem
        model = D.make_dlkfm_net(3, **MIND_TINY)
        aligner = D.DLKFMAligner(model, jit_compile=False)
        corners, failed = aligner(inputs, templates)
        ref, ref_failed = methods.get_method("lk_mind")(inputs, templates)
        assert not failed.any() and not ref_failed.any()
        np.testing.assert_allclose(corners, ref, atol=1e-3)
        # ... and both recover the truth (known answer) despite the inverted contrast.
        assert np.linalg.norm(corners - dst, axis=-1).mean() < 0.5

    def test_features_are_the_descriptor_pyramid(self, inverted_problem):
        from deeplk.descriptors import mind
        from deeplk.lk import build_pyramid, gaussian_blur

        inputs, _, _ = inverted_problem
        model = D.make_dlkfm_net(3, **MIND_TINY)
        features = [f for f, _ in model.extract(inputs[:1], inputs[:1, :64, :64])]
        pyramid = build_pyramid(mind(tf.constant(inputs[:1])), 3)[::-1]  # level 1 first
        for k, (f, p) in enumerate(zip(features, pyramid), start=1):
            assert f.shape == (1, 96 // 2 ** (k - 1), 96 // 2 ** (k - 1), 5)
            np.testing.assert_allclose(f[..., :4], gaussian_blur(p, D.MIND_BLUR[k]), atol=1e-6)
            np.testing.assert_array_equal(f[..., 4:], 0.0)
        assert model.half_pixel_centers and not D.make_dlkfm_net(1, **TINY).half_pixel_centers

    def test_config_round_trip_and_reload(self, tmp_path):
        ds = tiny_dataset()
        config = dict(steps=2, learning_rate=1e-2, progress=False, log_every=1)
        results = {}
        for level in (1, 2, 3):
            options = dict(loss="unrolled", start_perturbation=4.0, unroll_iterations=3) \
                if level == 3 else {}
            arch = MIND_TINY if level == 1 else {}
            task = D.DLKFMTask(level, tmp_path, num_perturbations=1, **arch, **options)
            results[level] = train(task, ds, TrainConfig(checkpoint_dir=task.checkpoint_dir,
                                                         **config))
        assert set(results[3].metrics) == {"mse"} and np.isfinite(results[3].final_loss)
        record = json.loads((tmp_path / "dlkfm" / "level3" / RUN_CONFIG_NAME).read_text())
        assert record["model"]["input_representation"] == "mind"
        assert record["task"]["loss"] == "unrolled" and record["task"]["unroll_iterations"] == 3
        assert D.level_architecture(tmp_path, 3) == D.DLKFMConfig(**MIND_TINY).to_dict()
        # the trained heads moved away from zero ...
        head = results[3].model.level3_input.head.kernel.numpy()
        assert np.abs(head).max() > 0
        # ... and the reloaded model gives the trained model's features.
        loaded = D.load_dlkfm(tmp_path, 3)
        assert loaded.input_representation == "mind"
        inputs, templates, _ = next(iter(ds))
        for a, b in zip(results[3].model.extract(inputs, templates),
                        loaded.extract(inputs, templates)):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x.numpy(), y.numpy())
        folded = loaded.extract(inputs, templates, fold_batchnorm=True)
        for a, b in zip(loaded.extract(inputs, templates), folded):
            np.testing.assert_allclose(a[0], b[0], atol=1e-4)
        # Without `init` the method starts where a MIND model was trained to start: from lk_mind.
        assert D.default_init(tmp_path) == "lk_mind"
        aligner = methods.get_method("dlkfm", checkpoint_dir=tmp_path, jit_compile=False)
        assert aligner.init == "lk_mind" and aligner.init_predictor is not None
        assert methods.get_method("dlkfm", checkpoint_dir=tmp_path, init="centred",
                                  jit_compile=False).init == "centred"

    def test_level_above_untrained_levels(self, tmp_path):
        """A MIND level can be trained without the levels below: they stay the descriptor."""
        ds = tiny_dataset()
        task = D.DLKFMTask(2, tmp_path, **MIND_TINY, loss="unrolled", unroll_iterations=2)
        result = train(task, ds, TrainConfig(checkpoint_dir=task.checkpoint_dir, steps=1,
                                             progress=False))
        assert D.trained_levels(tmp_path) == [2]
        loaded = D.load_dlkfm(tmp_path, 2)
        inputs, templates, _ = next(iter(ds))
        base = loaded.descriptor_pyramid(inputs, 1)[0][..., :4]
        level1 = loaded.extract(inputs, templates)[0][0]
        np.testing.assert_array_equal(level1[..., :4], base)
        np.testing.assert_array_equal(level1[..., 4:], 0.0)
        assert np.isfinite(result.final_loss)
        with pytest.raises(FileNotFoundError, match="level 1"):  # the RGB chain still needs it
            D.DLKFMTask(2, tmp_path / "rgb", **TINY)

    def test_old_config_without_representation_is_rgb(self, tmp_path):
        write_run_config(D.level_dir(tmp_path, 1), D.FAMILY, dict(
            channels=3, num_blocks=0, leaky_alpha=0.2, bn_momentum=0.9, feature_type="regular",
            normalise=True))
        assert D.level_architecture(tmp_path, 1)["input_representation"] == "rgb"

    def test_bad_options(self, tmp_path):
        with pytest.raises(ValueError, match="input_representation"):
            D.DLKFMConfig(input_representation="sift")
        with pytest.raises(ValueError, match="channels"):
            D.DLKFMConfig(channels=3, input_representation="mind")
        with pytest.raises(ValueError, match="loss"):
            D.DLKFMTask(1, tmp_path, loss="l2")
        with pytest.raises(ValueError, match="unroll_iterations"):
            D.DLKFMTask(1, tmp_path, loss="unrolled", unroll_iterations=0)
        with pytest.raises(ValueError, match="start_perturbation"):
            D.DLKFMTask(1, tmp_path, loss="unrolled", start_perturbation=-1.0)


class TestUnrolledLoss:
    def test_known_answers_and_gradient(self, textured_problem):
        """On a pair whose template is the warped input, LK from the truth stays there (error
        ~0) and from a 3 px start converges to it; the loss equals the corner error of the
        solver's own result, computed independently; gradients reach both feature maps."""
        from deeplk.evaluate import corner_errors
        from deeplk.lk import lucas_kanade

        inputs, templates, dst = textured_problem
        fi, ft = tf.constant(inputs), tf.constant(templates)
        options = LKOptions(max_iterations=20, tolerance=0.0, algorithm="esm")
        at_truth = D.unrolled_lk_loss(fi, ft, dst, dst, 1, (64, 64), False, options).numpy()
        assert at_truth.max() < 0.05
        start = dst + np.random.default_rng(1).uniform(-3, 3, dst.shape)
        with tf.GradientTape() as tape:
            tape.watch([fi, ft])
            loss = D.unrolled_lk_loss(fi, ft, dst, start, 1, (64, 64), False, options)
        assert loss.numpy().max() < 0.1
        H = lucas_kanade(fi, ft, geometry.corners_to_homography(start, 64), options,
                         jit_compile=False).H
        ref = corner_errors(geometry.homography_to_corners(H, 64).numpy(), dst)
        np.testing.assert_allclose(loss.numpy(), ref, atol=1e-3)
        grads = tape.gradient(loss, [fi, ft])
        assert all(g is not None and np.isfinite(g.numpy()).all() and np.abs(g.numpy()).max() > 0
                   for g in grads)

    def test_coarse_level_scaling(self, textured_problem):
        """At level 2 (features at half size, pixel-area convention) the start and the result
        are scaled to and from the level: starting at the truth gives ~0 error in full-res px."""
        from deeplk.lk import build_pyramid

        inputs, templates, dst = textured_problem
        fi = build_pyramid(tf.constant(inputs), 2)[0]
        ft = build_pyramid(tf.constant(templates), 2)[0]
        options = LKOptions(max_iterations=10, tolerance=0.0, algorithm="esm")
        err = D.unrolled_lk_loss(fi, ft, dst, dst, 2, (64, 64), True, options).numpy()
        assert err.max() < 0.3
