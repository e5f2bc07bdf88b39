"""On-the-fly HomographyNet pairs (`deeplk.data.augment`): OpenCV reference, label round trip,
offset distribution, determinism and checkpointable iterators."""

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data as skdata

from deeplk import geometry_np
from deeplk.data import protocol
from deeplk.data.augment import (
    MAX_RHO,
    random_corner_offsets,
    synthesize_pairs,
    with_synthetic_pairs,
)
from deeplk.geometry import corners_to_homography, is_convex_quad
from deeplk.geometry_np import centred_corners
from deeplk.warp import warp_image

TEMPLATE = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], np.float32)
CENTRED = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], np.float64)


@pytest.fixture(scope="module")
def photos():
    """Three textured 192 x 192 RGB inputs in [0, 1]."""
    img = cv2.resize(skdata.astronaut(), (320, 240), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return np.stack([img[0:192, 0:192], img[20:212, 60:252], img[48:240, 128:320]])


def dlk_batches(photos, n_batches=4):
    """A dataset of DLK-like batches (input, template, corners) from the photos (templates dummy)."""
    x = np.concatenate([photos] * n_batches)
    t = np.zeros((len(x), 128, 128, 3), np.float32)
    c = np.broadcast_to(CENTRED, (len(x), 4, 2)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, t, c)).batch(len(photos))


class TestCentredCorners:
    def test_known_answer(self):
        np.testing.assert_array_equal(centred_corners(192, 128), CENTRED)
        np.testing.assert_array_equal(centred_corners(48, 32), [[8, 8], [39, 8], [39, 39], [8, 39]])

    def test_bad_sizes(self):
        with pytest.raises(ValueError, match="input_size"):
            centred_corners(191, 128)
        with pytest.raises(ValueError, match="input_size"):
            centred_corners(128, 128)


class TestSynthesizePairs:
    @pytest.mark.parametrize("rho", [16, 32])
    def test_template_matches_opencv_and_label_round_trips(self, photos, rho):
        inputs, templates, corners = synthesize_pairs(photos, rho, seed=[3, 4])
        inputs, templates, corners = inputs.numpy(), templates.numpy(), corners.numpy()
        np.testing.assert_array_equal(inputs, photos)
        assert templates.shape == (3, 128, 128, 3) and corners.shape == (3, 4, 2)
        assert np.all(np.abs(corners - CENTRED) <= rho + 1e-4)
        for i in range(3):
            # Independent reference: OpenCV's H from the label and its inverse-map warp (the DLK
            # protocol's template cut).
            H = cv2.getPerspectiveTransform(TEMPLATE, corners[i])
            ref = cv2.warpPerspective(photos[i], H, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            np.testing.assert_allclose(templates[i], ref, atol=2e-3)
        # Round trip: warping the input by the label's H reproduces the template; a label 3 px
        # off does not.
        H = corners_to_homography(corners, 128)
        warped, mask = warp_image(photos, H, 128)
        assert np.all(mask.numpy() == 1)  # rho <= 32: the template lies inside the input
        good = np.abs(warped.numpy() - templates).mean(axis=(1, 2, 3))
        shifted = corners + np.array([[3, -3], [-3, 3], [3, 3], [-3, -3]], np.float32)
        bad_w = warp_image(photos, corners_to_homography(shifted, 128), 128, return_mask=False).numpy()
        bad = np.abs(bad_w - templates).mean(axis=(1, 2, 3))
        assert good.max() < 1e-5 and bad.min() > 0.01, (good, bad)

    def test_any_batch_size_and_float64(self, photos):
        for b in (1, 2, 3):
            _, t, c = synthesize_pairs(photos[:b], 8, seed=[0, 1])
            assert t.shape == (b, 128, 128, 3) and c.shape == (b, 4, 2)
        _, t, _ = synthesize_pairs(photos.astype(np.float64), 8, seed=[0, 1])
        assert t.dtype == tf.float64

    def test_errors(self, photos):
        with pytest.raises(ValueError, match="rho"):
            synthesize_pairs(photos, 33, seed=[0, 0])
        with pytest.raises(ValueError, match="rho"):
            synthesize_pairs(photos, 0, seed=[0, 0])
        with pytest.raises(ValueError, match="inputs"):
            synthesize_pairs(photos[0], 16, seed=[0, 0])


class TestOffsets:
    @pytest.mark.parametrize("rho", [16, 32])
    def test_uniform_in_range_and_convex(self, rho):
        off = random_corner_offsets(4000, rho, seed=[1, 2]).numpy()
        assert off.shape == (4000, 4, 2)
        assert np.abs(off).max() <= rho
        # Uniform on [-rho, rho]: extremes reached, mean 0, variance rho^2 / 3 (to sampling error).
        assert off.min() < -0.99 * rho and off.max() > 0.99 * rho
        assert abs(off.mean()) < 0.02 * rho
        np.testing.assert_allclose(off.var(), rho**2 / 3, rtol=0.03)
        corners = CENTRED + off
        assert all(geometry_np.is_convex_quad(corners, protocol.MIN_CROSS))

    def test_folded_draw_is_halved(self):
        # The only way to fold at rho=32: extreme offsets; check the fallback on the mechanism.
        folded = CENTRED + np.array([[32, -32], [-32, 32], [0, 0], [0, 0]], np.float64)
        folded[0] = [CENTRED[1, 0] + 20, CENTRED[0, 1] + 60]  # TL beyond TR: not convex
        assert not is_convex_quad(tf.constant(folded[None], tf.float32), protocol.MIN_CROSS).numpy()[0]
        assert MAX_RHO == 32

    def test_stateless(self):
        a = random_corner_offsets(5, 16, seed=[7, 8]).numpy()
        b = random_corner_offsets(5, 16, seed=[7, 8]).numpy()
        c = random_corner_offsets(5, 16, seed=[7, 9]).numpy()
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - c).max() > 1


class TestWithSyntheticPairs:
    def test_deterministic_new_offsets_per_batch(self, photos):
        ds = with_synthetic_pairs(dlk_batches(photos), 16, seed=5)
        first = [tuple(t.numpy() for t in b) for b in ds]
        again = [tuple(t.numpy() for t in b) for b in ds]
        assert len(first) == 4
        for x, y in zip(first, again):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
        # Same images in every batch, different offsets.
        assert np.abs(first[0][2] - first[1][2]).max() > 1
        other = next(iter(with_synthetic_pairs(dlk_batches(photos), 16, seed=6)))
        assert np.abs(other[2].numpy() - first[0][2]).max() > 1
        # Each batch is the synthesis of its inputs with seed (seed, batch index).
        _, t, c = synthesize_pairs(photos, 16, seed=tf.constant([5, 2], tf.int64))
        np.testing.assert_array_equal(c.numpy(), first[2][2])
        np.testing.assert_array_equal(t.numpy(), first[2][1])

    def test_iterator_checkpoint_resumes_exactly(self, photos, tmp_path):
        ds = with_synthetic_pairs(dlk_batches(photos).repeat(), 32, seed=1)
        it = iter(ds)
        next(it)
        prefix = tf.train.Checkpoint(data=it).write(str(tmp_path / "it"))
        expected = next(it)[2].numpy()
        it2 = iter(ds)
        tf.train.Checkpoint(data=it2).read(prefix).assert_consumed()
        np.testing.assert_array_equal(next(it2)[2].numpy(), expected)

    def test_errors(self, photos):
        with pytest.raises(TypeError, match="dataset"):
            with_synthetic_pairs([1, 2], 16)
        with pytest.raises(ValueError, match="seed"):
            with_synthetic_pairs(dlk_batches(photos), 16, seed=-1)
        with pytest.raises(ValueError, match="rho"):
            with_synthetic_pairs(dlk_batches(photos), 40)

    def test_rho_ramp_known_answer(self, photos):
        """Batch i uses r_i = 4 + (16 - 4) * min(1, i / 3): the offsets are the same uniform draw
        as a fixed-rho batch with the same seed, scaled by r_i / rho (up to float rounding),
        and a ramp of 0 batches is the plain rho."""
        ramped = [b[2].numpy() - CENTRED for b in with_synthetic_pairs(dlk_batches(photos, 5), 16, seed=3,
                                                                         rho_start=4, ramp_batches=3)]
        plain = [b[2].numpy() - CENTRED for b in with_synthetic_pairs(dlk_batches(photos, 5), 16, seed=3)]
        for i, (r, p) in enumerate(zip(ramped, plain)):
            rho_i = 4 + 12 * min(1, i / 3)
            assert np.abs(r).max() <= rho_i + 1e-4
            np.testing.assert_allclose(r, p * rho_i / 16, atol=1e-3)
        assert np.abs(ramped[0]).max() <= 4 + 1e-4 < np.abs(plain[0]).max()
        no_ramp = next(iter(with_synthetic_pairs(dlk_batches(photos), 16, seed=3, rho_start=4, ramp_batches=0)))
        np.testing.assert_array_equal(no_ramp[2].numpy() - CENTRED, plain[0])
        with pytest.raises(ValueError, match="rho"):
            with_synthetic_pairs(dlk_batches(photos), 16, rho_start=40, ramp_batches=3)
        with pytest.raises(ValueError, match="ramp_batches"):
            with_synthetic_pairs(dlk_batches(photos), 16, rho_start=4, ramp_batches=-1)
