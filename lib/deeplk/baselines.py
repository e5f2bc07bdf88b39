"""Classical baselines on OpenCV: SIFT + RANSAC, ORB + RANSAC, ECC, and the centred guess.

Every baseline is a function ``(input_image, template) -> corners or None``:

- ``input_image``: ``(Hi, Wi, 3)`` or ``(Hi, Wi)`` float in [0, 1] (or uint8), e.g. 192x192;
- ``template``: ``(Ht, Wt, 3)`` or ``(Ht, Wt)``, e.g. 128x128;
- returns the predicted positions of the template's corners in the input frame, ``(4, 2)``
  float64 (x, y) pixels, order TL, TR, BR, BL, i.e. ``input_H_template`` applied to the template
  corners; or ``None`` when the method fails (too few matches, no homography, no convergence, a
  degenerate or non-finite result). A failure counts as a miss at every threshold.

`predict_batch` runs one of them over a batch and returns ``(corners (B, 4, 2), failed (B,))``
with NaN corners where it failed. No baseline ever sees the ground truth.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import cv2
import numpy as np

from deeplk._checks import check_shape
from deeplk.geometry_np import centred_homography, homography_to_corners, is_convex_quad, scale_homography

__all__ = [
    "to_grey_uint8",
    "identity",
    "sift",
    "orb",
    "ecc",
    "ecc_homography",
    "feature_homography",
    "plausible_corners",
    "plausible_homography",
    "BASELINES",
    "predict_batch",
    "map_pairs",
    "sift_homographies",
]


def to_grey_uint8(image, normalise: bool = True) -> np.ndarray:
    """Grey uint8 image from (H, W), (H, W, 1) or (H, W, 3) float [0, 1] or uint8 input.

    With `normalise`, the grey levels are min-max stretched to 0..255 (as the paper's SIFT
    baseline). Raises ValueError on other shapes or an empty image.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (1, 3, 4):
        img = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img[..., :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
    elif img.ndim != 2:
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    if img.size == 0 or min(img.shape) < 8:
        raise ValueError(f"image is empty or too small (at least 8x8 is needed), got shape {img.shape}")
    img = img.astype(np.float32)
    if np.asarray(image).dtype != np.uint8 and not normalise:
        img = img * 255.0
    if normalise:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _check_pair(input_image, template) -> None:
    for name, img in (("input_image", input_image), ("template", template)):
        arr = np.asarray(img)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"`{name}` must be a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")


def plausible_corners(corners: np.ndarray | None, input_shape) -> np.ndarray | None:
    """Reject non-finite, absurdly distant or non-convex predictions (flagged failures)."""
    if corners is None or not np.all(np.isfinite(corners)):
        return None
    limit = 10.0 * max(input_shape[0], input_shape[1])
    if np.abs(corners).max() > limit:
        return None
    # the quadrilateral must stay convex and keep its orientation (no fold-over)
    if not is_convex_quad(corners, either_orientation=True):
        return None
    return corners


def identity(input_image, template) -> np.ndarray:
    """The centred guess: the template placed unwarped in the middle of the input."""
    _check_pair(input_image, template)
    H = centred_homography(np.shape(input_image)[:2], np.shape(template)[:2])
    return homography_to_corners(H, np.shape(template)[:2])


def _orb():
    return cv2.ORB_create(nfeatures=1500, scoreType=cv2.ORB_HARRIS_SCORE, edgeThreshold=15, patchSize=15)


_KEYPOINTS: dict = {}


def _keypoints(detector: str):
    """grey uint8 image -> ``(keypoints, descriptors)`` of `detector` ("sift" or "orb"),
    remembered by content for the last few images (one input paired with several templates is
    detected once). One memo per detector factory, looked up at each call."""
    from deeplk.utils import ContentCache

    factory = cv2.SIFT_create if detector == "sift" else _orb
    if (detector, factory) not in _KEYPOINTS:
        _KEYPOINTS[(detector, factory)] = ContentCache(lambda grey: factory().detectAndCompute(grey, None), size=4)
    return _KEYPOINTS[(detector, factory)]


def feature_homography(
    input_image,
    template,
    detector: str = "sift",
    ratio: float = 0.75,
    ransac_threshold: float = 5.0,
    min_matches: int = 4,
) -> np.ndarray | None:
    """``input_H_template`` from keypoint matches + RANSAC, or None.

    Grey images are min-max normalised, keypoints detected with SIFT or ORB, matched with a
    brute-force k=2 matcher and Lowe's ratio test, and the homography fitted with
    `cv2.findHomography` (RANSAC, `ransac_threshold` pixels).
    """
    _check_pair(input_image, template)
    if detector not in ("sift", "orb"):
        raise ValueError(f"detector must be 'sift' or 'orb', got {detector!r}")
    norm = cv2.NORM_L2 if detector == "sift" else cv2.NORM_HAMMING
    kp_t, des_t = _keypoints(detector)(to_grey_uint8(template))
    kp_i, des_i = _keypoints(detector)(to_grey_uint8(input_image))
    if des_t is None or des_i is None or len(kp_t) < min_matches or len(kp_i) < 2:
        return None
    matches = cv2.BFMatcher(norm).knnMatch(des_t, des_i, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if len(good) < min_matches:
        return None
    src = np.float32([kp_t[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kp_i[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    H, _ = cv2.findHomography(src, dst, cv2.RANSAC, ransac_threshold)
    if H is None or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return None
    return H / H[2, 2]


def plausible_homography(H, input_image, template) -> np.ndarray | None:
    """`H` if the template's corners land plausibly in the input (`plausible_corners`), else None."""
    if H is None or plausible_corners(homography_to_corners(H, np.shape(template)[:2]), np.shape(input_image)) is None:
        return None
    return H


def sift(input_image, template, ratio: float = 0.75, ransac_threshold: float = 5.0) -> np.ndarray | None:
    """SIFT + ratio test (0.75) + RANSAC (5 px) on min-max normalised grey images."""
    H = plausible_homography(feature_homography(input_image, template, "sift", ratio, ransac_threshold), input_image, template)
    return None if H is None else homography_to_corners(H, np.shape(template)[:2])


def orb(input_image, template, ratio: float = 0.8, ransac_threshold: float = 5.0) -> np.ndarray | None:
    """ORB (1500 features, Harris score) + ratio test (0.8) + RANSAC (5 px)."""
    H = feature_homography(input_image, template, "orb", ratio, ransac_threshold)
    return None if H is None else plausible_corners(homography_to_corners(H, np.shape(template)[:2]), np.shape(input_image))


def ecc_homography(
    input_image,
    template,
    init_H: np.ndarray | None = None,
    levels: int = 3,
    iterations: int = 50,
    eps: float = 1e-4,
    gauss_size: int = 5,
) -> np.ndarray | None:
    """``input_H_template`` by OpenCV's ECC maximisation (`cv2.findTransformECC`, homography).

    Coarse to fine over `levels` pyramid levels (cv2.resize INTER_AREA by 2), starting from
    `init_H` (default: the centred guess). Returns None when ECC does not converge or the
    result is degenerate.
    """
    _check_pair(input_image, template)
    grey_in = to_grey_uint8(input_image, normalise=False).astype(np.float32) / 255.0
    grey_t = to_grey_uint8(template, normalise=False).astype(np.float32) / 255.0
    H = centred_homography(grey_in.shape, grey_t.shape) if init_H is None else np.asarray(init_H, np.float64)
    pyr_in, pyr_t = [grey_in], [grey_t]
    for _ in range(levels - 1):
        pyr_in.append(cv2.resize(pyr_in[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
        pyr_t.append(cv2.resize(pyr_t[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    H = scale_homography(H, 0.5 ** (levels - 1))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    for level in range(levels - 1, -1, -1):
        warp = (H / H[2, 2]).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(pyr_t[level], pyr_in[level], warp, cv2.MOTION_HOMOGRAPHY, criteria, None, gauss_size)
        except cv2.error:
            return None
        H = warp.astype(np.float64)
        if level > 0:
            H = scale_homography(H, 2.0)
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return None
    return H / H[2, 2]


def ecc(input_image, template, init_H: np.ndarray | None = None, levels: int = 3) -> np.ndarray | None:
    """ECC homography (3-level pyramid, centred start by default) as predicted corners."""
    H = ecc_homography(input_image, template, init_H=init_H, levels=levels)
    return None if H is None else plausible_corners(homography_to_corners(H, np.shape(template)[:2]), np.shape(input_image))


BASELINES: dict[str, Callable] = {"identity": identity, "sift": sift, "orb": orb, "ecc": ecc}


def predict_batch(method: str | Callable, inputs, templates) -> tuple[np.ndarray, np.ndarray]:
    """Run a per-pair baseline over a batch.

    Args:
        method: a name in `BASELINES` or a callable ``(input, template) -> corners | None``.
        inputs: ``(B, Hi, Wi, C)``; templates: ``(B, Ht, Wt, C)``.

    Returns:
        ``corners`` (B, 4, 2) float64, NaN where the method failed, and ``failed`` (B,) bool.
    """
    fn = BASELINES[method] if isinstance(method, str) else method
    inputs, templates = np.asarray(inputs), np.asarray(templates)
    check_shape("inputs", inputs, (None, None, None, None), "(B, H, W, C)")
    check_shape("templates", templates, (inputs.shape[0], None, None, None), "(B, H, W, C)")
    corners = np.full((inputs.shape[0], 4, 2), np.nan)
    failed = np.zeros(inputs.shape[0], dtype=bool)
    for i, c in enumerate(map_pairs(lambda i: fn(inputs[i], templates[i]), inputs.shape[0])):
        if c is None:
            failed[i] = True
        else:
            corners[i] = c
    return corners, failed


def map_pairs(fn: Callable[[int], object], n: int) -> list:
    """``[fn(0), ..., fn(n - 1)]``, the pairs of a batch in parallel threads (OpenCV releases the
    GIL), as many as the process's thread budget: ``OMP_NUM_THREADS`` when set (the pipeline
    sets it for parallel steps), else `cv2.getNumThreads`."""
    budget = int(os.environ.get("OMP_NUM_THREADS") or 0) or cv2.getNumThreads()
    workers = max(1, min(n, budget))
    if workers == 1:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, range(n)))


def sift_homographies(inputs, templates) -> np.ndarray:
    """``(B, 3, 3)`` float64 ``input_H_template``: per pair the SIFT + RANSAC homography
    (`feature_homography`) where it is plausible, else the centred guess (the ``hybrid``
    method's and DLKFM's SIFT start)."""
    inputs, templates = np.asarray(inputs), np.asarray(templates)
    centred = centred_homography(inputs.shape[1:3], templates.shape[1:3])

    def start(i):
        H = plausible_homography(feature_homography(inputs[i], templates[i], "sift"), inputs[i], templates[i])
        return centred if H is None else H

    return np.array(map_pairs(start, len(inputs)), np.float64).reshape(-1, 3, 3)
