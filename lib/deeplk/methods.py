"""The method registry: one name per alignment method, as `05_evaluate.ipynb` and scripts use them.

A method is built by `get_method(name, checkpoint_dir=None, **options)` and is a callable
``predict(inputs, templates) -> (corners, failed)`` on a batch:

- ``inputs`` ``(B, 192, 192, 3)`` and ``templates`` ``(B, 128, 128, 3)`` float32 in [0, 1];
- ``corners`` ``(B, 4, 2)`` float64, where the template's corners land in the input frame
  (NaN where the method failed), ``failed`` ``(B,)`` bool.

No method ever receives the ground truth. `evaluate_methods` runs several methods over a
DLK-format folder and returns the records of ``summary.json``.

Divergence: a method that cannot align must say so rather than return an answer worse than the
centred guess. The training-free LK methods (``lk``, ``hybrid``, ``lk_mind``) take
``flag_divergence=True`` (the default; ``False`` returns their raw results, e.g. to show that
behaviour in an evaluation) and then mark as failed every result that `diverged` flags: an
estimate the DLK protocol cannot produce (non-finite, folded or degenerate corners, a corner
far outside the box the protocol draws it in), one that moved away from the centred guess
but is not a sharp minimum of the MIND descriptor's SSD (`descriptor_peak_ratio`, whatever the
modalities) or, for the methods on intensities, one that moved away without lowering LK's own
objective, the photometric residual, well below the centred guess's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from deeplk import baselines, evaluate
from deeplk._checks import check_bool, check_shape
from deeplk.data.protocol import BOX_SIZE, MIN_CROSS
from deeplk.geometry_np import centred_corners, centred_homography, is_convex_quad

__all__ = ["METHOD_NAMES", "FAMILIES", "MethodInfo", "available_methods", "get_method", "evaluate_methods",
           "photometric_residual", "descriptor_peak_ratio", "diverged", "DIVERGENCE_CHECKED", "MAX_CORNER_SHIFT",
           "MAX_RESIDUAL_RATIO", "MAX_PEAK_RATIO", "MIN_MOVE", "PEAK_SHIFT"]

# Every name the project promises (DESIGN.md); `available_methods()` lists those implemented.
METHOD_NAMES = ("identity", "sift", "orb", "ecc", "lk", "lk_mind", "hybrid", "dhn", "mhn", "hnet_sup", "hnet_unsup", "clkn", "dlkfm")

Predictor = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class MethodInfo:
    name: str
    description: str
    build: Callable[..., Predictor]
    batched: bool = False  # runs a whole batch at once (TensorFlow), so warm it up before timing


def _per_pair(name: str) -> Callable[..., Predictor]:
    def build(checkpoint_dir=None, **options) -> Predictor:
        fn = baselines.BASELINES[name]
        return lambda inputs, templates: baselines.predict_batch(
            lambda i, t: fn(i, t, **options), inputs, templates
        )

    return build


def _lk_corners(H, template_shape) -> np.ndarray:
    from deeplk.geometry import homography_to_corners

    return homography_to_corners(H, tuple(template_shape[1:3])).numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# Divergence of the training-free LK methods (their ``flag_divergence`` option)
# --------------------------------------------------------------------------------------------

#: The methods that take ``flag_divergence`` (default True).
DIVERGENCE_CHECKED = ("lk", "lk_mind", "hybrid")
#: A corner further than this (x or y, pixels of the input frame) from where the centred guess
#: puts it is implausible: the DLK protocol draws every corner within about +-32 px
#: (`deeplk.data.protocol.BOX_SIZE`), so this allows 16 px beyond the protocol's box.
MAX_CORNER_SHIFT = 1.5 * BOX_SIZE / 2
#: An estimate more than `MIN_MOVE` px (mean corner distance) from the centred guess whose
#: photometric residual is above this fraction of the centred guess's has not aligned: LK's
#: objective stayed near the unaligned level.
MAX_RESIDUAL_RATIO = 0.9
#: Below this move from the centred guess (mean corner distance, px) the residual is not
#: compared: an estimate that stayed put cannot lower it (the centred guess may be right).
MIN_MOVE = 2.0
#: An estimate more than `MIN_MOVE` px from the centred guess whose `descriptor_peak_ratio` is
#: above this is not a sharp minimum of the MIND descriptor's SSD: it has not aligned, whatever
#: the modalities (on the demo's photographs and photo/map pairs, results under 10 px score
#: up to 0.9, most results worse than the centred guess 0.95 to 1).
MAX_PEAK_RATIO = 0.95


def diverged(corners, input_size, template_size, residual=None, centred_residual=None,
             peak_ratio=None) -> np.ndarray:
    """Which estimates cannot be right, judged without the ground truth. ``(B,)`` bool.

    An estimate is flagged when

    - a corner is not finite, or the quadrilateral is not convex with the protocol's orientation
      (a fold-over, a mirror image or nearly collinear corners; `deeplk.data.protocol.MIN_CROSS`);
    - a corner lies more than `MAX_CORNER_SHIFT` (48) px, in x or y, from the centred guess's
      (the protocol's prior: every corner within about 32 px of the centred square);
    - with `residual` and `centred_residual` (the `photometric_residual` of the estimate and of
      the centred guess, LK's objective on intensities): the estimate moved more than
      `MIN_MOVE` px (mean corner distance) from the centred guess but its residual is not
      below `MAX_RESIDUAL_RATIO` times the centred guess's (including an infinite residual: the
      estimate left the input);
    - with `peak_ratio` (`descriptor_peak_ratio` of the estimate): the estimate moved more than
      `MIN_MOVE` px but is not a sharp minimum of the MIND descriptor's SSD (ratio above
      `MAX_PEAK_RATIO`, or undefined).

    The first two and the last hold whatever the modalities; the third holds for a method that
    aligns intensities (it is its own objective).

    Args:
        corners: ``(B, 4, 2)`` template corners in the input frame, (x, y) pixels, TL, TR, BR,
            BL (NaN allowed).
        input_size, template_size: ``(h, w)`` (or one int) of the input images and templates.
        residual, centred_residual: ``(B,)`` or both None.
        peak_ratio: ``(B,)`` or None.

    >>> c = np.array([[[32, 32], [159, 32], [159, 159], [32, 159]],      # centred
    ...               [[0, 0], [191, 10], [180, 180], [20, 191]],        # within the protocol
    ...               [[-30, 32], [159, 32], [159, 159], [32, 159]],     # a corner 62 px out
    ...               [[159, 32], [32, 32], [32, 159], [159, 159]]])     # mirrored
    >>> diverged(c, 192, 128).tolist()
    [False, False, True, True]
    """
    c = np.asarray(corners, np.float64)
    check_shape("corners", c, (None, 4, 2), "B x 4 corners x (x, y)")
    if (residual is None) != (centred_residual is None):
        raise ValueError("`residual` and `centred_residual` go together: give both or neither")
    centred = centred_corners(input_size, template_size)
    with np.errstate(invalid="ignore"):
        shift = np.abs(c - centred).max(axis=(1, 2))
        moved = np.linalg.norm(c - centred, axis=-1).mean(-1)
        flagged = ~is_convex_quad(c, MIN_CROSS) | ~(shift <= MAX_CORNER_SHIFT)
        if residual is not None:
            r = np.asarray(residual, np.float64).reshape(-1)
            r0 = np.asarray(centred_residual, np.float64).reshape(-1)
            if r.shape != (len(c),) or r0.shape != (len(c),):
                raise ValueError(f"`residual` and `centred_residual` must have shape ({len(c)},), got "
                                 f"{np.shape(residual)} and {np.shape(centred_residual)}")
            flagged |= (moved > MIN_MOVE) & ~(r <= MAX_RESIDUAL_RATIO * r0)
        if peak_ratio is not None:
            p = np.asarray(peak_ratio, np.float64).reshape(-1)
            if p.shape != (len(c),):
                raise ValueError(f"`peak_ratio` must have shape ({len(c)},), got {np.shape(peak_ratio)}")
            flagged |= (moved > MIN_MOVE) & ~(p <= MAX_PEAK_RATIO)
    return flagged


def _lk_predictor(levels: int, options, features=None, flag_divergence: bool = True) -> Predictor:
    """Pyramid LK (`deeplk.lk.align_images`) from the centred guess on grey intensities, or on
    ``features(images)`` of both images when given (multi-channel, not converted to grey);
    with `flag_divergence` the estimates that `diverged` flags fail (the peak test always, the
    residual test only on intensities)."""
    from deeplk.lk import align_images

    def predict(inputs, templates):
        images = [np.asarray(x, np.float32) for x in (inputs, templates)]
        if features is not None:
            images = [features(x) for x in images]
        result = align_images(*images, levels=levels, options=options, grayscale=features is None)
        failed = result.failed.numpy()
        corners = _lk_corners(result.H, np.shape(templates))
        if flag_divergence:
            residuals = None
            if features is None:
                centred = centred_homography(np.shape(inputs)[1:3], np.shape(templates)[1:3])
                residuals = (photometric_residual(inputs, templates, result.H.numpy()),
                             photometric_residual(inputs, templates, np.repeat(centred[None], len(failed), axis=0)))
            sizes = np.shape(inputs)[1:3], np.shape(templates)[1:3]
            failed = failed | diverged(corners, *sizes, *(residuals or ()))
            failed |= diverged(corners, *sizes, peak_ratio=_peak_ratios(inputs, templates, result.H.numpy(), failed))
        corners[failed] = np.nan
        return corners, failed

    return predict


def _build_lk(checkpoint_dir=None, levels: int = 3, lk_options=None, flag_divergence: bool = True,
              **settings) -> Predictor:
    """Pyramid LK on grey intensities from the centred guess (`deeplk.lk.align_images`).

    `lk_options`: an `deeplk.lk.LKOptions` (or a dict of its fields); `settings`: its fields
    given one by one (``max_iterations=...``), replacing those of `lk_options`. Validated here.
    `flag_divergence`: fail the estimates that `diverged` flags (with the residual and peak
    tests).
    """
    from deeplk.lk import LKOptions

    flag_divergence = check_bool("flag_divergence", flag_divergence)
    return _lk_predictor(levels, LKOptions.coerce(lk_options, **settings), flag_divergence=flag_divergence)


def _build_lk_mind(checkpoint_dir=None, descriptor: str = "mind", descriptor_options=None, levels: int = 3,
                   lk_options=None, flag_divergence: bool = True, **settings) -> Predictor:
    """The ``lk`` method on a modality-independent descriptor (`deeplk.descriptors`, `descriptor`
    with `descriptor_options`) of both images instead of grey intensities: the descriptor is
    computed at full resolution (XLA-compiled) and the multi-channel LK of `align_images`
    (same pyramid, defaults and convergence rule as ``lk``; `lk_options` / `settings` as there)
    averages it down its pyramid. `flag_divergence`: fail the estimates that `diverged` flags
    (the protocol's prior and the peak test: the grey residual is not this method's objective)."""
    from deeplk.descriptors import describe
    from deeplk.lk import LKOptions

    flag_divergence = check_bool("flag_divergence", flag_divergence)
    options = LKOptions.coerce(lk_options, **settings)
    descriptor_options = dict(descriptor_options or {})
    describe(np.zeros((1, 8, 8, 1), np.float32), descriptor, **descriptor_options)  # bad options fail here
    return _lk_predictor(levels, options, _compiled_descriptor(descriptor, descriptor_options), flag_divergence)


_COMPILED_DESCRIPTORS: dict = {}


def _compiled_descriptor(descriptor: str = "mind", options=None):
    """`deeplk.descriptors.describe` with `options` as an XLA-compiled function, one per setting
    for the process (no retracing when a method is built again)."""
    import tensorflow as tf

    from deeplk.descriptors import describe

    options = dict(options or {})
    key = (descriptor, repr(sorted(options.items())))
    if key not in _COMPILED_DESCRIPTORS:
        _COMPILED_DESCRIPTORS[key] = tf.function(lambda x: describe(x, descriptor, **options), jit_compile=True)
    return _COMPILED_DESCRIPTORS[key]


_DESCRIBED: dict = {}


def _described_once(descriptor: str = "mind"):
    """``(H, W)`` grey image -> its ``(H, W, C)`` descriptor (NumPy), remembered by content for
    the last few images (`deeplk.utils.ContentCache`): scoring several estimates of one pair
    describes each image once."""
    from deeplk.utils import ContentCache

    if descriptor not in _DESCRIBED:
        describe = _compiled_descriptor(descriptor)
        _DESCRIBED[descriptor] = ContentCache(lambda grey: describe(grey[None, ..., None]).numpy()[0], size=8)
    return _DESCRIBED[descriptor]


def _grey_images(name: str, x) -> np.ndarray:
    """``(B, H, W, 1 or 3)`` images -> ``(B, H, W)`` float32 luma (as `deeplk.lk.to_greyscale`)."""
    from deeplk.lk.preprocess import _host_grey

    x = np.asarray(x, np.float32)
    check_shape(name, x, (None, None, None, None), "B x H x W x C")
    if x.shape[-1] == 1:
        return x[..., 0]
    if x.shape[-1] != 3:
        raise ValueError(f"`{name}` must have 1 or 3 channels, got shape {x.shape}")
    return _host_grey(x)


def _image_pair_and_homographies(inputs, templates, input_H_template):
    """``(grey inputs (B, Hi, Wi), grey templates (B, Ht, Wt), H (B, 3, 3) float64)``, checked."""
    grey_in = _grey_images("inputs", inputs)
    grey_t = _grey_images("templates", templates)
    H = np.asarray(input_H_template, np.float64)
    check_shape("input_H_template", H, (len(grey_in), 3, 3), "B x 3 x 3 homographies")
    if len(grey_t) != len(grey_in):
        raise ValueError(f"`inputs` and `templates` must have the same batch size, got {len(grey_in)} and {len(grey_t)}")
    return grey_in, grey_t, H


def photometric_residual(inputs, templates, input_H_template, min_valid_fraction: float = 0.5) -> np.ndarray:
    """Mean squared grey-level difference between the template and the input warped by H, over
    the valid pixels; inf where fewer than `min_valid_fraction` of the pixels are valid or H is
    not finite. (B,)

    The warp and its validity mask are those of `deeplk.warp.warp_image` (bilinear, zero
    outside), computed with OpenCV on the host (``cv2.warpPerspective``, whose quantised
    interpolation weights leave the residual within about 1e-3 relative of one computed with
    `warp_image`; a whole-pixel translation that keeps the template inside the input, such as
    the centred guess, is a crop): about 0.15 ms per 128 x 128 template. Grey levels are the
    luma of `deeplk.lk.to_greyscale`.

    Used to choose between candidate alignments and to test whether LK's objective decreased
    (`diverged`), without the ground truth.
    """
    import cv2

    grey_in, grey_t, H = _image_pair_and_homographies(inputs, templates, input_H_template)
    h, w = grey_t.shape[1:3]
    corners_h = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    size_in = np.array([grey_in.shape[2] - 1, grey_in.shape[1] - 1], np.float64)
    res = np.full(len(grey_in), np.inf)
    for i in range(len(grey_in)):
        if not np.all(np.isfinite(H[i])):
            continue
        x0, y0 = H[i, 0, 2] / H[i, 2, 2], H[i, 1, 2] / H[i, 2, 2]
        if (np.array_equal(H[i] / H[i, 2, 2], [[1, 0, x0], [0, 1, y0], [0, 0, 1]]) and x0 == int(x0) and y0 == int(y0)
                and 0 <= x0 <= grey_in.shape[2] - w and 0 <= y0 <= grey_in.shape[1] - h):
            # a whole-pixel translation keeping the template inside (the centred guess): a crop
            crop = grey_in[i, int(y0):int(y0) + h, int(x0):int(x0) + w]
            res[i] = float(np.mean((crop - grey_t[i]) ** 2, dtype=np.float64))
            continue
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        p = corners_h @ H[i].T
        if np.all(p[:, 2] > 0) and np.all((p[:, :2] >= 0) & (p[:, :2] <= size_in * p[:, 2:])):
            # the template's corners land inside the input, and so does every pixel (a positive
            # homogeneous scale at the corners keeps it positive in between: the template maps
            # onto the convex quadrilateral of its corners)
            warped = cv2.warpPerspective(grey_in[i], H[i], (w, h), flags=flags)
            res[i] = float(np.mean((warped - grey_t[i]) ** 2, dtype=np.float64))
            continue
        # the image and a plane of ones in one call: the second channel is 1 exactly where all
        # bilinear neighbours with a weight lie inside the input
        both = cv2.warpPerspective(np.dstack([grey_in[i], np.ones_like(grey_in[i])]), H[i], (w, h),
                                   flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = both[..., 1] > 1.0 - 1e-4
        valid = mask.mean()
        if valid < min_valid_fraction or not mask.any():
            continue
        res[i] = float(np.mean((both[..., 0][mask] - grey_t[i][mask]) ** 2, dtype=np.float64))
    return res


#: Shift (pixels of the input frame) of the perturbations in `descriptor_peak_ratio`.
PEAK_SHIFT = 4.0


def descriptor_peak_ratio(inputs, templates, input_H_template, shift: float = PEAK_SHIFT,
                          min_valid_pixels: int = 64) -> np.ndarray:
    """How sharp a minimum of the MIND descriptor's SSD an estimate is, whatever the modalities:
    the SSD at the estimate divided by its mean at eight perturbations of it. (B,)

    Both images are described by `deeplk.descriptors.mind` (grey levels, default settings; the
    same whichever way intensities differ between the modalities); the template's descriptor is
    warped into the input's frame by ``input_H_template`` and by ``T(d) @ input_H_template``
    for the eight translations ``d`` of length `shift` (px of the input frame: +-x, +-y and the
    diagonals), and the sum over channels of the squared difference is averaged over the
    input pixels that all nine warps cover (eroded by 2 px); the pairs are scored in parallel
    threads (`deeplk.baselines.map_pairs`). A true alignment is a sharp minimum: the ratio is
    well below 1 (photographs 0.05-0.4,
    a photo against a map rendering 0.45-0.85 at ``shift`` 4); a wrong estimate, even a local
    minimum of another objective, sits on a flat floor (about 1). NaN where H is not finite or
    fewer than `min_valid_pixels` pixels are valid.

    Args:
        inputs: ``(B, Hi, Wi, C)`` float images in [0, 1] (C 1 or 3).
        templates: ``(B, Ht, Wt, C)`` (any size: `deeplk.align` passes whole images).
        input_H_template: ``(B, 3, 3)`` template pixels -> input pixels.
        shift: perturbation length, pixels of the input frame (> 0).

    >>> x = np.random.default_rng(0).uniform(size=(1, 64, 64, 1)).astype(np.float32)
    >>> x = np.asarray(__import__("cv2").GaussianBlur(x[0], (0, 0), 1.5))[None, ..., None]
    >>> H = np.array([[[1, 0, 16.0], [0, 1, 16], [0, 0, 1]]])
    >>> bool(descriptor_peak_ratio(x, x[:, 16:48, 16:48], H)[0] < 0.2)
    True
    """
    import cv2

    grey_in, grey_t, H = _image_pair_and_homographies(inputs, templates, input_H_template)
    if not (np.isfinite(shift) and shift > 0):
        raise ValueError(f"`shift` must be a finite number > 0, got {shift!r}")
    describe = _described_once("mind")  # one image at a time: one compiled shape per image size
    size = (grey_in.shape[2], grey_in.shape[1])
    k = shift / np.sqrt(2.0)
    moves = [(0.0, 0.0), (shift, 0), (-shift, 0), (0, shift), (0, -shift), (k, k), (-k, k), (k, -k), (-k, -k)]
    ones = np.ones(grey_t.shape[1:3], np.float32)
    kernel = np.ones((5, 5), np.uint8)

    def ratio(i: int) -> float:
        if not np.all(np.isfinite(H[i])):
            return np.nan
        warps = [np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]]) @ H[i] for dx, dy in moves]
        valid = np.ones(grey_in.shape[1:3], bool)
        for Hm in warps:
            valid &= cv2.warpPerspective(ones, Hm, size, flags=cv2.INTER_LINEAR, borderValue=0) > 1.0 - 1e-4
        valid = cv2.erode(valid.astype(np.uint8), kernel)
        count = int(np.count_nonzero(valid))
        if count < min_valid_pixels:
            return np.nan
        d_in, d_t = describe(grey_in[i]), describe(grey_t[i])
        # sum over the valid pixels and the channels of the squared difference (OpenCV, float64)
        r = [cv2.norm(cv2.warpPerspective(d_t, Hm, size, flags=cv2.INTER_LINEAR, borderValue=0), d_in,
                      cv2.NORM_L2SQR, mask=valid) / count for Hm in warps]
        around = np.mean(r[1:])
        return r[0] / around if around > 0 else np.nan

    return np.array(baselines.map_pairs(ratio, len(grey_in)), np.float64).reshape(-1)


def _peak_ratios(inputs, templates, input_H_template, skip) -> np.ndarray:
    """`descriptor_peak_ratio` of the estimates not in `skip` ((B,) bool: already failed), 1.0
    (flat) for the others, whose value does not matter."""
    out = np.ones(len(skip))
    keep = ~np.asarray(skip, bool)
    if keep.any():
        out[keep] = descriptor_peak_ratio(np.asarray(inputs)[keep], np.asarray(templates)[keep],
                                          np.asarray(input_H_template, np.float64)[keep])
    return out


def _build_hybrid(checkpoint_dir=None, levels: int = 3, lk_options=None, flag_divergence: bool = True,
                  **settings) -> Predictor:
    """Training-free: SIFT + RANSAC initial guess (the centred guess where SIFT fails), refined by
    pyramid LK on intensities; LK from the centred guess runs too, and per sample the refinement
    with the lower photometric residual wins (no ground truth involved). `lk_options`,
    `settings`: as in the ``lk`` method. `flag_divergence`: a refinement that `diverged` flags
    (with the residual and peak tests) is out of the choice; a sample fails when both are."""
    from deeplk.lk import LKOptions, align_images

    flag_divergence = check_bool("flag_divergence", flag_divergence)
    options = LKOptions.coerce(lk_options, **settings)

    def predict(inputs, templates):
        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        b = len(inputs)
        centred = centred_homography(inputs.shape[1:3], templates.shape[1:3])
        init = np.concatenate([baselines.sift_homographies(inputs, templates),
                               np.repeat(centred[None], b, axis=0)]).astype(np.float32)
        both_in = np.concatenate([inputs, inputs])
        both_t = np.concatenate([templates, templates])
        result = align_images(both_in, both_t, init_H=init, levels=levels, options=options)
        H = result.H.numpy()
        residual = photometric_residual(both_in, both_t, H)
        failed = result.failed.numpy()
        corners = _lk_corners(H, templates.shape)
        if flag_divergence:
            centred_residual = photometric_residual(inputs, templates, np.repeat(centred[None], b, axis=0))
            failed = failed | diverged(corners, inputs.shape[1:3], templates.shape[1:3], residual,
                                       np.concatenate([centred_residual] * 2))
            failed |= diverged(corners, inputs.shape[1:3], templates.shape[1:3],
                               peak_ratio=_peak_ratios(both_in, both_t, H, failed))
        residual[failed] = np.inf
        pick = np.where(residual[b:] < residual[:b], 1, 0)  # 0 = from SIFT, 1 = from centred
        idx = np.arange(b) + pick * b
        corners = corners[idx]
        lost = ~np.isfinite(residual[idx])
        corners[lost] = np.nan
        return corners, lost

    return predict


_REGISTRY: dict[str, MethodInfo] = {
    "identity": MethodInfo("identity", "centred guess: the template unwarped in the middle of the input", _per_pair("identity")),
    "sift": MethodInfo("sift", "SIFT + ratio test 0.75 + RANSAC 5 px (OpenCV)", _per_pair("sift")),
    "orb": MethodInfo("orb", "ORB + ratio test 0.8 + RANSAC 5 px (OpenCV)", _per_pair("orb")),
    "ecc": MethodInfo("ecc", "OpenCV findTransformECC, homography, 3-level pyramid, centred start", _per_pair("ecc")),
    "lk": MethodInfo("lk", "batched pyramid LK on grey intensities (translation stage, ESM coarse, IC finest), 3 levels, centred start", _build_lk, batched=True),
    "lk_mind": MethodInfo("lk_mind", "the lk method on the MIND self-similarity descriptor of both images (modality independent)", _build_lk_mind, batched=True),
    "hybrid": MethodInfo("hybrid", "SIFT+RANSAC or centred start, LK refinement, lower photometric residual wins", _build_hybrid, batched=True),
}


# Learned methods: the model family (a module ``deeplk.models.<family>``) of each. Every family
# module defines ``METHOD_DESCRIPTIONS[name]`` and ``build_method(name, checkpoint_dir=None,
# **options) -> Predictor`` and is imported on first use; checkpoints are read from
# ``<checkpoint_dir>/<name>/``.
FAMILIES: dict[str, str] = {
    "dhn": "regression",
    "mhn": "regression",
    "hnet_sup": "homography_net",
    "hnet_unsup": "homography_net",
    "clkn": "clkn",
    "dlkfm": "dlkfm",
}


def _family_module(name: str) -> str:
    return f"deeplk.models.{FAMILIES[name]}"


def _module_exists(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _initial_guess(name: str, checkpoint_dir) -> Predictor:
    """The method `name` as another method's initial guess (DLKFM's ``init="mhn"``, ``"lk_mind"``)."""
    try:
        return get_method(name, checkpoint_dir=checkpoint_dir)
    except (ValueError, FileNotFoundError, ImportError) as e:
        from deeplk.paths import resolve

        raise RuntimeError(
            f"the initial guess needs the `{name}` method (checkpoints under "
            f"{resolve(checkpoint_dir or 'checkpoints') / name}): {e}") from e


def _family_info(name: str) -> MethodInfo | None:
    """Import the family of a learned method and register the method; None if it does not exist."""
    import importlib

    module = _family_module(name)
    if not _module_exists(module):
        return None
    family = importlib.import_module(module)

    def build(checkpoint_dir=None, **options) -> Predictor:
        init = options.get("init")
        if init is None and hasattr(family, "default_init"):  # the start the model was trained for
            init = options["init"] = family.default_init(checkpoint_dir)
        if options.get("init_predictor") is None and init is not None:
            names = list(init) if isinstance(init, (list, tuple)) else [init]
            if name in names:
                raise ValueError(f"method {name!r} cannot start from itself (init={init!r})")
            predictors = [None if n in ("centred", "sift") else _initial_guess(n, checkpoint_dir)
                          for n in names]
            if isinstance(init, (list, tuple)):
                options["init"], options["init_predictor"] = list(names), predictors
            elif predictors[0] is not None:
                options["init_predictor"] = predictors[0]
        return family.build_method(name, checkpoint_dir=checkpoint_dir, **options)

    description = getattr(family, "METHOD_DESCRIPTIONS", {}).get(name, name)
    info = MethodInfo(name, description, build, batched=True)
    _REGISTRY[name] = info
    return info


def _info(name: str) -> MethodInfo | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in FAMILIES:
        return _family_info(name)
    return None


def register(info: MethodInfo) -> None:
    """Add a method (later modules register the LK and learned methods)."""
    if info.name not in METHOD_NAMES:
        raise ValueError(f"unknown method name {info.name!r}; the project's names are {METHOD_NAMES}")
    _REGISTRY[info.name] = info


def available_methods() -> list[str]:
    return [n for n in METHOD_NAMES if n in _REGISTRY or (n in FAMILIES and _module_exists(_family_module(n)))]


def get_method(name: str, checkpoint_dir=None, **options) -> Predictor:
    """Build the predictor of method `name` (see the module docstring)."""
    info = _info(name)
    if info is None:
        if name in METHOD_NAMES:
            raise ValueError(f"method {name!r} is not implemented yet; available: {available_methods()}")
        raise ValueError(f"unknown method {name!r}; available: {available_methods()}")
    return info.build(checkpoint_dir=checkpoint_dir, **options)


def evaluate_methods(
    inputs: np.ndarray,
    templates: np.ndarray,
    true_corners: np.ndarray,
    methods: list[str],
    checkpoint_dir=None,
    batch_size: int = 64,
    progress: bool = True,
    method_options: dict[str, dict] | None = None,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run `methods` on the samples; return (summaries for summary.json, per-sample PE by method).

    `method_options` maps a method name to the options of `get_method` for it, e.g.
    ``{"dlkfm": {"init": "lk_mind"}}``.

    ``ms_per_pair`` is the method's wall time over all samples divided by their number, data
    loading excluded; batched (TensorFlow) methods get untimed warm-up calls first (one per batch
    shape: full batches and the remainder) so that graph tracing and XLA compilation are not
    counted.
    """
    if len(methods) == 0:
        raise ValueError("`methods` is empty: name at least one of " + ", ".join(available_methods()))
    if len(inputs) == 0:
        raise ValueError("no samples to evaluate")
    method_options = dict(method_options or {})
    unknown = sorted(set(method_options) - set(methods))
    if unknown:
        raise ValueError(f"`method_options` names {unknown}, which are not among `methods` {list(methods)}")
    summaries, errors = {}, {}
    for name in methods:
        predict = get_method(name, checkpoint_dir=checkpoint_dir, **method_options.get(name, {}))
        corners, failed, seconds = evaluate.run_predictor(
            predict, inputs, templates, batch_size, warm_up=_info(name).batched, progress=progress, desc=name)
        errors[name] = evaluate.corner_errors(corners, true_corners, failed)
        summaries[name] = evaluate.summarise(errors[name], seconds=seconds)
    return summaries, errors
