"""deeplk.data.protocol: corner boxes, input_H_template, template cutting, validity masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from deeplk.data import protocol as P
from deeplk.geometry_np import is_convex_quad


def _photo192(seed=0):
    import skimage.data

    img = skimage.data.astronaut()
    r = np.random.default_rng(seed)
    y, x = r.integers(0, 512 - 192, size=2)
    return np.ascontiguousarray(img[y : y + 192, x : x + 192])


class TestSampleCorners:
    def test_inside_boxes_and_integer(self):
        rng = np.random.default_rng(0)
        corners = np.stack([P.sample_corners(rng) for _ in range(2000)])
        assert corners.shape == (2000, 4, 2)
        assert np.issubdtype(corners.dtype, np.integer)
        lo = P.CORNER_BOX_ORIGINS
        assert np.all(corners >= lo) and np.all(corners <= lo + 63)
        # TL u, v in [0, 63]; TR u in [128, 191], v in [0, 63]; BR in [128, 191]^2; BL ...
        assert corners[:, 1, 0].min() >= 128 and corners[:, 1, 1].max() <= 63
        assert corners[:, 3, 0].max() <= 63 and corners[:, 3, 1].min() >= 128
        # Uniform over the whole box: both ends reached.
        assert corners[..., 0].min() == 0 and corners[..., 0].max() == 191

    def test_deterministic(self):
        a = P.sample_corners(np.random.default_rng([1, 2, 3]))
        b = P.sample_corners(np.random.default_rng([1, 2, 3]))
        np.testing.assert_array_equal(a, b)


class TestIsConvexQuad:
    def test_accepts_square_and_perturbed(self):
        assert is_convex_quad([[32, 32], [159, 32], [159, 159], [32, 159]], P.MIN_CROSS)
        assert is_convex_quad([[0, 0], [191, 63], [128, 128], [0, 191]], P.MIN_CROSS)

    @pytest.mark.parametrize(
        "corners",
        [
            [[0, 0], [100, 0], [50, 10], [0, 100]],  # reflex vertex (non-convex)
            [[0, 0], [50, 0], [100, 0], [0, 100]],  # collinear triple
            [[0, 0], [0, 100], [100, 100], [100, 0]],  # wrong orientation
            [[0, 0], [100, 100], [100, 0], [0, 100]],  # self-intersecting
        ],
    )
    def test_rejects_degenerate(self, corners):
        assert not is_convex_quad(corners, P.MIN_CROSS)

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"\(4, 2\)"):
            is_convex_quad(np.zeros((3, 2)), P.MIN_CROSS)


class TestHomography:
    def test_maps_template_corners_to_corners(self):
        corners = np.array([[10, 5], [170, 20], [185, 180], [3, 160]])
        h = P.homography_from_corners(corners)
        assert h.shape == (3, 3) and h[2, 2] == pytest.approx(1.0)
        pts = cv2.perspectiveTransform(P.TEMPLATE_CORNERS[None].astype(np.float64), h)[0]
        np.testing.assert_allclose(pts, corners, atol=1e-6)

    def test_identity_placement(self):
        h = P.homography_from_corners([[32, 32], [159, 32], [159, 159], [32, 159]])
        np.testing.assert_allclose(h, [[1, 0, 32], [0, 1, 32], [0, 0, 1]], atol=1e-9)

    def test_shape_error(self):
        with pytest.raises(ValueError, match="corners"):
            P.homography_from_corners(np.zeros((4, 3)))


class TestMakeTemplate:
    def test_identity_is_centre_crop(self):
        src = _photo192()
        h = P.homography_from_corners([[32, 32], [159, 32], [159, 159], [32, 159]])
        np.testing.assert_array_equal(P.make_template(src, h), src[32:160, 32:160])

    def test_exactly_cv2_warp_perspective(self):
        """The spec's call, byte for byte (we warp RGBA internally for speed)."""
        src = _photo192(1)
        for seed in range(5):
            h = P.homography_from_corners(P.sample_corners(np.random.default_rng(seed)))
            ref = cv2.warpPerspective(
                src, h, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            )
            np.testing.assert_array_equal(P.make_template(src, h), ref)
        grey = src[..., 0].copy()
        ref = cv2.warpPerspective(
            grey, h, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        np.testing.assert_array_equal(P.make_template(grey, h), ref)

    def test_equals_original_warp_inverse_and_crop(self):
        """The original code: H_orig maps perturbed corners to the centred square; warp the
        source by H_orig and crop [32:160, 32:160]."""
        src = _photo192()
        corners = P.sample_corners(np.random.default_rng(7))
        h_orig = cv2.getPerspectiveTransform(
            corners.astype(np.float32),
            np.float32([[32, 32], [159, 32], [159, 159], [32, 159]]),
        )
        original = cv2.warpPerspective(src, h_orig, (192, 192))[32:160, 32:160]
        ours = P.make_template(src, P.homography_from_corners(corners))
        # Two interpolation paths: equal up to OpenCV's fixed-point rounding.
        assert np.abs(ours.astype(int) - original.astype(int)).max() <= 2

    def test_template_pixel_samples_source_at_H_p(self):
        src = _photo192().astype(np.float32)
        corners = np.array([[20, 10], [180, 30], [170, 175], [15, 185]])
        h = P.homography_from_corners(corners)
        t = P.make_template(src, h)
        for x, y in [(0, 0), (127, 0), (127, 127), (0, 127), (64, 40)]:
            u, v, w = h @ [x, y, 1.0]
            u, v = u / w, v / w
            x0, y0 = int(np.floor(u)), int(np.floor(v))
            a, b = u - x0, v - y0
            x1, y1 = min(x0 + 1, 191), min(y0 + 1, 191)
            ref = (
                (1 - a) * (1 - b) * src[y0, x0]
                + a * (1 - b) * src[y0, x1]
                + (1 - a) * b * src[y1, x0]
                + a * b * src[y1, x1]
            )
            np.testing.assert_allclose(t[y, x], ref, atol=0.5)

    def test_wrong_size(self):
        with pytest.raises(ValueError, match="192"):
            P.make_template(np.zeros((100, 100, 3), np.uint8), np.eye(3))


class TestValidMaskAndPair:
    def test_template_valid_mask(self):
        valid = np.ones((192, 192), bool)
        valid[:, :96] = False  # left half invalid
        h = P.homography_from_corners([[32, 32], [159, 32], [159, 159], [32, 159]])
        m = P.template_valid_mask(valid, h)
        assert m.shape == (128, 128) and m.dtype == bool
        assert not m[:, : 96 - 32].any() and m[:, 96 - 32 :].all()

    def test_make_pair(self):
        src = _photo192()
        template, corners, h = P.make_pair(src, src, np.random.default_rng(3))
        assert template.shape == (128, 128, 3) and template.dtype == np.uint8
        np.testing.assert_array_equal(template, P.make_template(src, h))
        np.testing.assert_allclose(h, P.homography_from_corners(corners))
        with pytest.raises(ValueError, match="input_image"):
            P.make_pair(src[:100], src, np.random.default_rng(3))
