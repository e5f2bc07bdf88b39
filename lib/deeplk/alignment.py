"""Align your own images: `align(image_a, image_b)` for two images of any size, and the
``deeplk-align`` command.

The result's ``H`` is the 3x3 homography **mapping image_b pixels onto image_a pixels** in the
original images' pixel coordinates (``(x, y, 1)``, pixel centres at integers, ``H[2, 2] == 1``):
image_a plays the methods' *input*, image_b their *template*, so ``H`` is ``a_H_b`` in the
project's convention "H maps template pixels to input pixels" (DESIGN.md). It is what the
command writes to ``homography.json``; ``cv2.warpPerspective(b, H, (wa, ha))`` brings image_b
into image_a's frame.

How a pair becomes the methods' frames
--------------------------------------
Every method of `deeplk.methods` takes a 192 x 192 input and a 128 x 128 template whose
corners lie near the centred square (32, 32) ... (159, 159) of the input, within about +-32 px
(the DLK sampling protocol). So both images are brought to one common 192 x 192 frame:

- image_a is resized to 192 x 192 (area averaging when shrinking; the x and y scales differ for
  a non-square image): ``a192 = S_a a`` with ``S_a`` the half-pixel-centre scaling
  ``x' = (x + 0.5) * 192 / w - 0.5``;
- image_b is resized the same way to 192 x 192 (``b192 = S_b b``) and its central 128 x 128
  square ``b192[32:160, 32:160]`` is the template (``t = b192 - (32, 32)``, the translation ``T``);
- the method returns ``input_H_template`` in the 192 frame and the result is mapped back:
  ``a_H_b = S_a^-1 @ input_H_template @ T @ S_b``.

If image_b shows the same scene as image_a, framed alike, the template sits on the centred
guess, so the methods see the situation they were built for. What they can recover is what the
protocol covers: corner displacements of up to about 32 of 192 px, i.e. a relative shift of up to
about 1/6 of the image per corner (a translation of ~15% of the width or height), a scale ratio
of about 0.75 to 1.33, a rotation of about +-15 degrees, or a combination of smaller ones.
``bench/align.py --sweep`` measures the recovery rate against translation, scale and rotation
(one at a time, six demo photographs at 640 x 480, corner error under 2 px): the intensity
methods from the centred start (``lk``, ``ecc``) recover translations up to about 5% of the side,
scale ratios 0.75-1.33 and rotations up to 10-15 degrees; ``hybrid``, started by SIFT, recovered
every case up to 30% translation, scale 0.6-1.6 and 30 degrees (5 of 6 at 45). In that sweep
every result that was not recovered was flagged as failed, and none that was.
Beyond that range (image_b a small tile somewhere in a large image_a, say) pass a rough
``init_H``: image_a is then cropped to the bounding box of image_b's outline under ``init_H``
and image_b is warped by ``init_H`` into that crop, so the methods only see the residual motion;
the final ``H`` is that residual composed with ``init_H``.

``refine_size`` (default 768) adds a last step after the method: pyramid LK on intensities
(`deeplk.lk.align_images`) in the same frames enlarged 2, 3 or 4 times (the largest whole
multiple of 192 up to `refine_size` and the images' shorter sides; none for images under 384 px), started from the method's estimate, so the result is
accurate to a fraction of a pixel of the *original* images, not of the 192 frame. It is kept only
if LK does not fail, the corners move by less than 4 px of the 192 frame and the match (below)
does not get worse.

Two modalities
--------------
The training-free methods compare intensities, so a photo and a re-toned or inverted rendering
of it (another season, a map) defeat them; the confidence then flags the result as failed.
``representation="gradient"`` gives every method `gradient_image` of both frames instead
(edges, the same whichever way intensities changed); the learned methods (``dlkfm`` trained on
the multimodal profiles) take the images themselves. The confidence does not depend on the
modalities either (below).

Confidence
----------
Two estimates are made in one batched call: the one above (the centred start) and a second
whose template is taken 12 px off-centre in the 192 frame of image_b (a second start for every
method). Each is scored in the 192 frame of image_a, image_b placed into it by the estimate (once
when both starts reach the same estimate, within `SAME_ESTIMATE_PX`):

- ``peak_ratio`` (`deeplk.methods.descriptor_peak_ratio`): the SSD of the MIND descriptors
  (`deeplk.descriptors.mind`: local self-similarity, the same whichever way intensities differ
  between modalities) at the estimate, divided by its mean at eight perturbations of it (image_b
  moved 4 px of the 192 frame in x, y and diagonally). A true alignment is a sharp minimum: on
  photographs 0.04-0.45, a photo against a map rendering 0.45-0.85, against another season
  0.04-0.26; a wrong estimate, even a minimum of the intensity objective, sits on a flat floor
  (0.88 and above, about 1 for unrelated images);
- ``match = clip((0.95 - peak_ratio) / 0.3, 0, 1)``;
- ``overlap``: the fraction of image_a's frame that image_b covers;
- ``similarity`` (reported, not scored): the larger of the absolute zero-mean normalised
  cross-correlation (ZNCC) of the grey levels and the ZNCC of the gradient magnitudes, over the
  overlap; it guards the refinement (below) and breaks ties between the starts.

The start with the higher match is the result (the centred one unless the other matches
better); ``disagreement`` is the mean distance (px of the 192 frame) between image_b's corners
placed by the two. Two starts that land apart are suspicious, unless the result matches well and
the other start clearly worse (it diverged): a repetitive texture (bricks, lines of text) matches
sharply one period off too, so only a clear difference excuses a disagreement. With ``m`` the
match of the result and ``m2`` that of the other start::

    score      = m * min(1, overlap / 0.25)
    excuse     = clip((m - m2) / 0.45, 0, 1) * clip((m - 0.67) / 0.33, 0, 1)
    confidence = score * (1 - (1 - excuse) * (1 - exp(-(disagreement / 4) ** 2)))

in [0, 1]; ``failed`` is true when the method failed on both starts or ``confidence <
min_confidence`` (default 0.3). The tests measure it on real photographs with known homographies,
on pairs of unrelated photographs and on photographs against their map and other-season
renderings (right and 20 px off); ``bench/align_confidence.py`` on more of each. The refinement
is kept only if neither the similarity (by more than 0.01) nor the peak ratio (by more than
0.02) gets worse.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# The methods' input frame and template (the DLK protocol's sizes).
from deeplk.data.protocol import INPUT_SIZE, PATCH_OFFSET, TEMPLATE_SIZE

__all__ = ["AlignResult", "align", "load_image", "gradient_image", "warp_to_a", "overlay_image", "write_outputs", "read_homography",
           "make_demo_pair", "upload_widget", "main"]

#: Offset of the second start's template within image_b's 192 frame, (dx, dy) pixels.
SECOND_START_OFFSET = (12, -12)
#: Peak ratio (`deeplk.methods.descriptor_peak_ratio`) mapped to a match: 0 at or above the
#: ceiling, 1 at ceiling - span and below.
PEAK_CEILING, PEAK_SPAN = 0.95, 0.3
#: A refinement whose peak ratio is more than this above the estimate's is not kept.
PEAK_TOLERANCE = 0.02
#: Two starts whose estimates place image_b's corners within this mean distance (px of the 192
#: frame) found the same estimate: its match is scored once.
SAME_ESTIMATE_PX = 0.25
#: Smallest image side accepted.
MIN_SIDE = 16


@dataclass(frozen=True)
class AlignResult:
    """The result of `align`.

    Attributes:
        H: ``(3, 3)`` float64 homography mapping image_b pixels onto image_a pixels (original
            coordinates, ``H[2, 2] == 1``); NaN where the method returned nothing.
        corners: ``(4, 2)`` float64, where image_b's corners (0, 0), (wb - 1, 0), (wb - 1, hb - 1),
            (0, hb - 1) land in image_a (x, y pixels).
        failed: the method failed, or the confidence is below ``min_confidence``.
        confidence: in [0, 1] (see the module docstring).
        seconds: wall time of the call (reading and resizing included).
        method: the method's name.
        shape_a, shape_b: ``(h, w)`` of the two images.
        details: the parts of the confidence (``peak_ratio``, ``match``, ``overlap``,
            ``disagreement_px``, ``other_peak_ratio``, ``similarity``, ``method_failed``,
            ``refined``).
    """

    H: np.ndarray
    corners: np.ndarray
    failed: bool
    confidence: float
    seconds: float
    method: str
    shape_a: tuple
    shape_b: tuple
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record written to ``homography.json``."""
        finite = bool(np.all(np.isfinite(self.H)))
        return {
            "direction": "H maps image_b pixels (x, y, 1) onto image_a pixels",
            "H": self.H.tolist() if finite else None,
            "corners_of_b_in_a": self.corners.tolist() if finite else None,
            "failed": bool(self.failed),
            "confidence": round(float(self.confidence), 4),
            "method": self.method,
            "size_a": [int(self.shape_a[1]), int(self.shape_a[0])],
            "size_b": [int(self.shape_b[1]), int(self.shape_b[0])],
            "seconds": round(float(self.seconds), 3),
            "details": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.details.items()},
        }


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


def _read_file(path: Path, name: str) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{name}: image not found: {path}")
    if not path.is_file():
        raise ValueError(f"{name}: not a file: {path}")
    from PIL import Image, UnidentifiedImageError

    try:  # PIL notices truncated files that OpenCV decodes silently with a grey tail
        with Image.open(path) as im:
            im.load()
    except UnidentifiedImageError:
        pass  # a format PIL does not know: OpenCV decides below
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{name}: cannot read image {path} (truncated or corrupt: {e})") from None
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{name}: cannot read image {path} (not an image, or corrupt)")
    if img.ndim == 3 and img.shape[2] >= 3:  # OpenCV decodes BGR(A)
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def load_image(image, name: str = "image") -> np.ndarray:
    """A path or an array as ``(H, W, 3)`` float32 RGB in [0, 1] (see `_load`)."""
    return _unit(_load(image, name))


def _load(image, name: str) -> np.ndarray:
    """A path or an array as ``(H, W, 3)`` RGB, uint8, uint16 or float32 in [0, 1] (resizing
    before the conversion to float keeps large photographs cheap).

    Accepts files OpenCV reads (8- or 16-bit) and arrays ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``
    (RGB) or ``(H, W, 4)`` (RGBA; alpha dropped) of uint8, uint16 or float in [0, 1]. Grey is
    replicated to three channels.

    Raises:
        FileNotFoundError / ValueError naming `name` and the file: missing or unreadable file,
        wrong shape or dtype, an image smaller than 16 x 16, non-finite or out-of-range values.
    """
    if isinstance(image, (str, Path)):
        arr = _read_file(Path(image), name)
        where = f"{name} ({image})"
    else:
        arr = np.asarray(image)
        where = name
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"{where}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ValueError(f"{where}: image is {arr.shape[1]}x{arr.shape[0]} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: image has non-finite values")
        if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise ValueError(f"{where}: float images must be in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = np.clip(arr, 0.0, 1.0)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{where}: unsupported dtype {arr.dtype} (uint8, uint16 or float in [0, 1])")
    arr = np.ascontiguousarray(arr)
    return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB) if arr.ndim == 2 else arr


def _unit(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float32 image -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1 / 255)
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(1 / 65535)
    return img.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def _scaling(shape_hw, size: int) -> np.ndarray:
    """``(3, 3)`` map from an image's pixels to its `size` x `size` resized copy (half-pixel
    centres, as ``cv2.resize``): ``x' = (x + 0.5) * size / w - 0.5``."""
    h, w = shape_hw
    sx, sy = size / w, size / h
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """`img` (any `_load` dtype) resized to `size` x `size`, float32 in [0, 1]."""
    from deeplk.data.sources import resize_to

    return _unit(resize_to(img, (size, size)))


def _normalised(H: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return H / H[..., 2:3, 2:3]


def _corners(H: np.ndarray, shape_hw) -> np.ndarray:
    h, w = shape_hw
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    uvw = pts @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / uvw[:, 2:3]


def _corner_distance(H1: np.ndarray, H2: np.ndarray) -> float:
    """Mean distance (px) between the 192 frame's corners placed by two estimates; inf if
    either is not finite."""
    frame = (INPUT_SIZE, INPUT_SIZE)
    d = float(np.linalg.norm(_corners(H1, frame) - _corners(H2, frame), axis=1).mean())
    return d if np.isfinite(d) else np.inf


def _template_offsets():
    c = PATCH_OFFSET
    dx, dy = SECOND_START_OFFSET
    return [(c, c), (c + dx, c + dy)]


#: What the methods see (`align`'s ``representation``).
REPRESENTATIONS = ("intensity", "gradient")


def gradient_image(img: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """A modality-robust view of an image: the square root of the grey gradient magnitude after a
    Gaussian blur (`sigma` px), divided by its 99th percentile and clipped to [0, 1], as
    ``(H, W, 3)`` float32. Inverted or re-toned intensities give the same edges."""
    g = cv2.GaussianBlur(_grey(img), (0, 0), sigma)
    m = np.sqrt(_gradient_magnitude(g))
    m /= max(float(np.percentile(m, 99)), 1e-6)
    return np.repeat(np.clip(m, 0.0, 1.0)[..., None], 3, axis=-1)


def _represent(img: np.ndarray, representation: str) -> np.ndarray:
    return gradient_image(img) if representation == "gradient" else img


def _frames(a: np.ndarray, b: np.ndarray, representation: str = "intensity"):
    """``(inputs (2, 192, 192, 3), templates (2, 128, 128, 3), a192, b192)``: the two starts in
    `representation`, and the two resized images themselves."""
    a192, b192 = _resize(a, INPUT_SIZE), _resize(b, INPUT_SIZE)
    ra, rb = _represent(a192, representation), _represent(b192, representation)
    templates = np.stack([rb[y0:y0 + TEMPLATE_SIZE, x0:x0 + TEMPLATE_SIZE] for x0, y0 in _template_offsets()])
    return np.stack([ra, ra]), templates, a192, b192


# --------------------------------------------------------------------------------------------
# Confidence
# --------------------------------------------------------------------------------------------


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(img, np.float32), cv2.COLOR_RGB2GRAY)


def _zncc(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 1e-12 else 0.0


def _gradient_magnitude(g: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _similarity(a192: np.ndarray, b192: np.ndarray, a192_H_b192: np.ndarray) -> tuple[float, float]:
    """``(similarity, overlap)`` of image_b's 192 frame warped into image_a's by the estimate."""
    if not np.all(np.isfinite(a192_H_b192)):
        return 0.0, 0.0
    size = (INPUT_SIZE, INPUT_SIZE)
    ga, gb = _grey(a192), _grey(b192)
    warped = cv2.warpPerspective(gb, a192_H_b192, size, flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpPerspective(np.ones_like(gb), a192_H_b192, size, flags=cv2.INTER_LINEAR, borderValue=0)
    overlap = float((mask > 0.999).mean())
    inner = cv2.erode((mask > 0.999).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inner.sum() < 64:
        return 0.0, overlap
    s_int = abs(_zncc(ga[inner], warped[inner]))
    s_grad = _zncc(_gradient_magnitude(ga)[inner], _gradient_magnitude(warped)[inner])
    return max(s_int, s_grad), overlap


def _peak_ratios(a192: np.ndarray, b192: np.ndarray, Hs: list) -> list:
    """`deeplk.methods.descriptor_peak_ratio` of each estimate ``a192_H_b192`` in `Hs` (one
    batched call; NaN where an estimate is not finite or covers too little of image_a)."""
    from deeplk.methods import descriptor_peak_ratio

    Hs = [h if np.all(np.isfinite(h)) else np.full((3, 3), np.nan) for h in Hs]
    n = len(Hs)
    return list(descriptor_peak_ratio(np.repeat(a192[None], n, axis=0), np.repeat(b192[None], n, axis=0),
                                      np.stack(Hs)))


def _peaks_one(a192: np.ndarray, b192: np.ndarray, H: np.ndarray) -> float:
    return float(_peak_ratios(a192, b192, [H])[0])


def _finite_or_none(x: float):
    return float(x) if np.isfinite(x) else None


def _match_score(peak_ratio: float) -> float:
    """How well one estimate matches, in [0, 1], from its peak ratio (see the module docstring)."""
    return float(np.clip((PEAK_CEILING - peak_ratio) / PEAK_SPAN, 0.0, 1.0)) if np.isfinite(peak_ratio) else 0.0


def _confidence(match: float, overlap: float, disagreement: float, other_match: float) -> float:
    """See the module docstring; `disagreement` may be inf (the other start failed)."""
    score = match * min(1.0, overlap / 0.25)
    # a diverged other start is excused only when it matches clearly worse and the result well
    excuse = np.clip((match - other_match) / 0.45, 0.0, 1.0) * np.clip((match - 0.67) / 0.33, 0.0, 1.0)
    ambiguity = 1.0 - excuse
    agreement = np.exp(-((disagreement / 4.0) ** 2)) if np.isfinite(disagreement) else 0.0
    return float(score * (1.0 - ambiguity * (1.0 - agreement)))


# --------------------------------------------------------------------------------------------
# Refinement at a finer frame
# --------------------------------------------------------------------------------------------


def _refine_side(a: np.ndarray, b: np.ndarray, refine_size: int) -> int:
    """Side of the refinement frame: the largest whole multiple of 192 up to `refine_size` and
    both images' shorter sides (few shapes to compile), or 0 (no refinement) below 2 x 192."""
    factor = int(min(refine_size, min(a.shape[:2]), min(b.shape[:2])) // INPUT_SIZE)
    return INPUT_SIZE * factor if factor >= 2 else 0


def _refine(a_s: np.ndarray, b_s: np.ndarray, a192_H_b192: np.ndarray, representation: str):
    """Pyramid LK in the refinement frames `a_s`, `b_s` (both images resized to `_refine_side`);
    ``a192_H_b192`` refined, or None."""
    from deeplk.lk import align_images

    side = a_s.shape[0]
    factor = side // INPUT_SIZE
    c = (side - round(TEMPLATE_SIZE * factor)) // 2
    tsize = side - 2 * c
    a_s, b_s = _represent(a_s, representation), _represent(b_s, representation)
    tmpl = b_s[c:c + tsize, c:c + tsize]
    # 192 frame -> refine frame: x' = (x + 0.5) * f - 0.5 (both images scaled alike)
    S = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
    as_H_bs = S @ a192_H_b192 @ np.linalg.inv(S)
    init = _normalised(as_H_bs @ _translation(c, c))[None].astype(np.float32)
    levels = 3 if tsize >= 256 else 2
    res = align_images(a_s[None], tmpl[None], init_H=init, levels=levels, coarse_motions=(),
                       max_iterations=(5,) * (levels - 1) + (10,))
    if bool(res.failed.numpy()[0]):
        return None
    H = res.H.numpy().astype(np.float64)
    refined = np.linalg.inv(S) @ H[0] @ _translation(-c, -c) @ S
    refined = _normalised(refined)
    move = np.abs(_corners(refined, (INPUT_SIZE, INPUT_SIZE)) - _corners(a192_H_b192, (INPUT_SIZE, INPUT_SIZE)))
    if not np.all(np.isfinite(move)) or np.linalg.norm(move, axis=1).mean() > 4.0:
        return None
    return refined


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def _corners_homography(corners: np.ndarray) -> np.ndarray:
    """``input_H_template`` (3, 3) float64 from a method's template corners (4, 2); NaN when
    they are not finite or degenerate (collinear: no homography)."""
    from deeplk.geometry_np import corners_to_homography

    if not np.all(np.isfinite(corners)):
        return np.full((3, 3), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        H = corners_to_homography(corners, TEMPLATE_SIZE)
    if not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-12:
        return np.full((3, 3), np.nan)
    return H


#: Predictors built without a checkpoint folder (the training-free methods), kept for the
#: process: building one can trace a TensorFlow function. With ``checkpoint_dir`` a method is
#: built at every call (its checkpoint may have changed).
_PREDICTORS: dict = {}


def _predictor(method: str, checkpoint_dir):
    """The predictor `align` uses for `method`: the training-free LK methods without their
    ``flag_divergence`` (its protocol prior would reject what `align` accepts beyond the protocol,
    e.g. ``hybrid`` started by SIFT; the confidence judges the result instead)."""
    from deeplk.methods import DIVERGENCE_CHECKED, get_method

    options = {"flag_divergence": False} if method in DIVERGENCE_CHECKED else {}
    if checkpoint_dir is not None:
        return get_method(method, checkpoint_dir=checkpoint_dir, **options)
    if method not in _PREDICTORS:
        _PREDICTORS[method] = get_method(method, **options)
    return _PREDICTORS[method]


def _check_checkpoint_dir(checkpoint_dir):
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint_dir: folder not found: {path}")
    return path


def _check_method(method: str) -> None:
    from deeplk.methods import available_methods

    names = available_methods()
    if method not in names:
        raise ValueError(f"method: unknown or unavailable method {method!r}; available: {', '.join(names)}")


def _crop_for_init(a: np.ndarray, b: np.ndarray, init_H: np.ndarray):
    """``(a_crop, b_in_crop, a_H_crop, b_H_crop)``: image_a cropped to the bounding box of
    image_b's outline under `init_H`, and image_b warped by `init_H` into that crop."""
    corners = _corners(init_H, b.shape[:2])
    if not np.all(np.isfinite(corners)):
        raise ValueError("init_H: image_b's corners do not map to finite points of image_a")
    h, w = a.shape[:2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        raise ValueError(f"init_H: image_b lands outside image_a (bounding box x {x0}..{x1}, y {y0}..{y1} of {w}x{h})")
    crop_H_a = _translation(-x0, -y0)
    crop_H_b = crop_H_a @ init_H
    b_in = cv2.warpPerspective(b, crop_H_b, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return a[y0:y1, x0:x1], b_in, np.linalg.inv(crop_H_a), crop_H_b


def align(
    image_a,
    image_b,
    method: str = "hybrid",
    checkpoint_dir=None,
    init_H=None,
    *,
    representation: str = "intensity",
    refine_size: int = 768,
    min_confidence: float = 0.3,
    predictor=None,
) -> AlignResult:
    """Find the homography that maps image_b's pixels onto image_a's.

    Args:
        image_a: the reference image (the methods' input): a path or an array (see
            `load_image`), any size and aspect ratio, grey, RGB or RGBA, 8- or 16-bit.
        image_b: the image to place in image_a (the methods' template), same forms.
        method: a name of `deeplk.methods.available_methods()`.
        checkpoint_dir: folder of trained checkpoints (``<checkpoint_dir>/<method>/``) for the
            learned methods.
        init_H: optional ``(3, 3)`` rough homography image_b -> image_a (original pixels) when
            the images differ by more than the methods' range (see the module docstring).
        representation: what the method sees: ``"intensity"`` (the images) or ``"gradient"``
            (`gradient_image` of both: for a pair of different modalities, e.g. inverted or
            re-toned intensities, with a training-free method).
        refine_size: side of the final LK refinement frame (0 disables it).
        min_confidence: below this confidence the result is flagged `failed`.
        predictor: an already built ``predict(inputs, templates)`` of `method` (reused across
            calls, e.g. by a benchmark); if None, built with `deeplk.methods.get_method`, for
            ``lk``, ``hybrid`` and ``lk_mind`` with ``flag_divergence=False`` (the confidence
            judges the result; the methods' protocol prior would reject estimates beyond the
            protocol's range that `align` accepts).

    Returns:
        `AlignResult`.

    Raises:
        FileNotFoundError / ValueError naming the argument: a missing or unreadable image, a too
        small image, an unknown method, a missing checkpoint folder, a bad `init_H`.

    >>> import numpy as np, deeplk
    >>> from deeplk.data.demo import load_demo_image
    >>> photo = load_demo_image("coffee")
    >>> r = deeplk.align(photo, photo[5:, 8:])          # image_b = image_a shifted by (8, 5)
    >>> bool(r.failed), np.round(r.H[:2, 2]).tolist()
    (False, [8.0, 5.0])
    """
    t0 = time.perf_counter()
    _check_method(method)
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation: must be one of {REPRESENTATIONS}, got {representation!r}")
    checkpoint_dir = _check_checkpoint_dir(checkpoint_dir)
    a = _load(image_a, "image_a")
    b = _load(image_b, "image_b")
    if init_H is not None:
        init = np.asarray(init_H, np.float64)
        if init.shape != (3, 3) or not np.all(np.isfinite(init)) or abs(np.linalg.det(init)) < 1e-12:
            raise ValueError(f"init_H: expected a finite invertible (3, 3) homography, got shape {init.shape}")
        a_work, b_work, a_H_work, bwork_H_b = _crop_for_init(a, b, init / init[2, 2])
    else:
        a_work, b_work, a_H_work, bwork_H_b = a, b, np.eye(3), np.eye(3)
    if predictor is None:
        predictor = _predictor(method, checkpoint_dir)
    # the refinement frames first: the 192 frames are their exact block averages (one pass over
    # the original images instead of two)
    side = _refine_side(a_work, b_work, refine_size) if refine_size else 0
    fine = (_resize(a_work, side), _resize(b_work, side)) if side else None
    inputs, templates, a192, b192 = _frames(*(fine or (a_work, b_work)), representation)
    corners, failed = predictor(inputs, templates)
    corners = np.asarray(corners, np.float64)
    failed = np.asarray(failed, bool)
    # both starts as a192_H_b192 (template t = b192 - offset); NaN where the method failed
    H192 = [_corners_homography(corners[i]) @ _translation(-x0, -y0) if not failed[i] else np.full((3, 3), np.nan)
            for i, (x0, y0) in enumerate(_template_offsets())]
    H192 = [_normalised(h) for h in H192]
    ok = [bool(np.all(np.isfinite(h))) for h in H192]
    method_failed = not any(ok)
    if all(ok) and _corner_distance(*H192) < SAME_ESTIMATE_PX:  # one estimate reached from both starts: scored once
        sim_overlap = [_similarity(a192, b192, H192[0])] * 2
        peaks = _peak_ratios(a192, b192, H192[:1]) * 2
    else:
        sim_overlap = [_similarity(a192, b192, h) if good else (-1.0, 0.0) for h, good in zip(H192, ok)]
        peaks = _peak_ratios(a192, b192, H192)
    sims = [sim for sim, _ in sim_overlap]
    matches = [_match_score(peak) if good else -1.0 for peak, good in zip(peaks, ok)]
    # the start that matches better (the centred one on a tie), on equal match the more similar
    best = max(range(2), key=lambda i: (matches[i], sims[i], -i))
    other = 1 - best
    refined = False
    if not method_failed and fine is not None:
        better = _refine(*fine, H192[best], representation)
        if better is not None:
            # kept unless it matches worse (coarse checks in the 192 frame: the similarity, and
            # the sharpness of the descriptor minimum whatever the modalities)
            so_better, peak_better = _similarity(a192, b192, better), _peaks_one(a192, b192, better)
            if so_better[0] >= sims[best] - 0.01 and not peak_better > peaks[best] + PEAK_TOLERANCE:
                H192[best], sim_overlap[best], peaks[best], refined = better, so_better, peak_better, True
                sims[best], matches[best] = so_better[0], _match_score(peak_better)
    disagreement = _corner_distance(H192[best], H192[other])
    if method_failed:
        similarity, overlap, confidence = 0.0, 0.0, 0.0
    else:
        similarity, overlap = sim_overlap[best]
        confidence = _confidence(matches[best], overlap, disagreement, max(matches[other], 0.0))
    # back to the original pixels: a <- a_work <- a192 ... b192 <- b_work <- b
    Sa, Sb = _scaling(a_work.shape[:2], INPUT_SIZE), _scaling(b_work.shape[:2], INPUT_SIZE)
    H = _normalised(a_H_work @ np.linalg.inv(Sa) @ H192[best] @ Sb @ bwork_H_b)
    details = {
        "similarity": float(similarity),
        "other_similarity": float(max(sims[other], 0.0)),
        "peak_ratio": _finite_or_none(peaks[best]) if not method_failed else None,
        "other_peak_ratio": _finite_or_none(peaks[other]) if not method_failed else None,
        "match": float(max(matches[best], 0.0)),
        "overlap": float(overlap),
        "disagreement_px": disagreement if np.isfinite(disagreement) else None,
        "start": ("centred", "offset")[best],
        "method_failed": method_failed,
        "refined": refined,
    }
    return AlignResult(
        H=H,
        corners=_corners(H, b.shape[:2]),
        failed=bool(method_failed or confidence < min_confidence),
        confidence=float(confidence),
        seconds=time.perf_counter() - t0,
        method=method,
        shape_a=tuple(a.shape[:2]),
        shape_b=tuple(b.shape[:2]),
        details=details,
    )


# --------------------------------------------------------------------------------------------
# Pictures of a result
# --------------------------------------------------------------------------------------------


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(img, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def warp_to_a(image_a, image_b, H) -> tuple[np.ndarray, np.ndarray]:
    """image_b warped into image_a's frame by ``H`` (b -> a): ``(warped (ha, wa, 3) float32,
    valid mask (ha, wa) bool)``."""
    a = load_image(image_a, "image_a")
    b = load_image(image_b, "image_b")
    H = np.asarray(H, np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise ValueError(f"H: expected a finite (3, 3) homography, got shape {H.shape}")
    size = (a.shape[1], a.shape[0])
    warped = cv2.warpPerspective(b, H, size, flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpPerspective(np.ones(b.shape[:2], np.float32), H, size, flags=cv2.INTER_LINEAR, borderValue=0)
    return warped, mask > 0.5


def overlay_image(image_a, image_b, H, tiles: int = 8) -> np.ndarray:
    """A checkerboard of image_a and image_b warped into its frame by ``H`` (b -> a), with
    image_b's outline in red: ``(ha, wa, 3)`` uint8 RGB. Edges continue across the tiles where the
    alignment is right. ``H`` None shows image_a with image_b resized over it (before alignment)."""
    a = load_image(image_a, "image_a")
    b = load_image(image_b, "image_b")
    if H is None:
        H = np.diag([a.shape[1] / b.shape[1], a.shape[0] / b.shape[0], 1.0])
        H[0, 2], H[1, 2] = 0.5 * H[0, 0] - 0.5, 0.5 * H[1, 1] - 0.5
    warped, mask = warp_to_a(a, b, H)
    h, w = a.shape[:2]
    tile = max(1, max(h, w) // tiles)
    yy, xx = np.mgrid[0:h, 0:w]
    use_b = (((yy // tile) + (xx // tile)) % 2 == 1) & mask
    out = _to_uint8(np.where(use_b[..., None], warped, a))
    outline = _corners(H, b.shape[:2])
    if np.all(np.abs(outline) < 1e6):  # False for NaN too
        pts = np.round(outline).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, (255, 0, 0), max(1, max(h, w) // 300), cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

#: Files the command writes into --out on success, and the report it writes on failure.
OUTPUT_FILES = ("homography.json", "warped.png", "overlay.png", "lk_iterations.gif")
FAILURE_FILE = "failure.json"

_EXAMPLE = """\
example (two views of one scene; the second made here by warping the first):
  python -c "import cv2, numpy as np, skimage.data as d; a = d.coffee()[..., ::-1]; \\
cv2.imwrite('a.png', a); H = np.array([[1.02, 0.03, -12], [-0.02, 0.99, 9], [0, 0, 1]]); \\
cv2.imwrite('b.png', cv2.warpPerspective(a, H, (600, 400), flags=cv2.WARP_INVERSE_MAP))"
  deeplk-align a.png b.png --out aligned --gif
  deeplk-align photo.png map.png --representation gradient   # two modalities
  deeplk-align big.png tile.png --init-h rough.json           # B far from A's centre: a rough H
prints H (b pixels -> a pixels, close to the matrix above) and the confidence; writes
aligned/homography.json, aligned/warped.png (b in a's frame), aligned/overlay.png (checkerboard of
a and warped b) and aligned/lk_iterations.gif. Exit code 0 aligned, 1 alignment failed (only
aligned/failure.json is written), 2 bad input (same).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deeplk-align",
        description="Find the homography mapping image B's pixels onto image A's (any sizes), with a confidence.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image_a", metavar="A", help="reference image (path)")
    p.add_argument("image_b", metavar="B", help="image to place in A (path)")
    p.add_argument("--method", default="hybrid", help="alignment method (default: hybrid; see --list-methods)")
    p.add_argument("--checkpoint-dir", default=None, metavar="D", help="folder of trained checkpoints for learned methods")
    p.add_argument("--out", default=None, metavar="DIR", help="write homography.json, warped.png, overlay.png here")
    p.add_argument("--gif", action="store_true", help="also write lk_iterations.gif: the LK iterations in the 192 frame from the centred start")
    p.add_argument("--init-h", default=None, metavar="FILE",
                   help="rough homography B -> A to start from when B is far off (a homography.json, or 9 numbers)")
    p.add_argument("--representation", default="intensity", choices=REPRESENTATIONS,
                   help="what the method sees: intensity (default) or gradient (for two modalities)")
    p.add_argument("--min-confidence", type=float, default=0.3, metavar="C", help="below this the alignment failed (default 0.3)")
    p.add_argument("--list-methods", action="store_true", help="list the available methods and exit")
    return p


def read_homography(path) -> np.ndarray:
    """A ``(3, 3)`` homography from a file: a JSON object with key ``"H"`` (``homography.json``)
    or 9 numbers (whitespace or commas). Raises FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_H: file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        values = json.loads(text)["H"] if text.lstrip().startswith("{") else text.replace(",", " ").split()
        H = np.asarray(values, np.float64).reshape(3, 3)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"init_H: {path} holds no 3x3 homography (a JSON object with \"H\", or 9 numbers): {e}") from None
    return H


def _png(img_uint8: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img_uint8, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_outputs(out, image_a, image_b, result: AlignResult, gif: bool = False,
                  representation: str = "intensity", record: dict | None = None) -> list:
    """Write a successful result into folder `out`: ``homography.json`` (``result.to_json()``
    plus `record`), ``warped.png`` (image_b in image_a's frame), ``overlay.png`` (checkerboard,
    `overlay_image`) and with `gif` ``lk_iterations.gif``; every file through a temporary name.
    Removes a stale ``failure.json``. Returns the paths written."""
    from deeplk.utils import write_bytes_atomic, write_text_atomic

    out = Path(out)
    if result.failed or not np.all(np.isfinite(result.H)):
        raise ValueError("result: a failed alignment has no outputs (write a failure report instead)")
    a = load_image(image_a, "image_a")
    b = load_image(image_b, "image_b")
    warped, _ = warp_to_a(a, b, result.H)
    pictures = {"warped.png": _png(_to_uint8(warped)), "overlay.png": _png(overlay_image(a, b, result.H))}
    frames = _lk_gif_frames(a, b, representation) if gif else None
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILURE_FILE).unlink(missing_ok=True)
    for name, data in pictures.items():
        write_bytes_atomic(out / name, data)
    if frames is not None:
        from deeplk.viz.playback import save_animation

        save_animation(frames, out / "lk_iterations.gif", mp4=False)
    write_text_atomic(out / "homography.json", json.dumps({**(record or {}), **result.to_json()}, indent=2) + "\n")
    return [out / n for n in OUTPUT_FILES if (out / n).exists()]


def make_demo_pair(path_a, path_b, name: str = "coffee", style: str | None = "season", seed: int = 0) -> np.ndarray:
    """Write an offline pair with a known homography: a demo photograph (`name`, full size) as
    image_a and, as image_b, the photo seen through a random homography (corners moved by up to
    6% of the size) and rendered in the second modality `style` (`deeplk.data.modality`;
    None keeps the photo's look). PNG files, written through temporary names.

    Returns:
        ``(3, 3)`` the true homography image_b pixels -> image_a pixels.
    """
    from deeplk.data.demo import load_demo_image
    from deeplk.data.modality import render_modality
    from deeplk.utils import write_bytes_atomic

    rng = np.random.default_rng(seed)
    a = load_demo_image(name)
    h, w = a.shape[:2]
    src = _corners(np.eye(3), (h, w)).astype(np.float32)
    dst = (src + rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]).astype(np.float32)
    a_H_b = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    b = cv2.warpPerspective(a, a_H_b, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
    if style is not None:
        b = render_modality(b, style, rng)
    for path, img in ((path_a, a), (path_b, b)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, _png(img))
    return a_H_b


def upload_widget(method: str = "hybrid", representation: str = "intensity", checkpoint_dir=None):
    """An ipywidgets box for JupyterLab: upload two images, press Align, see the checkerboard
    overlay before and after, H and the confidence."""
    import ipywidgets as widgets
    from IPython.display import display

    up_a = widgets.FileUpload(accept="image/*", description="image A")
    up_b = widgets.FileUpload(accept="image/*", description="image B")
    rep = widgets.Dropdown(options=REPRESENTATIONS, value=representation, description="features")
    button = widgets.Button(description="Align", button_style="primary")
    output = widgets.Output()

    def decode(upload, label):
        if not upload.value:
            raise ValueError(f"{label}: no file uploaded")
        content = bytes(upload.value[0]["content"])
        img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{label}: cannot read {upload.value[0]['name']} as an image")
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return img

    def run(_):
        import matplotlib.pyplot as plt

        output.clear_output()
        with output:
            try:
                a, b = decode(up_a, "image A"), decode(up_b, "image B")
                r = align(a, b, method=method, checkpoint_dir=checkpoint_dir, representation=rep.value)
            except (FileNotFoundError, ValueError) as e:
                print(f"error: {e}")
                return
            print(np.array2string(r.H, precision=4, suppress_small=True))
            print(f"confidence {r.confidence:.3f}" + ("  FAILED" if r.failed else ""))
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
            for ax, H, title in ((axes[0], None, "before (B stretched onto A)"), (axes[1], r.H, "after")):
                ax.imshow(overlay_image(a, b, H))
                ax.set_title(title)
                ax.axis("off")
            plt.show()

    button.on_click(run)
    box = widgets.VBox([widgets.HBox([up_a, up_b, rep, button]), output])
    display(box)
    return box


def _write_failure(out: Path | None, record: dict) -> None:
    if out is None:
        return
    from deeplk.utils import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # no stale results of an earlier run next to the report
        (out / name).unlink(missing_ok=True)
    write_text_atomic(out / FAILURE_FILE, json.dumps(record, indent=2) + "\n")


def _lk_gif_frames(a: np.ndarray, b: np.ndarray, representation: str) -> list:
    from deeplk.viz.playback import playback_frames, run_playback
    from deeplk.viz.sources import intensity_source

    inputs, templates, _, _ = _frames(a, b, representation)
    pb = run_playback(intensity_source(), inputs[0], templates[0], jit_compile=False)
    return playback_frames(inputs[0], templates[0], pb, scale=2, title=f"LK on {representation}, centred start")


def main(argv: list[str] | None = None) -> int:
    """``deeplk-align A B [--method M] [--checkpoint-dir D] [--out DIR] [--gif]`` (see --help).

    Returns the exit code: 0 aligned, 1 alignment failed, 2 bad input.
    """
    args = _parser().parse_args(argv)
    if args.list_methods:
        from deeplk.methods import available_methods

        print("\n".join(available_methods()))
        return 0
    out = Path(args.out) if args.out else None
    base = {"image_a": str(args.image_a), "image_b": str(args.image_b), "method": args.method}
    try:
        if out is not None and out.exists() and not out.is_dir():
            raise ValueError(f"--out: not a folder: {out}")
        init_H = read_homography(args.init_h) if args.init_h else None
        result = align(args.image_a, args.image_b, method=args.method, checkpoint_dir=args.checkpoint_dir,
                       init_H=init_H, representation=args.representation, min_confidence=args.min_confidence)
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        for api, cli in (("checkpoint_dir:", "--checkpoint-dir:"), ("method:", "--method:"), ("init_H:", "--init-h:"),
                         ("image_a", "A"), ("image_b", "B")):
            msg = msg.replace(api, cli, 1) if msg.startswith(api) else msg
        print(f"deeplk-align: error: {msg}", file=sys.stderr)
        _write_failure(out, {**base, "failed": True, "error": msg})
        return 2
    np.set_printoptions(suppress=True, precision=6)
    print("H (B pixels -> A pixels):")
    print(result.H)
    status = "FAILED" if result.failed else "ok"
    print(f"confidence {result.confidence:.3f} ({status}); method {result.method}; {result.seconds:.2f} s")
    if result.failed:
        print("deeplk-align: alignment failed (confidence below --min-confidence or the method failed); "
              "the homography above is not reliable", file=sys.stderr)
        _write_failure(out, {**base, **result.to_json(), "error": "alignment failed"})
        return 1
    if out is not None:
        written = write_outputs(out, args.image_a, args.image_b, result, gif=args.gif,
                                representation=args.representation, record=base)
        print(f"wrote {', '.join(p.name for p in written)} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
