"""Modality-independent descriptors: known answers, a float64 NumPy/OpenCV reference, invariance
to affine intensity changes (inverted contrast included), float64 gradient checks, errors."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplk.descriptors import DESCRIPTORS, describe, mind, orientation_field


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def _blur_ref(x: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian convolution of one (H, W) float64 plane with OpenCV (zero border,
    divided by the blurred indicator), radius ceil(2 sigma)."""
    if sigma == 0:
        return x
    r = max(1, int(np.ceil(2 * sigma)))
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()

    def conv(p):
        return cv2.sepFilter2D(p, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)

    return conv(x) / conv(np.ones_like(x))


def _mind_ref(img: np.ndarray, offsets, sigma: float, epsilon: float) -> np.ndarray:
    """MIND of one (H, W, C) float64 image by the paper's definition, pixel by pixel shifts with
    edge replication."""
    h, w, _ = img.shape
    p = max(max(abs(dx), abs(dy)) for dx, dy in offsets)
    padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")
    d = np.stack([
        _blur_ref(((img - padded[p + dy:p + dy + h, p + dx:p + dx + w]) ** 2).sum(-1), sigma)
        for dx, dy in offsets
    ], -1)
    v = d.mean(-1, keepdims=True)
    v = v + epsilon * v.mean()
    e = np.exp(-d / v)
    return e / e.max(-1, keepdims=True)


class TestMind:
    @pytest.mark.parametrize("neighbourhood, k", [("four", 4), ("six", 6), ("eight", 8)])
    @pytest.mark.parametrize("batch", [1, 3])
    def test_shape_and_range(self, rng, neighbourhood, k, batch):
        x = rng.random((batch, 20, 24, 3)).astype(np.float32)
        out = mind(x, neighbourhood=neighbourhood)
        assert out.shape == (batch, 20, 24, k) and out.dtype == tf.float32
        out = out.numpy()
        assert np.all(out > 0) and np.all(out <= 1)
        np.testing.assert_allclose(out.max(-1), 1.0)

    @pytest.mark.parametrize("distance, sigma, epsilon", [(1, 1.0, 0.01), (2, 1.5, 0.1), (1, 0.0, 0.5)])
    def test_matches_float64_reference(self, rng, distance, sigma, epsilon):
        x = rng.random((2, 17, 21, 3))
        offsets = [(1, 0), (0, 1), (-1, 0), (0, -1)]
        got = mind(x, distance=distance, sigma=sigma, epsilon=epsilon).numpy()
        for b in range(2):
            want = _mind_ref(x[b], [(dx * distance, dy * distance) for dx, dy in offsets], sigma, epsilon)
            np.testing.assert_allclose(got[b], want, rtol=1e-8, atol=1e-12)

    def test_known_answer_on_a_ramp(self):
        """I = a x: neighbours along x differ by a, along y by 0, so (with epsilon 0) D = (a^2, 0,
        a^2, 0), V = a^2 / 2 and MIND = (e^-2, 1, e^-2, 1) away from the border."""
        x = np.tile(0.3 * np.arange(24.0), (20, 1))[None, :, :, None]
        out = mind(x, sigma=1.0, epsilon=0.0).numpy()[0, 5:-5, 5:-5]
        np.testing.assert_allclose(out, np.broadcast_to([np.exp(-2), 1, np.exp(-2), 1], out.shape), rtol=1e-12)

    def test_constant_image_is_all_ones(self):
        np.testing.assert_array_equal(mind(np.full((1, 6, 7, 1), 0.4)).numpy(), 1.0)


class TestOrientationField:
    @pytest.mark.parametrize("theta", [0.0, 0.4, 1.3, 2.5, -2.0])
    def test_known_answer_on_a_ramp(self, theta):
        """A linear ramp along theta has one gradient everywhere (one-sided differences at the
        border are exact too): the field is (cos 2t, sin 2t) / (1 + epsilon^2)."""
        ys, xs = np.mgrid[0:15, 0:18].astype(np.float64)
        img = (np.cos(theta) * xs + np.sin(theta) * ys)[None, :, :, None]
        out = orientation_field(img, sigma=1.5, epsilon=0.5).numpy()
        want = np.array([np.cos(2 * theta), np.sin(2 * theta)]) / 1.25
        np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=1e-12)

    def test_matches_numpy_reference(self, rng):
        x = rng.random((2, 13, 16, 3))
        got = orientation_field(x, sigma=1.0, epsilon=0.2).numpy()
        for b in range(2):
            gy, gx = np.gradient(x[b], axis=(0, 1))  # central, one-sided at the border
            gxx, gyy, gxy = (gx * gx).sum(-1), (gy * gy).sum(-1), (gx * gy).sum(-1)
            eps2 = 0.04 * (gxx + gyy).mean()
            for c, f in enumerate((gxx - gyy, 2 * gxy)):
                np.testing.assert_allclose(got[b, ..., c], _blur_ref(f / (gxx + gyy + eps2), 1.0), atol=1e-9)

    @pytest.mark.parametrize("batch", [1, 4])
    def test_shape_range_and_flat_image(self, rng, batch):
        out = orientation_field(rng.random((batch, 9, 11, 1)).astype(np.float32))
        assert out.shape == (batch, 9, 11, 2) and out.dtype == tf.float32
        assert np.all(np.abs(out.numpy()) <= 1)
        np.testing.assert_array_equal(orientation_field(np.full((1, 5, 5, 3), 0.7)).numpy(), 0.0)


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
class TestCommon:
    @pytest.mark.parametrize("a, b", [(-1.0, 1.0), (2.5, -0.3), (0.2, 0.7), (-3.0, 0.0)])
    def test_invariant_to_affine_intensity(self, rng, name, a, b):
        """Inverted contrast (a = -1, b = 1: 1 - image) and any a * image + b give the same
        descriptor."""
        x = rng.random((2, 16, 19, 3))
        np.testing.assert_allclose(describe(a * x + b, name).numpy(), describe(x, name).numpy(),
                                   rtol=1e-9, atol=1e-12)

    def test_depends_on_structure(self, rng, name):
        x = rng.random((1, 16, 19, 1))
        assert np.abs(describe(x, name).numpy() - describe(x[:, ::-1], name).numpy()).max() > 0.1

    def test_gradient_float64(self, rng, name):
        x = tf.constant(rng.random((1, 5, 6, 2)))
        f = tf.function(lambda t: describe(t, name))
        theoretical, numerical = tf.test.compute_gradient(f, [x], delta=1e-6)
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)

    def test_float32_matches_float64(self, rng, name):
        x = rng.random((2, 12, 12, 3))
        np.testing.assert_allclose(describe(x.astype(np.float32), name).numpy(), describe(x, name).numpy(), atol=2e-5)

    def test_bad_input(self, name):
        with pytest.raises(ValueError, match="`images` must have shape"):
            describe(np.zeros((8, 8, 1)), name)
        with pytest.raises(ValueError, match="floating"):
            describe(np.zeros((1, 8, 8, 1), np.uint8), name)
        with pytest.raises(ValueError, match="height"):
            describe(np.zeros((1, 0, 8, 1)), name)
        with pytest.raises(ValueError, match="channel count"):
            describe(np.zeros((1, 8, 8, 0)), name)
        with pytest.raises(ValueError, match="`sigma`"):
            describe(np.zeros((1, 8, 8, 1)), name, sigma=-1.0)
        with pytest.raises(ValueError, match="`epsilon`"):
            describe(np.zeros((1, 8, 8, 1)), name, epsilon=float("nan"))


def test_bad_options():
    x = np.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="unknown descriptor 'sift'"):
        describe(x, "sift")
    with pytest.raises(ValueError, match="`neighbourhood`"):
        mind(x, neighbourhood="five")
    with pytest.raises(ValueError, match="`distance`"):
        mind(x, distance=0)
    with pytest.raises(ValueError, match="`epsilon` must be > 0"):
        orientation_field(x, epsilon=0.0)
    with pytest.raises(ValueError, match="static height"):
        tf.function(lambda t: mind(t), input_signature=[tf.TensorSpec((1, None, 8, 1), tf.float64)]).get_concrete_function()
