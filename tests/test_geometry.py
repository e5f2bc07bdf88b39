"""Tests for `deeplk.geometry`: one class per public function (kornia style)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry as G


def cv2_homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reference: `cv2.getPerspectiveTransform` per sample, (B, 3, 3) float64."""
    return np.stack(
        [
            cv2.getPerspectiveTransform(s.astype(np.float32), d.astype(np.float32))
            for s, d in zip(src, dst)
        ]
    )


def cv2_transform(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Reference: `cv2.perspectiveTransform` per sample, in float64."""
    return np.stack(
        [
            cv2.perspectiveTransform(p[None].astype(np.float64), h.astype(np.float64))[0]
            for h, p in zip(H, points)
        ]
    )


def random_homographies(rng, batch: int, dtype=np.float64) -> np.ndarray:
    """Well-conditioned random homographies (DLKFM-like, from perturbed corners), via OpenCV."""
    src = np.broadcast_to([[0, 0], [127, 0], [127, 127], [0, 127]], (batch, 4, 2)).astype(
        np.float64
    )
    dst = np.array([[32, 32], [159, 32], [159, 159], [32, 159]]) + rng.uniform(
        -32, 32, (batch, 4, 2)
    )
    return cv2_homographies(src, dst).astype(dtype)


def grid_points(n: int = 9, size: float = 127.0) -> np.ndarray:
    """(1, n*n, 2) points covering a size x size template."""
    t = np.linspace(0.0, size, n)
    return np.stack(np.meshgrid(t, t), axis=-1).reshape(1, -1, 2)


# --------------------------------------------------------------------------------------------


class TestFourPointHomography:
    def test_smoke(self, dlkfm_corners):
        src, dst = dlkfm_corners(2)
        H = G.four_point_homography(src, dst)
        assert H.shape == (2, 3, 3)
        assert H.dtype == tf.float32
        np.testing.assert_allclose(H.numpy()[:, 2, 2], 1.0)

    def test_alias(self):
        assert G.tensor_dlt is G.four_point_homography

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_cardinality(self, dlkfm_corners, batch):
        src, dst = dlkfm_corners(batch)
        assert G.four_point_homography(src, dst).shape == (batch, 3, 3)

    @pytest.mark.parametrize(
        "src_shape, dst_shape, match",
        [
            ((2, 3, 2), (2, 4, 2), "src_points"),
            ((2, 4, 2), (2, 4, 3), "dst_points"),
            ((4, 2), (4, 2), "src_points"),
            ((2, 4, 2), (3, 4, 2), "batch size"),
        ],
    )
    def test_exception(self, src_shape, dst_shape, match):
        with pytest.raises(ValueError, match=match):
            G.four_point_homography(
                np.zeros(src_shape, np.float32), np.zeros(dst_shape, np.float32)
            )

    def test_message_shows_expected_and_actual(self):
        with pytest.raises(ValueError, match=r"\(\?, 4, 2\).*got \(2, 3, 2\)"):
            G.four_point_homography(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)))

    def test_same_as_opencv_float32(self, dlkfm_corners):
        src, dst = dlkfm_corners(64)
        H = G.four_point_homography(src, dst).numpy()
        H_cv = cv2_homographies(src, dst)
        # Compare the maps (not the raw entries, whose scales differ): template corners and a grid.
        np.testing.assert_allclose(cv2_transform(H, src), cv2_transform(H_cv, src), atol=1e-3)
        pts = np.repeat(grid_points(), 64, axis=0)
        np.testing.assert_allclose(cv2_transform(H, pts), cv2_transform(H_cv, pts), atol=1e-3)

    def test_same_as_opencv_float64(self, dlkfm_corners):
        src, dst = dlkfm_corners(64, np.float64)
        H = G.four_point_homography(src, dst)
        assert H.dtype == tf.float64
        np.testing.assert_allclose(H.numpy(), cv2_homographies(src, dst), rtol=1e-9, atol=1e-12)

    def test_maps_src_to_dst(self, rng):
        # Real-valued, non-square configurations, float64: exact up to rounding.
        src = np.array([[0, 0], [63, 0], [63, 47], [0, 47]]) + rng.uniform(-5, 5, (5, 4, 2))
        dst = np.array([[10, 12], [90, 5], [95, 70], [8, 60]]) + rng.uniform(-5, 5, (5, 4, 2))
        H = G.four_point_homography(src, dst)
        np.testing.assert_allclose(G.transform_points(H, src).numpy(), dst, atol=1e-9)

    def test_normalisation_does_not_change_result(self, dlkfm_corners):
        src, dst = dlkfm_corners(8, np.float64)
        a = G.four_point_homography(src, dst, normalise_points=True).numpy()
        b = G.four_point_homography(src, dst, normalise_points=False).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

    def test_identity(self, dlkfm_corners):
        _, dst = dlkfm_corners(3)
        np.testing.assert_allclose(
            G.four_point_homography(dst, dst).numpy(), np.tile(np.eye(3), (3, 1, 1)), atol=1e-6
        )

    def test_unknown_batch_in_tf_function(self, dlkfm_corners):
        spec = tf.TensorSpec([None, 4, 2], tf.float32)
        fn = tf.function(G.four_point_homography, input_signature=[spec, spec])
        for batch in (1, 5):
            src, dst = dlkfm_corners(batch)
            np.testing.assert_allclose(
                fn(src, dst).numpy(), G.four_point_homography(src, dst).numpy(), rtol=1e-6
            )

    def test_gradcheck(self, rng):
        src = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], np.float64) + rng.uniform(
            -3, 3, (2, 4, 2)
        )
        dst = np.array([[32, 32], [159, 32], [159, 159], [32, 159]]) + rng.uniform(
            -32, 32, (2, 4, 2)
        )
        theoretical, numerical = tf.test.compute_gradient(
            tf.function(G.four_point_homography), [tf.constant(src), tf.constant(dst)], delta=1e-3
        )
        for t, n in zip(theoretical, numerical):
            assert np.all(np.isfinite(t))
            np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-9)


class TestTransformPoints:
    def test_smoke(self, rng):
        H = random_homographies(rng, 2, np.float32)
        out = G.transform_points(H, rng.uniform(0, 127, (2, 10, 2)).astype(np.float32))
        assert out.shape == (2, 10, 2) and out.dtype == tf.float32

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_cardinality(self, rng, batch):
        H = random_homographies(rng, batch)
        assert G.transform_points(H, np.zeros((batch, 7, 2))).shape == (batch, 7, 2)

    @pytest.mark.parametrize(
        "h_shape, p_shape, match",
        [
            ((2, 3, 3), (2, 5, 3), "points"),
            ((2, 2, 3), (2, 5, 2), "`H`"),
            ((3, 3), (5, 2), "`H`"),
            ((2, 3, 3), (3, 5, 2), "batch"),
        ],
    )
    def test_exception(self, h_shape, p_shape, match):
        with pytest.raises(ValueError, match=match):
            G.transform_points(np.ones(h_shape), np.ones(p_shape))

    @pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-3), (np.float64, 1e-9)])
    def test_same_as_opencv(self, rng, dtype, atol):
        H = random_homographies(rng, 6)
        pts = rng.uniform(-20, 150, (6, 50, 2))
        out = G.transform_points(H.astype(dtype), pts.astype(dtype))
        assert out.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(out.numpy(), cv2_transform(H, pts), atol=atol)

    def test_scale_invariant(self, rng):
        H = random_homographies(rng, 3)
        pts = rng.uniform(0, 127, (3, 5, 2))
        np.testing.assert_allclose(
            G.transform_points(H * 3.7, pts).numpy(), G.transform_points(H, pts).numpy(), atol=1e-10
        )


class TestTemplateCorners:
    def test_square(self):
        np.testing.assert_array_equal(
            G.template_corners(128).numpy(), [[0, 0], [127, 0], [127, 127], [0, 127]]
        )

    def test_non_square_is_h_w(self):
        np.testing.assert_array_equal(
            G.template_corners((48, 64)).numpy(), [[0, 0], [63, 0], [63, 47], [0, 47]]
        )

    def test_batch_and_dtype(self):
        c = G.template_corners(32, batch=5, dtype=tf.float64)
        assert c.shape == (5, 4, 2) and c.dtype == tf.float64

    @pytest.mark.parametrize("size", [0, -3, 2.5, (4, 5, 6), (4, 0)])
    def test_exception(self, size):
        with pytest.raises(ValueError, match="template_size"):
            G.template_corners(size)


class TestHomographyToCorners:
    def test_smoke(self, rng):
        assert G.homography_to_corners(random_homographies(rng, 2), 128).shape == (2, 4, 2)

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_cardinality(self, rng, batch):
        assert G.homography_to_corners(random_homographies(rng, batch), (64, 96)).shape == (
            batch,
            4,
            2,
        )

    def test_exception(self):
        with pytest.raises(ValueError, match="input_H_template"):
            G.homography_to_corners(np.eye(3), 128)

    def test_identity(self):
        np.testing.assert_array_equal(
            G.homography_to_corners(np.eye(3)[None], (48, 64)).numpy(),
            [[[0, 0], [63, 0], [63, 47], [0, 47]]],
        )

    def test_same_as_opencv(self, rng):
        H = random_homographies(rng, 8).astype(np.float32)
        corners = np.broadcast_to([[0, 0], [127, 0], [127, 127], [0, 127]], (8, 4, 2))
        np.testing.assert_allclose(
            G.homography_to_corners(H, 128).numpy(), cv2_transform(H, corners), atol=1e-3
        )


class TestCornersToHomography:
    def test_smoke(self, dlkfm_corners):
        _, dst = dlkfm_corners(2)
        H = G.corners_to_homography(dst, 128)
        assert H.shape == (2, 3, 3) and H.dtype == tf.float32

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_cardinality(self, dlkfm_corners, batch):
        _, dst = dlkfm_corners(batch)
        assert G.corners_to_homography(dst, 128).shape == (batch, 3, 3)

    def test_exception(self):
        with pytest.raises(ValueError, match="corners"):
            G.corners_to_homography(np.zeros((2, 8)), 128)

    def test_same_as_opencv(self, dlkfm_corners):
        src, dst = dlkfm_corners(32)
        H = G.corners_to_homography(dst, 128).numpy()
        np.testing.assert_allclose(
            cv2_transform(H, grid_points().repeat(32, 0)),
            cv2_transform(cv2_homographies(src, dst), grid_points().repeat(32, 0)),
            atol=1e-3,
        )

    @pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-3), (np.float64, 1e-9)])
    def test_round_trip(self, dlkfm_corners, dtype, atol):
        _, dst = dlkfm_corners(17, dtype)
        back = G.homography_to_corners(G.corners_to_homography(dst, 128), 128)
        assert back.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(back.numpy(), dst, atol=atol)

    def test_round_trip_non_square(self, rng):
        corners = np.array([[5, 3], [70, 8], [66, 50], [2, 45]]) + rng.uniform(-2, 2, (4, 4, 2))
        back = G.homography_to_corners(G.corners_to_homography(corners, (48, 64)), (48, 64))
        np.testing.assert_allclose(back.numpy(), corners, atol=1e-9)


class TestNormaliseHomography:
    def test_normalises(self, rng):
        H = random_homographies(rng, 4)
        k = rng.uniform(0.5, 3.0, (4, 1, 1)) * np.array([1, -1, 1, -1]).reshape(4, 1, 1)
        np.testing.assert_allclose(G.normalise_homography(H * k).numpy(), H, rtol=1e-12)

    def test_dtype(self):
        assert G.normalise_homography(np.eye(3, dtype=np.float32)[None] * 2).dtype == tf.float32

    def test_exception(self):
        with pytest.raises(ValueError, match="H"):
            G.normalise_homography(np.ones((2, 3, 4)))


class TestComposeHomographies:
    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_same_as_numpy(self, rng, batch):
        A, B = random_homographies(rng, batch), random_homographies(rng, batch)
        AB = A @ B
        np.testing.assert_allclose(
            G.compose_homographies(A, B).numpy(), AB / AB[:, 2:, 2:], rtol=1e-12
        )

    def test_order_of_application(self, rng):
        a_H_b, b_H_c = random_homographies(rng, 2), random_homographies(rng, 2)
        pts = rng.uniform(0, 127, (2, 6, 2))
        direct = G.transform_points(G.compose_homographies(a_H_b, b_H_c), pts)
        stepwise = G.transform_points(a_H_b, G.transform_points(b_H_c, pts))
        np.testing.assert_allclose(direct.numpy(), stepwise.numpy(), atol=1e-9)

    def test_exception(self):
        with pytest.raises(ValueError, match="b_H_c"):
            G.compose_homographies(np.ones((2, 3, 3)), np.ones((2, 3)))
        with pytest.raises(ValueError, match="batch"):
            G.compose_homographies(np.ones((2, 3, 3)), np.ones((3, 3, 3)))


class TestInvertHomography:
    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_round_trip(self, rng, batch):
        H = random_homographies(rng, batch)
        eye = np.tile(np.eye(3), (batch, 1, 1))
        np.testing.assert_allclose(
            G.compose_homographies(H, G.invert_homography(H)).numpy(), eye, atol=1e-12
        )
        np.testing.assert_allclose(
            G.compose_homographies(G.invert_homography(H), H).numpy(), eye, atol=1e-12
        )

    def test_same_as_numpy_float32(self, rng):
        H = random_homographies(rng, 5)
        H_inv = G.invert_homography(H.astype(np.float32))
        assert H_inv.dtype == tf.float32
        ref = np.linalg.inv(H)
        ref /= ref[:, 2:, 2:]
        # Compare as point maps on the input frame.
        pts = rng.uniform(0, 191, (5, 20, 2))
        np.testing.assert_allclose(
            cv2_transform(H_inv.numpy(), pts), cv2_transform(ref, pts), atol=1e-3
        )
        np.testing.assert_allclose(H_inv.numpy()[:, 2, 2], 1.0)

    def test_points_round_trip(self, rng):
        H = random_homographies(rng, 3)
        pts = rng.uniform(0, 127, (3, 10, 2))
        back = G.transform_points(G.invert_homography(H), G.transform_points(H, pts))
        np.testing.assert_allclose(back.numpy(), pts, atol=1e-9)

    def test_exception(self):
        with pytest.raises(ValueError, match="H"):
            G.invert_homography(np.eye(3))


class TestScaleHomography:
    @staticmethod
    def scale_points(p: np.ndarray, s: float, half_pixel: bool) -> np.ndarray:
        return (p + 0.5) * s - 0.5 if half_pixel else p * s

    @pytest.mark.parametrize("half_pixel", [True, False])
    @pytest.mark.parametrize("scale", [0.5, 0.25, 2.0])
    def test_point_map(self, rng, half_pixel, scale):
        # Independent construction: scaling the points of the old level and mapping them with H'
        # must land where the old H's images land, scaled.
        H = random_homographies(rng, 4)
        pts = rng.uniform(0, 127, (4, 25, 2))
        H_s = G.scale_homography(H, scale, half_pixel_centers=half_pixel)
        got = G.transform_points(H_s, self.scale_points(pts, scale, half_pixel)).numpy()
        want = self.scale_points(cv2_transform(H, pts), scale, half_pixel)
        np.testing.assert_allclose(got, want, atol=1e-9)
        np.testing.assert_allclose(H_s.numpy()[:, 2, 2], 1.0)

    def test_anisotropic_pair(self, rng):
        H = random_homographies(rng, 2)
        pts = rng.uniform(0, 127, (2, 10, 2))
        H_s = G.scale_homography(H, (0.5, 0.25))
        s = np.array([0.5, 0.25])
        got = G.transform_points(H_s, (pts + 0.5) * s - 0.5).numpy()
        np.testing.assert_allclose(got, (cv2_transform(H, pts) + 0.5) * s - 0.5, atol=1e-9)

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_round_trip(self, rng, batch):
        H = random_homographies(rng, batch)
        back = G.scale_homography(G.scale_homography(H, 0.5), 2.0)
        np.testing.assert_allclose(back.numpy(), H, rtol=1e-9, atol=1e-12)

    def test_identity_stays_identity(self):
        eye = np.eye(3)[None]
        np.testing.assert_allclose(G.scale_homography(eye, 0.5).numpy(), eye, atol=1e-15)

    def test_tensor_scale_and_dtype(self, rng):
        H = random_homographies(rng, 2).astype(np.float32)
        out = G.scale_homography(H, tf.constant(0.5))
        assert out.dtype == tf.float32
        np.testing.assert_allclose(out.numpy(), G.scale_homography(H, 0.5).numpy(), rtol=1e-6)

    def test_matches_opencv_pyramid(self, rng):
        # Warp at full resolution then INTER_AREA-downsample == downsample then warp with H'.
        yy, xx = np.mgrid[0:192, 0:192].astype(np.float32)
        # Smooth (wavelengths >= 150 px), so that resampling differences stay second order while a
        # wrong convention (a quarter-pixel shift at the coarse level) is first order.
        image = (
            0.5 + 0.25 * np.sin(xx / 25.0) * np.cos(yy / 30.0) + 0.2 * np.sin((xx + 2 * yy) / 40.0)
        )
        H = random_homographies(rng, 3)
        errors = {}
        for half_pixel in (True, False):
            err = []
            for h in H:
                full = cv2.warpPerspective(
                    image, h, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
                )
                full_small = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA)
                small = cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA)
                h_s = G.scale_homography(h[None], 0.5, half_pixel_centers=half_pixel).numpy()[0]
                small_warped = cv2.warpPerspective(
                    small, h_s, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
                )
                err.append(np.abs(full_small - small_warped)[4:-4, 4:-4].mean())
            errors[half_pixel] = max(err)
        assert errors[True] < 5e-4
        assert errors[False] > 5 * errors[True]  # the test does tell the conventions apart

    @pytest.mark.parametrize("scale", [0.0, -0.5, (0.5, 0.5, 0.5), (1.0, -1.0)])
    def test_bad_scale(self, scale):
        with pytest.raises(ValueError, match="scale"):
            G.scale_homography(np.eye(3)[None], scale)

    def test_exception(self):
        with pytest.raises(ValueError, match="H"):
            G.scale_homography(np.eye(3), 0.5)


class TestCornerError:
    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_same_as_numpy(self, rng, batch):
        pred, true = rng.uniform(0, 191, (2, batch, 4, 2))
        err = G.corner_error(pred, true)
        assert err.shape == (batch,)
        np.testing.assert_allclose(
            err.numpy(), np.linalg.norm(pred - true, axis=-1).mean(-1), rtol=1e-12
        )

    def test_known_value(self):
        true = np.zeros((1, 4, 2), np.float32)
        pred = np.array([[[3, 4], [0, 0], [0, 1], [-1, 0]]], np.float32)
        err = G.corner_error(pred, true)
        assert err.dtype == tf.float32
        np.testing.assert_allclose(err.numpy(), [(5 + 0 + 1 + 1) / 4])

    def test_gradient_finite_at_zero(self, rng):
        true = tf.constant(rng.uniform(0, 191, (2, 4, 2)))
        pred = tf.Variable(true.numpy().copy())
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(G.corner_error(pred, true))
        grad = tape.gradient(loss, pred).numpy()
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad, 0.0)

    def test_exception(self):
        with pytest.raises(ValueError, match="pred_corners"):
            G.corner_error(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)))
        with pytest.raises(ValueError, match="batch"):
            G.corner_error(np.zeros((2, 4, 2)), np.zeros((1, 4, 2)))
