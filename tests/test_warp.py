"""Tests for `deeplk.warp`: bilinear sampling and homography warping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from deeplk import geometry as G
from deeplk import warp as W

CV2_FLAGS = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


def cv2_warp(image: np.ndarray, H: np.ndarray, size_hw) -> np.ndarray:
    """Reference warp of an (H, W, C) image to (h, w, C) with `cv2.warpPerspective`.

    OpenCV interpolates exactly (float coordinates) for up to 4 channels but rounds the sampling
    positions to 1/32 pixel for more, so many-channel images are warped 4 channels at a time.
    """
    chunks = [
        cv2.warpPerspective(
            np.ascontiguousarray(image[..., c : c + 4]),
            H.astype(np.float64),
            (size_hw[1], size_hw[0]),
            flags=CV2_FLAGS,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        ).reshape(size_hw + (-1,))
        for c in range(0, image.shape[-1], 4)
    ]
    return np.concatenate(chunks, axis=-1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A 192 x 192 x 3 textured photo, float32 in [0, 1]."""
    image = cv2.resize(skimage.data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    return image.astype(np.float32) / 255


def smooth_image(
    height: int, width: int, channels: int, dtype=np.float64, seed: int = 0
) -> np.ndarray:
    """Smooth random-phase sinusoids, (height, width, channels), in [0, 1]."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = [
        0.5
        + 0.25
        * np.sin(xx / r.uniform(2, 4) + r.uniform(0, 6))
        * np.cos(yy / r.uniform(2, 4) + r.uniform(0, 6))
        + 0.2 * np.sin((xx - yy) / r.uniform(3, 5))
        for _ in range(channels)
    ]
    return np.stack(chans, axis=-1).astype(dtype)


def translation(tx: float, ty: float, batch: int = 1) -> np.ndarray:
    H = np.eye(3)
    H[0, 2], H[1, 2] = tx, ty
    return np.tile(H, (batch, 1, 1))


class TestSampleBilinear:
    def test_integer_positions_are_exact(self, astronaut):
        img = astronaut[None]
        yy, xx = np.mgrid[10:20, 5:25].astype(np.float32)
        values, mask = W.sample_bilinear(img, xx[None], yy[None])
        np.testing.assert_array_equal(values.numpy()[0], astronaut[10:20, 5:25])
        np.testing.assert_array_equal(mask.numpy(), 1.0)

    def test_known_values(self):
        img = np.arange(12, dtype=np.float64).reshape(1, 3, 4, 1)  # value = 4 y + x
        x = np.array([[[0.5, 2.25, 3.0, 1.0]]])
        y = np.array([[[0.0, 1.5, 2.0, 0.75]]])
        values, mask = W.sample_bilinear(img, x, y)
        np.testing.assert_allclose(
            values.numpy()[..., 0], 4 * y + x, atol=1e-12
        )  # bilinear is exact on affine
        np.testing.assert_array_equal(mask.numpy()[..., 0], 1.0)  # (3, 2) is the last pixel: valid

    def test_outside_and_border(self):
        img = np.ones((1, 4, 5, 2), np.float32)
        x = np.array([[[-0.5, 4.25, 2.0, -3.0, 100.0, np.nan, np.inf, 4.0]]], np.float32)
        y = np.array([[[1.0, 1.0, -0.5, 1.0, 1.0, 1.0, 1.0, 3.0]]], np.float32)
        values, mask = W.sample_bilinear(img, x, y)
        # Half-outside samples blend with 0 (OpenCV BORDER_CONSTANT), far samples are 0.
        np.testing.assert_allclose(values.numpy()[0, 0, :, 0], [0.5, 0.75, 0.5, 0, 0, 0, 0, 1])
        np.testing.assert_array_equal(mask.numpy()[0, 0, :, 0], [0, 0, 0, 0, 0, 0, 0, 1])

    def test_no_mask(self):
        out = W.sample_bilinear(
            np.zeros((2, 4, 4, 3)), np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), return_mask=False
        )
        assert out.shape == (2, 3, 3, 3)

    @pytest.mark.parametrize(
        "img_shape, x_shape, y_shape, match",
        [
            ((4, 4, 3), (1, 2, 2), (1, 2, 2), "images"),
            ((1, 4, 4, 3), (1, 2), (1, 2, 2), "`x`"),
            ((1, 4, 4, 3), (1, 2, 2), (1, 2, 3), "same shape"),
            ((2, 4, 4, 3), (3, 2, 2), (3, 2, 2), "batch size"),
        ],
    )
    def test_exception(self, img_shape, x_shape, y_shape, match):
        with pytest.raises(ValueError, match=match):
            W.sample_bilinear(np.zeros(img_shape, np.float32), np.zeros(x_shape), np.zeros(y_shape))


class TestWarpImage:
    def test_smoke(self, astronaut):
        warped, mask = W.warp_image(astronaut[None], np.eye(3)[None], 128)
        assert warped.shape == (1, 128, 128, 3) and warped.dtype == tf.float32
        assert mask.shape == (1, 128, 128, 1) and mask.dtype == tf.float32
        assert W.warp_image(
            astronaut[None], np.eye(3)[None], (64, 96), return_mask=False
        ).shape == (1, 64, 96, 3)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_identity_is_exact(self, astronaut, dtype):
        images = np.stack([astronaut, astronaut[::-1]]).astype(dtype)
        warped, mask = W.warp_image(images, np.tile(np.eye(3), (2, 1, 1)), 192)
        assert warped.dtype == tf.as_dtype(dtype)
        np.testing.assert_array_equal(warped.numpy(), images)
        np.testing.assert_array_equal(mask.numpy(), 1.0)  # the last row and column are valid

    def test_integer_translation_is_a_crop(self, astronaut):
        warped, mask = W.warp_image(astronaut[None], translation(32, 20), (128, 100))
        np.testing.assert_array_equal(warped.numpy()[0], astronaut[20:148, 32:132])
        np.testing.assert_array_equal(mask.numpy(), 1.0)

    @pytest.mark.parametrize("batch", [1, 5])
    def test_same_as_opencv(self, astronaut, dlkfm_corners, batch):
        src, dst = dlkfm_corners(batch)
        H = G.four_point_homography(src, dst).numpy()
        images = np.stack([np.roll(astronaut, 7 * i, axis=1) for i in range(batch)])
        warped, mask = W.warp_image(images, H, 128)
        ref = np.stack([cv2_warp(img, h, (128, 128)) for img, h in zip(images, H)])
        err = np.abs(warped.numpy() - ref)
        # Same formula as OpenCV's float path: agreement to float32 rounding (measured ~3e-7
        # mean, ~3e-5 max), far inside the 1e-3 mean error the library promises.
        assert err.mean() < 1e-5
        assert err.max() < 1e-4
        np.testing.assert_array_equal(mask.numpy(), 1.0)  # DLKFM templates lie inside the input

    @pytest.mark.parametrize("channels", [1, 3, 64])
    def test_channels(self, rng, dlkfm_corners, channels):
        src, dst = dlkfm_corners(2)
        H = G.four_point_homography(src, dst).numpy()
        # Smoothed noise: a textured multi-channel "feature map".
        noise = rng.uniform(0, 1, (2, 192, 192, channels)).astype(np.float32)
        images = np.stack(
            [cv2.GaussianBlur(n, (0, 0), 1.5).reshape(192, 192, channels) for n in noise]
        )
        warped, _ = W.warp_image(images, H, (96, 128))
        assert warped.shape == (2, 96, 128, channels)
        ref = np.stack([cv2_warp(img, h, (96, 128)) for img, h in zip(images, H)])
        err = np.abs(warped.numpy() - ref)
        assert err.mean() < 1e-5 and err.max() < 1e-4

    def test_mask_and_outside(self, astronaut, rng):
        # A warp that leaves the image: compare everything, borders included, with OpenCV, and the
        # mask with the analytic rule 0 <= x <= W-1, 0 <= y <= H-1.
        src = np.array([[[0, 0], [149, 0], [149, 99], [0, 99]]], np.float64)
        dst = np.array([[[-30, -20], [170, -10], [180, 150], [-10, 200]]], np.float64)
        H = G.four_point_homography(src, dst).numpy()
        warped, mask = W.warp_image(astronaut[None], H, (100, 150))
        warped, mask = warped.numpy()[0], mask.numpy()[0, ..., 0]
        np.testing.assert_allclose(warped, cv2_warp(astronaut, H[0], (100, 150)), atol=1e-4)
        yy, xx = np.mgrid[0:100, 0:150].astype(np.float64)
        p = (
            G.transform_points(H, np.stack([xx, yy], -1).reshape(1, -1, 2))
            .numpy()
            .reshape(100, 150, 2)
        )
        inside = (p[..., 0] >= 0) & (p[..., 0] <= 191) & (p[..., 1] >= 0) & (p[..., 1] <= 191)
        assert 0.2 < inside.mean() < 0.9
        np.testing.assert_array_equal(mask, inside.astype(np.float32))
        far = (p[..., 0] <= -1) | (p[..., 0] >= 192) | (p[..., 1] <= -1) | (p[..., 1] >= 192)
        np.testing.assert_array_equal(warped[far], 0.0)

    def test_mask_of_fractional_translation(self):
        img = np.ones((1, 6, 8, 1), np.float32)
        warped, mask = W.warp_image(img, translation(2.5, -0.5), (6, 8))
        expected = np.zeros((6, 8), np.float32)
        expected[1:, :5] = 1.0  # x + 2.5 <= 7 and y - 0.5 >= 0
        np.testing.assert_array_equal(mask.numpy()[0, ..., 0], expected)
        np.testing.assert_array_equal(warped.numpy()[0, ..., 0][expected == 1], 1.0)

    def test_point_at_infinity(self):
        # Third row (1, 0, -3): the column x = 3 maps to infinity, x < 3 behind the camera.
        H = np.array([[[1.0, 0, 0], [0, 1, 0], [1, 0, -3]]])
        warped, mask = W.warp_image(np.ones((1, 8, 8, 1)), H, 8)
        assert np.all(np.isfinite(warped.numpy()))
        assert np.all(mask.numpy()[0, :, 3] == 0)

    def test_unknown_shapes_in_tf_function(self, astronaut, dlkfm_corners):
        fn = tf.function(
            lambda im, h: W.warp_image(im, h, 128),
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32),
                tf.TensorSpec([None, 3, 3], tf.float32),
            ],
        )
        for batch in (1, 3):
            src, dst = dlkfm_corners(batch)
            H = G.four_point_homography(src, dst)
            images = np.stack([astronaut] * batch)
            got, got_mask = fn(images, H)
            want, want_mask = W.warp_image(images, H, 128)
            assert got.shape == (batch, 128, 128, 3)
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
            np.testing.assert_array_equal(got_mask.numpy(), want_mask.numpy())

    def test_gradcheck_image(self):
        image = smooth_image(7, 9, 2)[None]
        H = translation(0.3, 0.45) @ np.array(
            [[[1.02, 0.05, 0], [-0.03, 0.97, 0], [0.004, -0.003, 1]]]
        )
        theoretical, numerical = tf.test.compute_gradient(
            tf.function(lambda im: W.warp_image(im, H, (6, 8), return_mask=False)),
            [tf.constant(image)],
        )
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-9)

    def test_gradcheck_homography(self):
        image = smooth_image(10, 11, 2)[None]
        H = translation(0.37, 0.41) @ np.array(
            [[[1.02, 0.03, 0], [-0.02, 0.98, 0], [0.002, -0.001, 1]]]
        )
        # Keep every sampling position well away from integer coordinates (the bilinear kinks)
        # and inside the image, so that finite differences see one smooth piece.
        yy, xx = np.mgrid[0:8, 0:9].astype(np.float64)
        p = G.transform_points(H, np.stack([xx, yy], -1).reshape(1, -1, 2)).numpy()
        frac = p - np.floor(p)
        assert np.all((frac > 0.02) & (frac < 0.98)) and p.max() < 9 and p.min() > 0
        theoretical, numerical = tf.test.compute_gradient(
            tf.function(lambda h: W.warp_image(image, h, (8, 9), return_mask=False)),
            [tf.constant(H)],
            delta=1e-5,
        )
        assert np.abs(theoretical[0]).max() > 1e-2  # the coordinates do carry gradient
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-8)

    def test_gradient_through_dlt_is_finite(self, astronaut, dlkfm_corners):
        # End to end: corners -> H -> warp -> loss, with pixels mapped outside the image.
        _, dst = dlkfm_corners(2)
        corners = tf.Variable(dst * 1.3)
        images = tf.constant(np.stack([astronaut] * 2))
        with tf.GradientTape() as tape:
            warped, mask = W.warp_image(images, G.corners_to_homography(corners, 128), 128)
            loss = tf.reduce_mean(tf.square(warped - 0.5) * mask)
        grad = tape.gradient(loss, corners).numpy()
        assert 0 < mask.numpy().mean() < 1
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0

    @pytest.mark.parametrize(
        "img_shape, h_shape, match",
        [
            ((192, 192, 3), (1, 3, 3), "images"),
            ((1, 192, 192, 3), (3, 3), "input_H_template"),
            ((1, 192, 192, 3), (1, 2, 3), r"\(\?, 3, 3\).*got \(1, 2, 3\)"),
            ((2, 192, 192, 3), (3, 3, 3), "batch size"),
        ],
    )
    def test_exception(self, img_shape, h_shape, match):
        with pytest.raises(ValueError, match=match):
            W.warp_image(np.zeros(img_shape, np.float32), np.zeros(h_shape), 128)

    @pytest.mark.parametrize("size", [0, (128,), (128, -1), 12.5])
    def test_bad_output_size(self, size):
        with pytest.raises(ValueError, match="output_size"):
            W.warp_image(np.zeros((1, 8, 8, 1), np.float32), np.eye(3)[None], size)

    def test_integer_images_rejected(self):
        with pytest.raises(ValueError, match="floating"):
            W.warp_image(np.zeros((1, 8, 8, 1), np.uint8), np.eye(3)[None], 8)
