"""OpenCV baselines: exact synthetic warps are recovered, failures are flagged, bad input is named."""

import cv2
import numpy as np
import pytest
from skimage import data

from deeplk import baselines
from deeplk.geometry_np import homography_to_corners

TEMPLATE = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], np.float32)


@pytest.fixture(scope="module")
def pairs():
    """A textured 192 photo and templates warped from it by DLK-protocol homographies."""
    img = cv2.resize(data.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)[20:212, 60:252]
    img = img.astype(np.float32) / 255.0
    rng = np.random.default_rng(3)
    out = []
    for _ in range(6):
        corners = (TEMPLATE + 32 + rng.integers(-24, 24, size=(4, 2))).astype(np.float32)
        H = cv2.getPerspectiveTransform(TEMPLATE, corners)
        tmpl = cv2.warpPerspective(img, H, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        out.append((img, tmpl, corners.astype(np.float64)))
    return out


def _pe(pred, true):
    return float(np.linalg.norm(pred - true, axis=1).mean())


class TestIdentity:
    def test_centred_corners(self, pairs):
        img, tmpl, _ = pairs[0]
        np.testing.assert_allclose(baselines.identity(img, tmpl), TEMPLATE + 32)

    def test_centred_homography_other_sizes(self):
        img = np.zeros((100, 200)), np.zeros((50, 60))
        np.testing.assert_allclose(baselines.identity(*img)[0], [70, 25])


@pytest.mark.parametrize("name, bound, min_share", [("sift", 1.0, 5 / 6), ("orb", 3.0, 4 / 6), ("ecc", 0.5, 5 / 6)])
def test_recovers_exact_synthetic_warps(pairs, name, bound, min_share):
    fn = baselines.BASELINES[name]
    hits = 0
    for img, tmpl, true in pairs:
        pred = fn(img, tmpl)
        if pred is not None:
            assert pred.shape == (4, 2) and np.all(np.isfinite(pred))
            hits += _pe(pred, true) < bound
    assert hits >= min_share * len(pairs), f"{name}: {hits}/{len(pairs)} under {bound} px"


class _FixedSIFT:
    """A SIFT detector whose keypoints and descriptors are given: ``detectAndCompute`` returns
    ``features[image height]`` (the template is 128 high, the input 192)."""

    def __init__(self, features):
        self.features = features

    def detectAndCompute(self, grey, mask):
        points, descriptors = self.features[grey.shape[0]]
        return tuple(cv2.KeyPoint(float(x), float(y), 8.0) for x, y in points), descriptors


def _apply_h(H, points):
    p = np.c_[points, np.ones(len(points))] @ H.T
    return p[:, :2] / p[:, 2:]


@pytest.fixture
def ambiguous_sift(monkeypatch):
    """Matches where Lowe's ratio test (0.75, the published setting) decides the answer.

    6 template keypoints are unique (nearest input descriptor at distance 1, second at 2: ratio
    0.5) and land where the true H says; 12 are ambiguous (ratio 0.85, a repeated pattern) and
    their nearest descriptors sit where another H says. Ratio 0.75 keeps only the unique ones
    (the true H); a looser 0.95 also takes the ambiguous ones, which outvote them in RANSAC.
    Returns the true and the wrong template corners in the input.
    """
    rng = np.random.default_rng(0)
    true_corners = TEMPLATE + np.array([[30, 34], [35, 29], [33, 36], [28, 31]], np.float32)
    wrong_corners = TEMPLATE + np.array([[10, 50], [10, 50], [10, 50], [10, 50]], np.float32)
    H_true = cv2.getPerspectiveTransform(TEMPLATE, true_corners).astype(np.float64)
    H_wrong = cv2.getPerspectiveTransform(TEMPLATE, wrong_corners).astype(np.float64)
    n_unique, n_ambiguous = 6, 12
    points = rng.uniform(8, 120, size=(n_unique + n_ambiguous, 2))
    descriptors = rng.normal(0, 100, size=(len(points), 128))  # far apart from each other

    def at_distance(d):  # a descriptor at L2 distance `d` from each template descriptor
        step = rng.normal(size=descriptors.shape)
        return descriptors + d * step / np.linalg.norm(step, axis=1, keepdims=True)

    nearest = np.r_[_apply_h(H_true, points[:n_unique]), _apply_h(H_wrong, points[n_unique:])]
    second = rng.uniform(0, 191, size=(len(points), 2))  # anywhere: never the nearest
    second_distance = np.r_[np.full(n_unique, 2.0), np.full(n_ambiguous, 1 / 0.85)]
    features = {
        128: (points, descriptors.astype(np.float32)),
        192: (np.r_[nearest, second], np.r_[at_distance(1.0), at_distance(second_distance[:, None])].astype(np.float32)),
    }
    monkeypatch.setattr(cv2, "SIFT_create", lambda *a, **k: _FixedSIFT(features))
    return true_corners.astype(np.float64), wrong_corners.astype(np.float64)


def test_sift_ratio_test_is_lowes_075(ambiguous_sift, pairs):
    img, tmpl, _ = pairs[0]
    true_corners, wrong_corners = ambiguous_sift
    # The fixture discriminates: a looser ratio test picks the repeated pattern.
    np.testing.assert_allclose(baselines.sift(img, tmpl, ratio=0.95), wrong_corners, atol=1e-3)
    # The method as registered and the hybrid's SIFT start use 0.75: unique matches only.
    np.testing.assert_allclose(baselines.BASELINES["sift"](img, tmpl), true_corners, atol=1e-3)
    H = baselines.feature_homography(img, tmpl, "sift")
    np.testing.assert_allclose(homography_to_corners(H, tmpl.shape[:2]), true_corners, atol=1e-3)


def test_ecc_from_the_true_start_stays_put(pairs):
    img, tmpl, true = pairs[0]
    H = cv2.getPerspectiveTransform(TEMPLATE, true.astype(np.float32))
    assert _pe(baselines.ecc(img, tmpl, init_H=H), true) < 0.2


@pytest.mark.parametrize("name", ["sift", "orb", "ecc"])
def test_textureless_template_is_a_flagged_failure(pairs, name):
    img, _, _ = pairs[0]
    flat = np.full((128, 128, 3), 0.5, np.float32)
    assert baselines.BASELINES[name](img, flat) is None


def test_predict_batch_marks_failures(pairs):
    img, tmpl, true = pairs[0]
    inputs = np.stack([img, img])
    templates = np.stack([tmpl, np.full_like(tmpl, 0.3)])
    corners, failed = baselines.predict_batch("sift", inputs, templates)
    assert failed.tolist() == [False, True]
    assert _pe(corners[0], true) < 1.0 and np.all(np.isnan(corners[1]))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_batches_in_threads_give_the_pairs_in_order(pairs, monkeypatch, threads):
    """`predict_batch` and `sift_homographies` (the hybrid's and DLKFM's SIFT start) map the
    pairs over `threads` threads: each pair's answer is the one computed alone, in its place;
    a pair SIFT cannot match starts from the centred guess."""
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    flat = np.full((128, 128, 3), 0.3, np.float32)
    inputs = np.stack([img for img, _, _ in pairs] + [pairs[0][0]])
    templates = np.stack([t for _, t, _ in pairs] + [flat])
    corners, failed = baselines.predict_batch("sift", inputs, templates)
    alone = [baselines.sift(i, t) for i, t in zip(inputs, templates)]
    assert failed.tolist() == [c is None for c in alone] and failed[-1]
    np.testing.assert_array_equal(corners[~failed], np.stack([c for c in alone if c is not None]))
    H = baselines.sift_homographies(inputs, templates)
    assert H.shape == (len(inputs), 3, 3)
    np.testing.assert_allclose(homography_to_corners(H[~failed], (128, 128)), corners[~failed], atol=1e-9)
    np.testing.assert_allclose(H[-1], [[1, 0, 32], [0, 1, 32], [0, 0, 1]])


def test_map_pairs_uses_the_thread_budget(monkeypatch):
    import threading

    seen = set()
    barrier = threading.Barrier(2, timeout=5)

    def fn(i):
        seen.add(threading.get_ident())
        barrier.wait()  # passes only if two pairs run at once
        return i * i

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert baselines.map_pairs(fn, 4) == [0, 1, 4, 9] and len(seen) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert baselines.map_pairs(lambda i: threading.get_ident(), 3) == [threading.get_ident()] * 3


@pytest.mark.parametrize("name", ["identity", "sift", "orb", "ecc"])
def test_bad_inputs_raise_clear_errors(name):
    fn = baselines.BASELINES[name]
    with pytest.raises(ValueError, match="input_image|template|image"):
        fn(np.zeros((0, 0, 3), np.float32), np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ValueError):
        fn(np.zeros((192, 192, 3, 2), np.float32), np.zeros((128, 128, 3), np.float32))


def test_predict_batch_checks_shapes():
    with pytest.raises(ValueError, match="templates"):
        baselines.predict_batch("identity", np.zeros((2, 192, 192, 3)), np.zeros((3, 128, 128, 3)))
