"""`align_images`: classical coarse-to-fine Lucas-Kanade on image intensities (the ``lk``
method): the preprocessing of `deeplk.lk.preprocess` (on the host for eager calls) followed by
the pyramid solver of `deeplk.lk.solver`."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from deeplk._checks import check_positive_int
from deeplk.geometry import centred_homography
from deeplk.lk.options import LKOptions
from deeplk.lk.preprocess import _features, _host_images, _host_pyramid
from deeplk.lk.solver import LKResult, _check_H, _check_pair, _config, _run

__all__ = ["align_images", "align_defaults"]

#: Defaults of `align_images` (coarsest, intermediate, finest level): with ESM at the coarse
#: levels the finest level starts within a pixel, 2 updates reach ~0.01 px.
_ALIGN_ITERATIONS = (15, 5, 2)
_ALIGN_TOLERANCES = (0.1, 0.05, 0.01)


def align_defaults(levels: int) -> dict:
    """Defaults of `align_images` for `levels` levels (the `LKOptions.resolve` keywords): caps
    15 at the coarsest level, 5 at the others, 2 at the finest; tolerances 0.1 / 0.05 / 0.01
    pixels of the level; ESM updates at every level but the finest (inverse compositional
    there); 5 translation-only iterations first."""

    def per_level(values):
        return values[:1] + values[1:2] * (levels - 2) + (values[2:] if levels > 1 else ())

    return dict(max_iterations=per_level(_ALIGN_ITERATIONS), tolerance=per_level(_ALIGN_TOLERANCES),
                algorithm=("esm",) * (levels - 1) + ("inverse_compositional",),
                coarse_motions=(("translation", 5),))


def align_images(
    inputs,
    templates,
    init_H=None,
    levels: int = 3,
    options: Union[None, LKOptions, Mapping] = None,
    *,
    grayscale: bool = True,
    blur_sigma: Union[float, Sequence[float]] = 1.0,
    preprocess_on_host: Optional[bool] = None,
    return_history: bool = False,
    jit_compile: bool = True,
    **settings,
) -> LKResult:
    """Classical coarse-to-fine LK on image intensities (the ``lk`` method of the evaluation).

    Grey conversion, the 2x2 average pyramid and the blur run on the host (NumPy / OpenCV) for
    eager calls, else inside the compiled program with the LK iterations (same values up to
    float rounding; see `preprocess_on_host`). Defaults (chosen on MSCOCO-protocol pairs,
    ``bench/lk_vs_ecc.py``; `align_defaults`): a translation stage at the coarsest level, ESM
    updates at every level but the finest (wide basin), inverse-compositional updates at the
    finest (cheap, the estimate is already within a pixel), iteration caps (15, 5, 2) for 3
    levels and tolerances 0.1 / 0.05 / 0.01 pixels of the level.

    Args:
        inputs: ``(B, Hi, Wi, C)`` input images in [0, 1] (e.g. 192 x 192 RGB), static size.
        templates: ``(B, h, w, C)`` templates (e.g. 128 x 128), static size, same C.
        init_H: ``(B, 3, 3)`` initial ``input_H_template``; ``None`` = the centred placement
            (`deeplk.geometry.centred_homography`, corners (32, 32) ... (159, 159) for 128 in
            192).
        levels: pyramid levels (2x2 average pooling).
        options: the solver settings (`LKOptions` or a dict of its fields) as in
            `pyramid_lucas_kanade`; the fields left at ``None`` take the defaults above.
        grayscale: convert RGB to luma first (else align all channels jointly: any number of
            channels, e.g. descriptor images).
        blur_sigma: Gaussian blur (normalised convolution, pixels of the level) of both
            pyramids. A number blurs every level except the finest (wider basin at the coarse
            levels; blurring the finest level would bias the result by ~0.1 px because the
            template's border is blurred differently from the input); or one value per level,
            coarsest first; 0 disables.
        preprocess_on_host: where the grey pyramids are built. ``None`` (default): on the host
            when called eagerly with float32/float64 images whose result has one channel (grey
            conversion, or one-channel images), otherwise in the compiled program; ``True``
            requires the host (ValueError if not possible); ``False``: always in the program.
        return_history, jit_compile: as in `pyramid_lucas_kanade`.
        **settings: `LKOptions` fields replacing those of `options` (``max_iterations=...``).

    Returns:
        `LKResult` at full resolution.

    Raises:
        ValueError: bad shapes or settings, images too small for `levels`. TypeError: a setting
            that is not an `LKOptions` field.
    """
    options = LKOptions.coerce(options, **settings)
    levels = check_positive_int("levels", levels)
    host = None
    if preprocess_on_host is not False and tf.executing_eagerly():
        host = _host_pair(inputs, templates, init_H, levels, grayscale)
    if preprocess_on_host and host is None:
        raise ValueError(
            "`preprocess_on_host=True` needs an eager call with float32/float64 images of one "
            "channel (or RGB with grayscale=True), the same dtype and batch size, large enough "
            f"for {levels} levels"
        )
    if host is None:
        inputs = _features("inputs", inputs)
        templates = _features("templates", templates)
    else:
        inputs, templates = host
    for name, x in (("inputs", inputs), ("templates", templates)):
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError(f"`{name}` must have a static height and width, got "
                             f"{tuple(x.shape)}")
        if min(x.shape[1], x.shape[2]) // 2 ** (levels - 1) < 2:
            raise ValueError(f"`{name}` of shape {tuple(x.shape)} is too small for {levels} "
                             f"levels")
    if init_H is None:
        batch = inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]
        init_H = centred_homography(tuple(inputs.shape[1:3]), tuple(templates.shape[1:3]),
                                    batch, inputs.dtype)
    H0 = _check_H(init_H, inputs.dtype)
    if host is None:
        inputs, templates = _check_pair(inputs, templates, H0)
    sigmas = _blur_sigmas(blur_sigma, levels)
    per_level = options.resolve(levels, **align_defaults(levels))
    if host is not None:
        config = _config(options, per_level, return_history)
        return _run(_host_pyramid(inputs, levels, grayscale, sigmas),
                    _host_pyramid(templates, levels, grayscale, sigmas), H0, per_level.tolerance,
                    options.damping, config, jit_compile)
    config = _config(options, per_level, return_history,
                     preprocess=(levels, bool(grayscale), sigmas))
    return _run([inputs], [templates], H0, per_level.tolerance, options.damping, config,
                jit_compile)


def _blur_sigmas(blur_sigma, levels: int) -> tuple:
    """One blur per level (coarsest first) from a number (every level but the finest) or a
    sequence."""
    if np.ndim(blur_sigma) == 0:
        sigmas = (float(blur_sigma),) * (levels - 1) + (0.0,)
    else:
        sigmas = tuple(float(v) for v in np.asarray(blur_sigma, dtype=np.float64).reshape(-1))
        if len(sigmas) != levels:
            raise ValueError(f"`blur_sigma` must be a number or one value per level ({levels}), "
                             f"got {blur_sigma!r}")
    if not all(np.isfinite(v) for v in sigmas):
        raise ValueError(f"`blur_sigma` must be finite, got {blur_sigma!r}")
    return sigmas


def _host_pair(inputs, templates, init_H, levels: int, grayscale: bool):
    """``(inputs, templates)`` as NumPy arrays if `align_images` can build the pyramids on the
    host (see its `preprocess_on_host`), else None."""
    a, t = _host_images(inputs), _host_images(templates)
    if a is None or t is None or a.dtype != t.dtype:
        return None
    c = a.shape[-1]
    if c != t.shape[-1] or not (c == 1 or (c == 3 and grayscale)):
        return None
    batch = a.shape[0]
    if t.shape[0] != batch or (init_H is not None and np.shape(init_H)[:1] != (batch,)):
        return None
    if min(a.shape[1:3] + t.shape[1:3]) // 2 ** (levels - 1) < 2:
        return None
    return a, t
