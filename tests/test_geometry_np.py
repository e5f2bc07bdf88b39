"""`deeplk.geometry_np`: the NumPy/OpenCV geometry, against OpenCV, float64 NumPy and its
TensorFlow twins in `deeplk.geometry`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry as G
from deeplk import geometry_np as GN

CENTRE_192 = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)


def random_quads(rng, n, spread=30.0):
    """``n`` random (mostly convex) quads around the centred 128-in-192 corners."""
    return CENTRE_192 + rng.uniform(-spread, spread, (n, 4, 2))


class TestTemplateCorners:
    def test_known_answer_and_tf(self):
        np.testing.assert_array_equal(GN.template_corners((10, 20)), [[0, 0], [19, 0], [19, 9], [0, 9]])
        np.testing.assert_array_equal(GN.template_corners(128), G.template_corners(128, dtype=tf.float64))

    @pytest.mark.parametrize("bad", [0, -3, (1, 2, 3), 2.5])
    def test_bad_size(self, bad):
        with pytest.raises(ValueError, match="template_size"):
            GN.template_corners(bad)


class TestCentred:
    def test_known_answer(self):
        H = GN.centred_homography(192, 128)
        np.testing.assert_array_equal(H, [[1, 0, 32], [0, 1, 32], [0, 0, 1]])
        np.testing.assert_array_equal(GN.homography_to_corners(H, 128), CENTRE_192)
        np.testing.assert_array_equal(GN.centred_corners(192, 128), CENTRE_192)
        np.testing.assert_array_equal(GN.centred_corners(48, 32), [[8, 8], [39, 8], [39, 39], [8, 39]])
        # (h, w) sizes: x from the widths, y from the heights; half pixels allowed for H.
        assert GN.centred_homography((100, 60), (20, 40))[:2, 2].tolist() == [10, 40]
        assert GN.centred_homography((100, 200), (51, 60))[:2, 2].tolist() == [70, 24.5]

    def test_tf_twin(self):
        for sizes in [(192, 128), ((100, 60), (20, 40)), (12, 8)]:
            H = G.centred_homography(*sizes, batch=3, dtype=tf.float64)
            assert H.shape == (3, 3, 3) and H.dtype == tf.float64
            np.testing.assert_array_equal(H.numpy(), np.broadcast_to(GN.centred_homography(*sizes), (3, 3, 3)))
        assert G.centred_homography(192, 128).shape == (3, 3)
        assert G.centred_homography(192, 128, batch=tf.constant(2)).shape == (2, 3, 3)

    def test_corners_match_homography(self):
        np.testing.assert_array_equal(
            GN.centred_corners((96, 64), (32, 16)),
            GN.homography_to_corners(GN.centred_homography((96, 64), (32, 16)), (32, 16)),
        )

    @pytest.mark.parametrize("sizes", [(191, 128), (128, 128), (100, 128), ((96, 65), 32)])
    def test_centred_corners_needs_whole_pixels_inside(self, sizes):
        with pytest.raises(ValueError, match="input_size"):
            GN.centred_corners(*sizes)


class TestPoints:
    def test_against_tf_and_numpy(self, rng):
        H = G.corners_to_homography(random_quads(rng, 5), 128).numpy()
        pts = rng.uniform(-10, 140, (5, 7, 2))
        ours = GN.transform_points(H, pts)
        np.testing.assert_allclose(ours, G.transform_points(H, pts).numpy(), rtol=1e-12, atol=1e-9)
        uvw = np.einsum("bij,bnj->bni", H, np.concatenate([pts, np.ones((5, 7, 1))], -1))
        np.testing.assert_allclose(ours, uvw[..., :2] / uvw[..., 2:], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(GN.transform_points(H[0], pts[0]), ours[0])

    def test_homography_to_corners_single_and_batch(self, rng):
        H = G.corners_to_homography(random_quads(rng, 4), 128).numpy()
        batch = GN.homography_to_corners(H, 128)
        assert batch.shape == (4, 4, 2)
        np.testing.assert_allclose(batch, G.homography_to_corners(H, 128).numpy(), atol=1e-9)
        np.testing.assert_allclose(GN.homography_to_corners(H[1], 128), batch[1])

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="input_H_template"):
            GN.homography_to_corners(np.eye(4), 8)
        with pytest.raises(ValueError, match="points"):
            GN.transform_points(np.eye(3), np.zeros((3, 3)))


class TestCornersToHomography:
    def test_round_trip_and_opencv(self, rng):
        quads = random_quads(rng, 6)
        H = GN.corners_to_homography(quads, 128)
        assert H.shape == (6, 3, 3)
        np.testing.assert_allclose(H[:, 2, 2], 1.0)
        np.testing.assert_allclose(GN.homography_to_corners(H, 128), quads, atol=1e-3)
        src = GN.template_corners(128).astype(np.float32)
        for h, q in zip(H, quads):
            ref = cv2.getPerspectiveTransform(src, q.astype(np.float32))
            np.testing.assert_array_equal(h, ref / ref[2, 2])
        np.testing.assert_allclose(H, G.corners_to_homography(quads.astype(np.float32).astype(np.float64), 128),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(GN.corners_to_homography(quads[0], 128), H[0])

    def test_centred_is_translation(self):
        np.testing.assert_allclose(GN.corners_to_homography(CENTRE_192, 128), GN.centred_homography(192, 128),
                                   atol=1e-12)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="corners"):
            GN.corners_to_homography(np.zeros((4, 3)), 128)


class TestScaleHomography:
    @pytest.mark.parametrize("half", [True, False])
    @pytest.mark.parametrize("scale", [0.25, 0.5, 2.0])
    def test_against_tf(self, rng, half, scale):
        H = G.corners_to_homography(random_quads(rng, 3), 128).numpy()
        ours = GN.scale_homography(H, scale, half)
        ref = G.scale_homography(H, scale, half).numpy()
        np.testing.assert_allclose(ours / ours[:, 2:, 2:], ref, rtol=1e-12, atol=1e-10)

    def test_matches_resized_points(self, rng):
        # Half-pixel centres: x' = (x + 0.5) s - 0.5 in both frames.
        H = G.corners_to_homography(random_quads(rng, 1), 128).numpy()[0]
        p = np.array([[3.0, 7.0], [100.0, 20.0]])
        s = 0.5
        lhs = GN.transform_points(GN.scale_homography(H, s), (p + 0.5) * s - 0.5)
        np.testing.assert_allclose(lhs, (GN.transform_points(H, p) + 0.5) * s - 0.5, atol=1e-10)
        np.testing.assert_allclose(GN.scale_homography(GN.scale_homography(H, s), 1 / s), H, atol=1e-12)

    def test_bad_scale(self):
        with pytest.raises(ValueError, match="scale"):
            GN.scale_homography(np.eye(3), 0.0)


class TestIsConvexQuad:
    SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]

    @pytest.mark.parametrize(
        "corners",
        [
            [[0, 0], [100, 0], [50, 10], [0, 100]],  # reflex vertex (non-convex)
            [[0, 0], [50, 0], [100, 0], [0, 100]],  # collinear triple
            [[0, 0], [100, 100], [100, 0], [0, 100]],  # self-intersecting
            [[0, 0], [np.nan, 0], [100, 100], [0, 100]],  # not finite
        ],
    )
    def test_rejects_degenerate(self, corners):
        assert GN.is_convex_quad(corners) is False
        assert GN.is_convex_quad(corners, either_orientation=True) is False
        if np.all(np.isfinite(corners)):
            assert not G.is_convex_quad(np.asarray(corners, np.float64)[None]).numpy()[0]

    def test_orientation_and_threshold(self):
        mirrored = [[0, 0], [0, 10], [10, 10], [10, 0]]
        assert GN.is_convex_quad(self.SQUARE) and not GN.is_convex_quad(mirrored)
        assert GN.is_convex_quad(mirrored, either_orientation=True)
        # Every turn of the 10-pixel square is 100 px^2.
        np.testing.assert_array_equal(GN.quad_turns(self.SQUARE), [100, 100, 100, 100])
        assert GN.is_convex_quad(self.SQUARE, 99.0) and not GN.is_convex_quad(self.SQUARE, 100.0)
        assert not GN.is_convex_quad(mirrored, 100.0, either_orientation=True)

    def test_batched_matches_tf_and_loop(self, rng):
        quads = CENTRE_192 + rng.uniform(-80, 80, (400, 4, 2))
        ours = GN.is_convex_quad(quads, 1.0)
        assert ours.shape == (400,) and ours.any() and not ours.all()
        np.testing.assert_array_equal(ours, [GN.is_convex_quad(q, 1.0) for q in quads])
        np.testing.assert_array_equal(ours, G.is_convex_quad(quads, 1.0).numpy())
        np.testing.assert_array_equal(ours, G.is_convex_quad(tf.constant(quads, tf.float32), 1.0).numpy())

    def test_cross_products_against_loop(self, rng):
        q = rng.uniform(0, 50, (4, 2))
        ref = []
        for k in range(4):
            (x0, y0), (x1, y1), (x2, y2) = q[k], q[(k + 1) % 4], q[(k + 2) % 4]
            ref.append((x1 - x0) * (y2 - y1) - (y1 - y0) * (x2 - x1))
        np.testing.assert_allclose(GN.quad_turns(q), ref, rtol=1e-12)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"\(4, 2\)"):
            GN.is_convex_quad(np.zeros((3, 2)))
        with pytest.raises(ValueError, match="corners"):
            G.is_convex_quad(np.zeros((2, 3, 2)))


def test_host_modules_do_not_import_tensorflow():
    """The NumPy geometry keeps the data protocol and the OpenCV baselines free of TensorFlow
    (dataset generation workers and baselines start fast)."""
    import subprocess
    import sys

    code = ("import sys, deeplk.geometry_np, deeplk.data.protocol, deeplk.baselines; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
