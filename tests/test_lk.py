"""Tests of deeplk.lk: batched inverse-compositional Lucas-Kanade, pyramid, aligner and layer.

Known answers use synthetic pairs made with OpenCV (template = ``cv2.warpPerspective(image,
H_true, (128, 128), INTER_LINEAR | WARP_INVERSE_MAP)``) on smooth random images. Most tests run
without XLA (faster to trace); one test checks that XLA gives the same answer.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry, lk
from deeplk.lk import LKOptions, LKResult, LucasKanadeLayer, preprocess, solver
from deeplk.warp import warp_image
from deeplk.geometry import centred_homography

CENTRE_192 = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)


@functools.lru_cache(maxsize=None)
def smooth_image(sigma: float, seed: int = 0, size: int = 192) -> np.ndarray:
    """A ``size x size`` float32 image of Gaussian-smoothed noise scaled to [0, 1]."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (image - image.min()) / (image.max() - image.min())


def make_pairs(image: np.ndarray, dst: np.ndarray, size: int = 128):
    """Inputs ``(B, S, S, 1)``, templates ``(B, size, size, 1)`` and ``H_true`` (float64) for the
    input-frame corners ``dst`` ``(B, 4, 2)``."""
    H = geometry.corners_to_homography(dst, size).numpy().astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    templates = np.stack([cv2.warpPerspective(image, h, (size, size), flags=flags) for h in H])
    inputs = np.repeat(image[None], len(dst), axis=0)
    return inputs[..., None], templates[..., None].astype(np.float32), H


def pe(H, dst, size: int = 128) -> np.ndarray:
    """Mean corner error (pixels) of estimates ``H`` against the true corners ``dst``."""
    corners = geometry.homography_to_corners(tf.cast(H, tf.float64), size)
    return geometry.corner_error(corners, dst).numpy()


@pytest.fixture(scope="module")
def single_level_problem():
    """7 pairs on a smooth 192 image, true corners +-16 px, init +-3 px away from the truth."""
    rng = np.random.default_rng(1)
    dst = CENTRE_192 + rng.uniform(-16, 16, size=(7, 4, 2))
    inputs, templates, H_true = make_pairs(smooth_image(4.0), dst)
    init = geometry.corners_to_homography(dst + rng.uniform(-3, 3, size=dst.shape), 128)
    return inputs, templates, init.numpy(), dst, H_true


def run(inputs, templates, init, **kwargs):
    kwargs.setdefault("jit_compile", False)
    return lk.lucas_kanade(inputs, templates, init, **kwargs)


class TestLucasKanade:
    def test_known_answer_subpixel(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        assert pe(init, dst).min() > 1.0
        result = run(inputs, templates, init, tolerance=1e-3)
        assert isinstance(result, LKResult)
        assert result.H.shape == (7, 3, 3) and result.H.dtype == tf.float32
        np.testing.assert_allclose(result.H.numpy()[:, 2, 2], 1.0)
        assert pe(result.H, dst).max() < 0.1
        assert result.converged.numpy().all() and not result.failed.numpy().any()
        assert result.iterations.dtype == tf.int32

    @pytest.mark.parametrize("batch", [1, 4, 7])
    def test_cardinality(self, single_level_problem, batch):
        inputs, templates, init, dst, _ = single_level_problem
        result = run(inputs[:batch], templates[:batch], init[:batch])
        assert result.H.shape == (batch, 3, 3)
        for field in (result.iterations, result.converged, result.failed):
            assert field.shape == (batch,)
        assert pe(result.H, dst[:batch]).max() < 0.1

    def test_per_sample_convergence(self, single_level_problem):
        inputs, templates, init, dst, H_true = single_level_problem
        start = init[:4].copy()
        start[0] = H_true[0]  # sample 0 starts at the answer
        result = run(inputs[:4], templates[:4], start, tolerance=1e-2)
        iterations = result.iterations.numpy()
        assert iterations[0] == 1 and result.converged.numpy()[0]
        assert (iterations[1:] > 1).all()
        assert pe(result.H, dst[:4]).max() < 0.1

    def test_result_does_not_depend_on_the_batch(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        batched = run(inputs, templates, init)
        for i in (0, 3, 6):
            alone = run(inputs[i:i + 1], templates[i:i + 1], init[i:i + 1])
            assert alone.iterations.numpy()[0] == batched.iterations.numpy()[i]
            corners_alone = geometry.homography_to_corners(alone.H, 128).numpy()
            corners_batched = geometry.homography_to_corners(batched.H[i:i + 1], 128).numpy()
            np.testing.assert_allclose(corners_alone, corners_batched, atol=1e-4)

    def test_history(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        result = run(inputs[:3], templates[:3], init[:3], return_history=True)
        history = result.history.numpy()
        assert history.shape == (result.iterations.numpy().max() + 1, 3, 3, 3)
        np.testing.assert_allclose(history[0], init[:3], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(history[-1], result.H.numpy(), rtol=1e-5, atol=1e-5)
        errors = np.stack([pe(h, dst[:3]) for h in history])  # (T, B)
        assert (errors[-1] < errors[0]).all()
        assert run(inputs[:3], templates[:3], init[:3]).history is None

    def test_float64(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        result = run(inputs[:2].astype(np.float64), templates[:2].astype(np.float64), init[:2])
        assert result.H.dtype == tf.float64
        assert pe(result.H, dst[:2]).max() < 0.1

    def test_multichannel_features(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        # Three channels: the image, its square and a shifted copy of its negative.
        def channels(x):
            return np.concatenate([x, x ** 2, 1.0 - x], axis=-1)

        result = run(channels(inputs[:3]), channels(templates[:3]), init[:3])
        assert pe(result.H, dst[:3]).max() < 0.1

    @pytest.mark.parametrize("option", [{"masked_hessian": True}, {"adaptive_damping": True},
                                        {"algorithm": "esm"},
                                        {"algorithm": "esm", "adaptive_damping": True}])
    def test_options_converge(self, single_level_problem, option):
        inputs, templates, init, dst, _ = single_level_problem
        result = run(inputs[:3], templates[:3], init[:3], **option)
        assert pe(result.H, dst[:3]).max() < 0.1
        assert result.converged.numpy().all()

    def test_esm_widens_the_basin(self):
        """Far from the answer (10-14 px corner offsets at a 64 template) ESM converges on
        every pair, the inverse-compositional update with the same caps on fewer."""
        rng = np.random.default_rng(7)
        centre = np.array([[16, 16], [79, 16], [79, 79], [16, 79]], np.float64)
        dst = centre + rng.uniform(10, 14, (8, 4, 2)) * rng.choice([-1, 1], (8, 4, 2))
        inputs, templates, _ = make_pairs(smooth_image(3.0, seed=4, size=96), dst, size=64)
        init = centred_homography(96, 64, batch=8)
        ic = run(inputs, templates, init, max_iterations=30)
        esm = run(inputs, templates, init, max_iterations=30, algorithm="esm")
        assert (pe(esm.H, dst, 64) < 0.1).sum() > (pe(ic.H, dst, 64) < 0.1).sum()
        assert (pe(esm.H, dst, 64) < 0.1).sum() >= 6

    def test_xla_matches_graph_mode(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        plain = run(inputs[:2], templates[:2], init[:2], jit_compile=False)
        xla = run(inputs[:2], templates[:2], init[:2], jit_compile=True)
        # Rounding differs between the two programs: an update just at the tolerance may stop
        # one iteration earlier or later.
        assert np.abs(plain.iterations.numpy() - xla.iterations.numpy()).max() <= 1
        np.testing.assert_allclose(geometry.homography_to_corners(xla.H, 128).numpy(),
                                   geometry.homography_to_corners(plain.H, 128).numpy(),
                                   atol=1e-3)

    def test_inside_tf_function_with_unknown_batch(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        spec = [tf.TensorSpec([None, 192, 192, 1]), tf.TensorSpec([None, 128, 128, 1]),
                tf.TensorSpec([None, 3, 3])]

        @tf.function(input_signature=spec)
        def align(i, t, h):
            return lk.lucas_kanade(i, t, h).H

        for batch in (2, 3):
            expected = run(inputs[:batch], templates[:batch], init[:batch]).H.numpy()
            got = align(inputs[:batch], templates[:batch], init[:batch].astype(np.float32))
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)

    def test_textureless_template_fails_cleanly(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        flat = np.full_like(templates[:3], 0.5)
        flat[1] = templates[1]  # only samples 0 and 2 are textureless
        stripes = np.tile(np.sin(np.arange(128) / 5.0)[None, None, :, None], (1, 128, 1, 1))
        flat[2] = stripes[0]  # texture in x only: the y parameters are not observable
        result = run(inputs[:3], flat, init[:3])
        np.testing.assert_array_equal(result.failed.numpy(), [True, False, True])
        assert np.isfinite(result.H.numpy()).all()
        np.testing.assert_array_equal(result.H.numpy()[[0, 2]], init[[0, 2]].astype(np.float32))
        np.testing.assert_array_equal(result.iterations.numpy()[[0, 2]], 0)
        assert not result.converged.numpy()[[0, 2]].any()

    def test_non_finite_features_flag_failure(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        bad_input = inputs[:3].copy()
        bad_input[0, 90:100, 90:100] = np.nan  # inside the region the template covers
        bad_input[1, 80, 80] = np.inf
        bad_template = templates[:3].copy()
        bad_template[2, 5, 7] = np.nan
        for i, t in ((bad_input, templates[:3]), (inputs[:3], bad_template)):
            result = run(i, t, init[:3])
            H = result.H.numpy()
            assert np.isfinite(H).all()
            failed = result.failed.numpy()
            assert failed.any()
            np.testing.assert_array_equal(H[failed], init[:3][failed].astype(np.float32))
        result = run(bad_input, templates[:3], init[:3])
        np.testing.assert_array_equal(result.failed.numpy(), [True, True, False])

    def test_estimate_leaving_the_input_fails(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        far = init[:1].copy()
        far[0, :2, 2] += 500.0  # the template lands entirely outside the input
        result = run(inputs[:1], templates[:1], far)
        assert result.failed.numpy()[0]
        np.testing.assert_array_equal(result.H.numpy(), far.astype(np.float32))

    def test_exceptions(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        i, t, h = inputs[:2], templates[:2], init[:2]
        cases = [
            ((i[0], t, h), "input_features"),  # rank 3
            ((i, t[0], h), "template_features"),
            ((i, t, h[0]), "init_H"),
            ((i, t, init[:3]), "batch size"),
            ((inputs[:3], t, h), "batch size"),
            ((np.concatenate([i, i], -1), t, h), "channels"),
            ((i[:, :, :0], t, h), "width"),  # empty image
            ((i, t[:, :1], h), "height"),
            ((i.astype(np.int32), t, h), "floating"),
            ((i.astype(np.float64), t, h), "dtype"),
        ]
        for args, match in cases:
            with pytest.raises(ValueError, match=match):
                run(*args)
        for kwargs, match in [({"max_iterations": 0}, "max_iterations"),
                              ({"tolerance": -1.0}, "tolerance"),
                              ({"damping": float("nan")}, "damping"),
                              ({"min_valid_fraction": 2.0}, "min_valid_fraction")]:
            with pytest.raises(ValueError, match=match):
                run(i, t, h, **kwargs)


def _gradient_problem():
    """Smooth float64 features: an 18 x 18 input, a 12 x 12 template cut from it by H_true,
    and an initial guess about a pixel away."""
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.random((18, 18)), (0, 0), 1.5)[None, ..., None]
    image = (image - image.mean()) / image.std()
    # Generic values: no sample lands exactly on an integer coordinate, where bilinear
    # interpolation (and so the finite differences) is not differentiable.
    H_true = np.array([[[1.0213, 0.0317, 3.2231], [-0.0189, 0.9787, 2.9117],
                        [1.1e-3, -4.7e-4, 1.0]]])
    template = warp_image(image, H_true, 12, return_mask=False).numpy()
    init = H_true.copy()
    init[0, :2, 2] += [0.6123, -0.4077]
    return tf.constant(image), tf.constant(template), tf.constant(init)


class TestGradients:
    def _solve(self, inputs, templates, init):
        return lk.lucas_kanade(inputs, templates, init, max_iterations=3, tolerance=0.0,
                               jit_compile=False).H

    def test_gradient_wrt_both_feature_maps_float64(self):
        inputs, templates, init = _gradient_problem()
        for index, arg in ((0, inputs), (1, templates)):
            def f(x, index=index):
                args = [inputs, templates, init]
                args[index] = x
                return self._solve(*args)

            theoretical, numerical = tf.test.compute_gradient(f, [arg], delta=1e-5)
            assert np.abs(theoretical[0]).max() > 1e-3  # the gradient is not trivially zero
            np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-6)

    def test_gradient_wrt_init_float64(self):
        inputs, templates, init = _gradient_problem()
        theoretical, numerical = tf.test.compute_gradient(
            lambda h: self._solve(inputs, templates, h), [init], delta=1e-6
        )
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-6)

    def test_esm_gradient_wrt_both_feature_maps_float64(self):
        inputs, templates, init = _gradient_problem()
        for index, arg in ((0, inputs), (1, templates)):
            def f(x, index=index):
                args = [inputs, templates, init]
                args[index] = x
                return lk.lucas_kanade(*args, max_iterations=2, tolerance=0.0,
                                       jit_compile=False, algorithm="esm").H

            theoretical, numerical = tf.test.compute_gradient(f, [arg], delta=1e-5)
            assert np.abs(theoretical[0]).max() > 1e-3
            np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-6)

    def test_gradient_through_layer_float32(self):
        inputs, templates, init = (tf.cast(x, tf.float32) for x in _gradient_problem())
        layer = LucasKanadeLayer(max_iterations=3, tolerance=0.0)
        with tf.GradientTape() as tape:
            tape.watch([inputs, templates])
            H = layer([inputs, templates, init])
        for g in tape.gradient(H, [inputs, templates]):
            assert g is not None and np.isfinite(g.numpy()).all()
            assert np.abs(g.numpy()).max() > 0


class TestSampler:
    """The iterations' sampler reproduces `deeplk.warp.warp_image` (values and mask)."""

    @pytest.mark.parametrize("channels,dtype", [(1, np.float32), (3, np.float64)])
    def test_matches_warp_image(self, rng, channels, dtype):
        images = rng.random((4, 20, 25, channels)).astype(dtype)
        H = np.array([
            [[1.1, 0.1, -3.3], [0.05, 0.9, -2.7], [1e-3, 2e-3, 1.0]],  # out at the top left
            [[0.9, -0.05, 4.2], [0.1, 1.05, 2.1], [-2e-3, 1e-3, 1.0]],  # inside
            [[1.0, 0.0, 9.0], [0.0, 1.0, 6.0], [0.0, 0.0, 1.0]],  # exactly on the last row/col
            [[1.2, 0.3, 14.5], [-0.2, 1.1, 9.6], [3e-3, 1e-3, 1.0]],  # out at the bottom right
        ], dtype=dtype)
        tmpl = solver._Template(tf.zeros((4, 14, 16, channels), dtype), 1e-7)
        x, y = solver._warp_coordinates(tf.constant(H), tmpl.xs, tmpl.ys)
        values, mask = solver._Input(tf.constant(images)).sample(x, y)
        expected, expected_mask = warp_image(images, H, (14, 16))
        assert 0.3 < mask.numpy().mean() < 0.95  # inside, border and outside are covered
        values = tf.reshape(values, expected.shape)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(values.numpy(), expected.numpy(), atol=tol)
        np.testing.assert_array_equal(mask.numpy(), expected_mask.numpy()[..., 0])

    def test_hessian_and_gradient_moments_match_the_jacobian(self, rng):
        h, w, c = 9, 12, 2
        tmpl = solver._Template(tf.constant(rng.random((2, h, w, c))), 1e-7)
        N, _ = solver._frame(h, w)
        y, x = np.mgrid[0:h, 0:w]
        xn, yn = N[0, 0] * x + N[0, 2], N[1, 1] * y + N[1, 2]
        zero, one = np.zeros_like(xn), np.ones_like(xn)
        Jx = np.stack([xn, yn, one, zero, zero, zero, -xn * xn, -xn * yn], -1)
        Jy = np.stack([zero, zero, zero, xn, yn, one, -xn * yn, -yn * yn], -1)
        gx, gy = tmpl.gx.numpy(), tmpl.gy.numpy()  # (B, h, w, C)
        sd = gx[..., None] * Jx[None, :, :, None] + gy[..., None] * Jy[None, :, :, None]
        sd = sd.reshape(2, -1, 8)
        np.testing.assert_allclose(tmpl.hessian_full.numpy(), np.einsum("bnk,bnl->bkl", sd, sd),
                                   rtol=1e-10, atol=1e-10)
        ex, ey = rng.random((2, h, w)), rng.random((2, h, w))
        b = np.einsum("bhw,hwk->bk", ex, Jx) + np.einsum("bhw,hwk->bk", ey, Jy)
        np.testing.assert_allclose(tmpl.gradient(tf.constant(ex), tf.constant(ey)).numpy(), b,
                                   rtol=1e-10, atol=1e-10)


class TestPyramid:
    def test_build_pyramid(self, rng):
        images = rng.random((2, 13, 10, 3)).astype(np.float32)
        pyramid = lk.build_pyramid(images, 3)
        assert [tuple(p.shape) for p in pyramid] == [(2, 3, 2, 3), (2, 6, 5, 3), (2, 13, 10, 3)]
        expected = images[:, :12].reshape(2, 6, 2, 5, 2, 3).mean(axis=(2, 4))
        np.testing.assert_allclose(pyramid[1].numpy(), expected, rtol=1e-6)
        with pytest.raises(ValueError, match="too small"):
            lk.build_pyramid(images, 5)

    def test_known_answer_from_centred_guess(self):
        """DLKFM-style +-16..32 px corner perturbations, 3 levels, the centred guess."""
        rng = np.random.default_rng(3)
        dst = CENTRE_192 + rng.uniform(16, 32, (5, 4, 2)) * rng.choice([-1, 1], (5, 4, 2))
        inputs, templates, _ = make_pairs(smooth_image(12.0), dst)
        init = centred_homography(192, 128, batch=5)
        pyramids = [
            [lk.gaussian_blur(x, s) for x, s in zip(lk.build_pyramid(images, 3), (1, 1, 0))]
            for images in (inputs, templates)
        ]
        result = lk.pyramid_lucas_kanade(*pyramids, init, jit_compile=False,
                                         return_history=True)
        assert pe(init, dst).min() > 16
        assert pe(result.H, dst).max() < 0.1
        history = result.history.numpy()
        assert history.shape[1:] == (5, 3, 3)
        assert history.shape[0] >= 3 + result.iterations.numpy().max()
        np.testing.assert_allclose(history[0], init.numpy(), atol=1e-4)
        np.testing.assert_allclose(history[-1], result.H.numpy(), atol=1e-4)

    def test_one_level_equals_lucas_kanade(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        a = lk.pyramid_lucas_kanade([inputs[:2]], [templates[:2]], init[:2], max_iterations=50,
                                    jit_compile=False)
        b = run(inputs[:2], templates[:2], init[:2])
        np.testing.assert_allclose(a.H.numpy(), b.H.numpy(), rtol=1e-6, atol=1e-6)

    def test_exceptions(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        i, t, h = inputs[:1], templates[:1], init[:1]
        pi, pt = lk.build_pyramid(i, 2), lk.build_pyramid(t, 2)
        with pytest.raises(ValueError, match="lists"):
            lk.pyramid_lucas_kanade(i, t, h)
        with pytest.raises(ValueError, match="same length"):
            lk.pyramid_lucas_kanade(pi, pt[1:], h)
        with pytest.raises(ValueError, match="double"):
            lk.pyramid_lucas_kanade([pi[0][:, :40], pi[1]], pt, h)
        with pytest.raises(ValueError, match="max_iterations"):
            lk.pyramid_lucas_kanade(pi, pt, h, max_iterations=(10, 10, 10))
        with pytest.raises(ValueError, match="algorithm"):
            lk.pyramid_lucas_kanade(pi, pt, h, algorithm="gauss")
        with pytest.raises(ValueError, match="algorithm"):
            lk.pyramid_lucas_kanade(pi, pt, h, algorithm=("esm",))
        with pytest.raises(ValueError, match="coarse_motions"):
            lk.pyramid_lucas_kanade(pi, pt, h, coarse_motions=(("rotation", 3),))
        with pytest.raises(ValueError, match="coarse_motions"):
            lk.pyramid_lucas_kanade(pi, pt, h, coarse_motions=("translation",))

    @pytest.mark.parametrize("motion", ["translation", "affine"])
    def test_coarse_motion_stage_recovers_its_motion_exactly(self, motion):
        """A pure translation (or affine warp) is recovered by the restricted stage alone (the
        homography level gets no iteration to speak of), and the stage never moves the
        perspective row of H (nor, for translation, the linear part)."""
        rng = np.random.default_rng(11)
        image = smooth_image(4.0, seed=2, size=96)
        shift = rng.uniform(-5, 5, (4, 1, 2))
        centre = np.array([[16, 16], [79, 16], [79, 79], [16, 79]], np.float64)
        if motion == "translation":
            dst = centre + shift
        else:
            A = np.eye(2) + rng.uniform(-0.06, 0.06, (4, 2, 2))
            dst = (centre - 47.5) @ np.transpose(A, (0, 2, 1)) + 47.5 + shift
        inputs, templates, _ = make_pairs(image, dst, size=64)
        init = centred_homography(96, 64, batch=4)
        stage_only = lk.pyramid_lucas_kanade(
            [inputs], [templates], init, max_iterations=1, tolerance=1e-3,
            coarse_motions=((motion, 50),), jit_compile=False, return_history=True)
        history = stage_only.history.numpy()
        # The stage's estimates: all but the last two rows (initial guess of the homography level
        # and its single update).
        stage = history[:-2]
        np.testing.assert_allclose(stage[..., 2, :2], 0.0, atol=1e-7)
        if motion == "translation":
            np.testing.assert_allclose(stage[..., :2, :2],
                                       np.broadcast_to(np.eye(2), stage[..., :2, :2].shape),
                                       atol=1e-6)
        assert pe(stage[-1], dst, 64).max() < 0.02
        assert pe(stage_only.H, dst, 64).max() < 0.02


class TestAlignImages:
    def test_defaults_are_the_benchmarked_settings(self):
        """Intentional: align_images (the `lk` method) runs a translation stage, ESM at the
        coarse levels and IC at the finest; its result equals the explicit call."""
        rng = np.random.default_rng(5)
        dst = CENTRE_192 + rng.uniform(-24, 24, (3, 4, 2))
        inputs, templates, _ = make_pairs(smooth_image(8.0, seed=3), dst)
        default = lk.align_images(inputs, templates, jit_compile=False)
        explicit = lk.align_images(
            inputs, templates, jit_compile=False, max_iterations=(15, 5, 2),
            tolerance=(0.1, 0.05, 0.01), algorithm=("esm", "esm", "inverse_compositional"),
            coarse_motions=(("translation", 5),))
        np.testing.assert_array_equal(default.H.numpy(), explicit.H.numpy())
        assert pe(default.H, dst).max() < 0.1

    def test_rgb_from_centred_guess(self):
        rng = np.random.default_rng(5)  # three perturbations inside the basin
        dst = CENTRE_192 + rng.uniform(16, 32, (3, 4, 2)) * rng.choice([-1, 1], (3, 4, 2))
        base = smooth_image(12.0)
        rgb = np.stack([base, 0.5 * base + 0.5 * smooth_image(12.0, seed=1), 1.0 - base], -1)
        H = geometry.corners_to_homography(dst, 128).numpy().astype(np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        templates = np.stack([cv2.warpPerspective(rgb, h, (128, 128), flags=flags) for h in H])
        inputs = np.repeat(rgb[None], 3, axis=0)
        for grayscale in (True, False):
            result = lk.align_images(inputs, templates, grayscale=grayscale, jit_compile=False)
            assert pe(result.H, dst).max() < 0.1

    def test_host_and_program_preprocessing_agree(self):
        """Eager calls build the grey pyramids with OpenCV on the host; the result equals the
        one with the pyramids built inside the program (float rounding only)."""
        rng = np.random.default_rng(7)
        dst = CENTRE_192 + rng.uniform(-20, 20, (2, 4, 2))
        base = smooth_image(8.0, seed=2)
        rgb = np.stack([base, smooth_image(8.0, seed=4), 1.0 - base], -1)
        H = geometry.corners_to_homography(dst, 128).numpy().astype(np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        templates = np.stack([cv2.warpPerspective(rgb, h, (128, 128), flags=flags) for h in H])
        inputs = np.repeat(rgb[None], 2, axis=0).astype(np.float32)
        templates = templates.astype(np.float32)
        settings = dict(jit_compile=False, max_iterations=(6, 3, 2))
        host = lk.align_images(inputs, templates, preprocess_on_host=True, **settings)
        program = lk.align_images(inputs, templates, preprocess_on_host=False, **settings)
        default = lk.align_images(inputs, templates, **settings)
        np.testing.assert_array_equal(default.H.numpy(), host.H.numpy())
        corners = [geometry.homography_to_corners(r.H, 128).numpy() for r in (host, program)]
        np.testing.assert_allclose(corners[0], corners[1], atol=1e-3)
        np.testing.assert_array_equal(host.iterations.numpy(), program.iterations.numpy())

    def test_preprocess_on_host_errors(self):
        x = np.zeros((1, 64, 64, 3), np.float32)
        t = np.zeros((1, 32, 32, 3), np.float32)
        with pytest.raises(ValueError, match="preprocess_on_host"):
            lk.align_images(x, t, levels=2, grayscale=False, preprocess_on_host=True)
        with pytest.raises(ValueError, match="preprocess_on_host"):
            lk.align_images(x, t.astype(np.float64), levels=2, preprocess_on_host=True)

        @tf.function
        def inside(a, b):
            return lk.align_images(a, b, levels=2, preprocess_on_host=True).H

        with pytest.raises(ValueError, match="preprocess_on_host"):
            inside(x, t)

    def test_settings_errors(self):
        x = np.zeros((1, 192, 192, 1), np.float32)
        t = np.zeros((1, 128, 128, 1), np.float32)
        with pytest.raises(ValueError, match="too small"):
            lk.align_images(x, t, levels=8)
        with pytest.raises(ValueError, match="blur_sigma"):
            lk.align_images(x, t, blur_sigma=(1.0, 1.0))
        with pytest.raises(TypeError, match="unexpected"):
            lk.align_images(x, t, bogus=1)


class TestHelpers:
    def test_to_grayscale_and_blur(self, rng):
        rgb = rng.random((2, 8, 9, 3)).astype(np.float32)
        np.testing.assert_allclose(lk.to_greyscale(rgb).numpy(),
                                   tf.image.rgb_to_grayscale(rgb).numpy(), atol=1e-6)
        constant = np.full((1, 9, 7, 2), 0.25, np.float32)
        np.testing.assert_allclose(lk.gaussian_blur(constant, 1.5).numpy(), constant, rtol=1e-6)
        impulse = np.zeros((1, 9, 9, 1), np.float32)
        impulse[0, 4, 4] = 1.0
        blurred = lk.gaussian_blur(impulse, 1.0).numpy()[0, ..., 0]
        np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
        np.testing.assert_allclose(blurred.sum(), 1.0, rtol=1e-5)
        assert lk.gaussian_blur(impulse, 0.0) is not None


    @pytest.mark.parametrize("shape", [(2, 5, 4), (1, 2, 7), (2, 6, 3, 2)])
    def test_template_gradients_match_numpy(self, rng, shape):
        """Central differences inside, one-sided at the border: `np.gradient`'s definition."""
        T = rng.random(shape)
        gx, gy = solver._template_gradients(tf.constant(T))
        np.testing.assert_allclose(gx.numpy(), np.gradient(T, axis=2), rtol=0, atol=1e-14)
        np.testing.assert_allclose(gy.numpy(), np.gradient(T, axis=1), rtol=0, atol=1e-14)

    def test_blur_of_a_level_smaller_than_the_kernel(self):
        constant = np.full((1, 2, 3, 1), 0.5, np.float32)  # kernel of sigma 1 has 5 taps
        np.testing.assert_allclose(lk.gaussian_blur(constant, 1.0).numpy(), constant, rtol=1e-6)

    @pytest.mark.parametrize(
        "shape, levels, sigmas, grayscale, dtype",
        [((3, 40, 36, 3), 3, (1.0, 1.0, 0.0), True, np.float32),
         ((2, 9, 11, 1), 2, (0.7, 1.5), True, np.float64),
         ((2, 8, 8, 3), 3, (1.0, 2.0, 0.0), True, np.float32),
         ((1, 13, 10, 1), 3, (0.0, 0.0, 0.0), False, np.float32)],
    )
    def test_host_pyramid_matches_program(self, rng, shape, levels, sigmas, grayscale, dtype):
        """OpenCV/NumPy grey conversion, 2x2 pooling and normalised blur (eager `align_images`)
        against the TensorFlow ones of the compiled program; odd sizes and a 2x2 level blurred
        with a 5-tap kernel included."""
        images = rng.random(shape).astype(dtype)
        host = preprocess._host_pyramid(images, levels, grayscale, sigmas)
        program = preprocess._preprocess(tf.constant(images), levels, grayscale, sigmas)
        assert len(host) == len(program) == levels
        for h, p in zip(host, program):
            assert h.dtype == p.dtype and h.shape == tuple(p.shape) + (1,)
            np.testing.assert_allclose(h.numpy()[..., 0], p.numpy(), rtol=0,
                                       atol=1e-6 if dtype == np.float32 else 1e-12)


class TestLucasKanadeLayer:
    def test_call_matches_function_and_config_round_trip(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        layer = LucasKanadeLayer(max_iterations=30, tolerance=1e-3, damping=1e-3,
                                 masked_hessian=True, name="lk")
        H = layer([inputs[:2], templates[:2], init[:2]])
        expected = run(inputs[:2], templates[:2], init[:2], max_iterations=30, tolerance=1e-3,
                       damping=1e-3, masked_hessian=True)
        np.testing.assert_allclose(H.numpy(), expected.H.numpy(), rtol=1e-6)
        full = layer.solve([inputs[:2], templates[:2], init[:2]], return_history=True)
        assert isinstance(full, LKResult) and full.history is not None
        config = layer.get_config()
        assert LKOptions(**config["options"]) == layer.options == LKOptions(
            max_iterations=30, tolerance=1e-3, damping=1e-3, masked_hessian=True)
        clone = LucasKanadeLayer.from_config(config)
        assert clone.get_config() == config
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert isinstance(revived, LucasKanadeLayer) and revived.get_config() == config

    def test_esm_layer_matches_function(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        layer = LucasKanadeLayer(max_iterations=10, algorithm="esm")
        assert LucasKanadeLayer.from_config(layer.get_config()).options.algorithm == "esm"
        same = LucasKanadeLayer(LKOptions(max_iterations=10, algorithm="esm"))
        assert same.get_config()["options"] == layer.get_config()["options"]
        expected = run(inputs[:2], templates[:2], init[:2], max_iterations=10, algorithm="esm")
        np.testing.assert_allclose(layer([inputs[:2], templates[:2], init[:2]]).numpy(),
                                   expected.H.numpy(), rtol=1e-6)
        with pytest.raises(ValueError, match="algorithm"):
            LucasKanadeLayer(algorithm="ecc")

    def test_in_functional_model(self, single_level_problem):
        inputs, templates, init, dst, _ = single_level_problem
        a, b, c = keras.Input((192, 192, 1)), keras.Input((128, 128, 1)), keras.Input((3, 3))
        model = keras.Model([a, b, c], LucasKanadeLayer()([a, b, c]))
        H = model([inputs[:2], templates[:2], init[:2].astype(np.float32)])
        assert pe(H, dst[:2]).max() < 0.1

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="list"):
            LucasKanadeLayer()(tf.zeros((1, 8, 8, 1)))
        with pytest.raises(ValueError, match="max_iterations"):
            LucasKanadeLayer(max_iterations=0)
        with pytest.raises(ValueError, match="one value per level"):
            LucasKanadeLayer(max_iterations=(3, 2))


class TestLKOptions:
    def test_defaults_and_normalised_values(self):
        o = LKOptions(max_iterations=[3, 2], tolerance=np.float64(0.5), algorithm="esm",
                      coarse_motions=[["translation", 4]])
        assert o.max_iterations == (3, 2) and o.tolerance == 0.5 and type(o.tolerance) is float
        assert o.coarse_motions == (("translation", 4),)
        assert LKOptions().damping == 1e-4 and LKOptions().max_iterations is None
        with pytest.raises(dataclasses.FrozenInstanceError):
            o.damping = 1.0

    @pytest.mark.parametrize("field, value", [
        ("max_iterations", 0), ("max_iterations", (3, 0)), ("max_iterations", ()),
        ("tolerance", -1.0), ("tolerance", float("nan")), ("damping", "x"), ("damping", True),
        ("min_rcond", -1e-9), ("min_valid_fraction", 1.5), ("algorithm", "gauss"),
        ("algorithm", ("esm", "newton")), ("coarse_motions", ("translation",)),
        ("coarse_motions", (("rotation", 3),)), ("coarse_motions", (("affine", 0),)),
        ("masked_hessian", 1), ("half_pixel_centers", "yes"), ("adaptive_damping", None),
    ])
    def test_bad_values_name_the_field(self, field, value):
        name = "coarse_motions" if field == "coarse_motions" else field
        with pytest.raises(ValueError, match=name):
            LKOptions(**{field: value})

    def test_unknown_field(self):
        with pytest.raises(TypeError, match="unexpected"):
            LKOptions(iterations=3)
        with pytest.raises(TypeError, match="unexpected"):
            LKOptions.coerce({"iterations": 3})
        with pytest.raises(TypeError, match="options"):
            LKOptions.coerce("esm")

    def test_dict_round_trip(self):
        o = LKOptions(max_iterations=(5, 3), tolerance=(0.1, 0.01), algorithm=("esm", "inverse_compositional"),
                      coarse_motions=(("translation", 5), ("affine", 2)), half_pixel_centers=False)
        d = o.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert LKOptions(**d) == o == LKOptions.coerce(d) == LKOptions.coerce(o)
        assert LKOptions.coerce(d, damping=0.5) == o.replace(damping=0.5)
        assert LKOptions.coerce(None) == LKOptions()

    def test_resolve(self):
        defaults = dict(max_iterations=(30, 10, 5), tolerance=(0.1,) * 3,
                        algorithm=("esm",) * 3, coarse_motions=(("translation", 5),))
        r = LKOptions().resolve(3, **defaults)
        assert r == (defaults["max_iterations"], defaults["tolerance"], defaults["algorithm"],
                     defaults["coarse_motions"])
        r = LKOptions(max_iterations=4, algorithm=("esm", "esm", "inverse_compositional"),
                      coarse_motions=()).resolve(3, **defaults)
        assert r.max_iterations == (4, 4, 4) and r.algorithm[-1] == "inverse_compositional"
        assert r.coarse_motions == ()
        with pytest.raises(ValueError, match="one value per level \\(3\\)"):
            LKOptions(tolerance=(0.1, 0.2)).resolve(3, **defaults)

    def test_motion_names_match_the_solver(self):
        from deeplk.lk import options

        assert tuple(solver._MOTIONS) == options.MOTIONS

    def test_object_and_keywords_agree(self, single_level_problem):
        inputs, templates, init, _, _ = single_level_problem
        o = LKOptions(max_iterations=7, tolerance=1e-3, algorithm="esm")
        a = lk.lucas_kanade(inputs[:2], templates[:2], init[:2], o, jit_compile=False)
        b = lk.lucas_kanade(inputs[:2], templates[:2], init[:2], max_iterations=7, tolerance=1e-3,
                            algorithm="esm", jit_compile=False)
        c = lk.lucas_kanade(inputs[:2], templates[:2], init[:2], o.to_dict(), jit_compile=False,
                            max_iterations=2)
        np.testing.assert_array_equal(a.H.numpy(), b.H.numpy())
        assert c.iterations.numpy().max() <= 2 < a.iterations.numpy().max()

    def test_multichannel_features_align(self, rng):
        """`align_images` without the grey conversion aligns C-channel feature images (e.g.
        descriptors) jointly."""
        dst = CENTRE_192 + rng.uniform(-8, 8, (2, 4, 2))
        feats = np.stack([smooth_image(8.0, seed=s) for s in range(5)], -1).astype(np.float32)
        H = geometry.corners_to_homography(dst, 128).numpy().astype(np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        templates = np.stack([cv2.warpPerspective(feats, h, (128, 128), flags=flags) for h in H])
        result = lk.align_images(np.repeat(feats[None], 2, 0), templates.astype(np.float32),
                                 grayscale=False, jit_compile=False)
        assert not result.failed.numpy().any() and pe(result.H, dst).max() < 0.1
