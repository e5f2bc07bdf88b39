"""On-the-fly training pairs with the HomographyNet protocol (corner offsets uniform in [-rho, rho]).

HomographyNet (DeTone 2016; Nguyen 2018) trains on pairs whose template corners are the
unperturbed corners moved by offsets drawn uniformly in ``[-rho, rho]``, with a curriculum
``rho = 16`` then ``32``. Our data are DLK-format batches ``(input (B, 192, 192, 3), template
(B, 128, 128, 3), corners (B, 4, 2))`` whose corners lie in a +-32 box; `synthesize_pairs` makes
a new pair from each *input* image in the DLK geometry:

- the unperturbed template sits at ``[32:160, 32:160]`` of the input, i.e. its corners land on
  ``(32, 32), (159, 32), (159, 159), (32, 159)`` (`deeplk.geometry_np.centred_corners`);
- ``corners = centred + offsets``, offsets i.i.d. uniform in ``[-rho, rho]`` (real-valued);
- ``input_H_template`` is the homography from the template corners ``(0, 0), (127, 0),
  (127, 127), (0, 127)`` to ``corners`` (`deeplk.geometry.corners_to_homography`), and the
  template is the input warped into the template frame by it (`deeplk.warp.warp_image`: the
  bilinear, pixel-centres-at-integers convention of ``cv2.warpPerspective(..., WARP_INVERSE_MAP)``
  that the DLK protocol uses to cut templates).

For ``rho <= 32`` every corner stays inside the 192 input, so the template is entirely valid.
Offsets up to 16 always give a convex quadrilateral; beyond that a draw can (very rarely) fold the
quadrilateral, and such a sample's offsets are halved (which makes it convex) instead of being
redrawn, so the map stays a pure function of (seed, batch index).

The template is cut from the input itself: the synthetic pairs are mono-modal even when the DLK
templates come from another modality (use the DLK pairs for multimodal data).

Randomness is stateless (``tf.random.stateless_uniform`` seeded by ``(seed, batch index)``), so
`with_synthetic_pairs` yields the same batches every time it is iterated and its iterator can be
checkpointed (``deeplk.train`` resumes it exactly with ``data_resume="state"``).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_shape
from ..geometry_np import centred_corners
from .protocol import INPUT_SIZE, MIN_CROSS, PATCH_OFFSET, TEMPLATE_SIZE

__all__ = ["MAX_RHO", "random_corner_offsets", "synthesize_pairs", "with_synthetic_pairs"]

#: Largest offset for which the template stays inside the 192 input (corner 32 - 32 = 0).
MAX_RHO = float(PATCH_OFFSET)


def _check_rho(rho, template_size: int, input_size: int) -> float:
    limit = (input_size - template_size) / 2
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.integer, np.floating)) or not 0 < rho <= limit:
        raise ValueError(f"`rho` must be a number in (0, {limit:g}] (corners stay inside the input), got {rho!r}")
    return float(rho)


def random_corner_offsets(batch, rho: float, seed, template_size: int = TEMPLATE_SIZE, input_size: int = INPUT_SIZE):
    """``(batch, 4, 2)`` float32 corner offsets, uniform in ``[-rho, rho]``, convex after adding them
    to `deeplk.geometry_np.centred_corners` (a folded draw has its offsets halved).

    Args:
        batch: batch size (int or scalar int tensor).
        rho: largest offset in pixels, in (0, 32] for the DLK sizes.
        seed: shape ``(2,)`` integer seed of ``tf.random.stateless_uniform``.
    """
    import tensorflow as tf

    from deeplk.geometry import is_convex_quad

    if tf.is_tensor(rho):  # a ramp (`with_synthetic_pairs`): checked there
        rho = tf.cast(rho, tf.float32)
    else:
        rho = _check_rho(rho, template_size, input_size)
    base = tf.constant(centred_corners(input_size, template_size), tf.float32)
    offsets = rho * tf.random.stateless_uniform(
        tf.stack([batch, 4, 2]), seed=seed, minval=-1.0, maxval=1.0, dtype=tf.float32
    )
    ok = is_convex_quad(base + offsets, MIN_CROSS)
    return tf.where(ok[:, None, None], offsets, 0.5 * offsets)


def synthesize_pairs(inputs, rho: float, seed, template_size: int = TEMPLATE_SIZE):
    """New training pairs from input images: ``(inputs, templates, corners)``.

    Args:
        inputs: ``(B, S, S, C)`` float images (S = 192 for DLK data).
        rho: largest corner offset in pixels (``0 < rho <= (S - template_size) / 2``).
        seed: shape ``(2,)`` integer seed (stateless random ops).
        template_size: side of the templates to cut (128).

    Returns:
        ``inputs`` unchanged, ``templates (B, t, t, C)`` (the inputs warped into the template
        frame by ``input_H_template``) and ``corners (B, 4, 2)`` float32, where the template's
        corners land in the input (the label, as in a DLK batch).
    """
    import tensorflow as tf

    from deeplk.geometry import corners_to_homography
    from deeplk.warp import warp_image

    inputs = tf.convert_to_tensor(inputs)
    check_shape("inputs", inputs, (None, None, None, None), "B x S x S x C images")
    size = inputs.shape[1]
    if size is None or inputs.shape[2] != size:
        raise ValueError(f"`inputs` must be square with a static size, got shape {tuple(inputs.shape)}")
    offsets = random_corner_offsets(tf.shape(inputs)[0], rho, seed, template_size, size)
    corners = tf.constant(centred_corners(size, template_size), tf.float32) + offsets
    H = corners_to_homography(corners, template_size)
    templates = warp_image(inputs, H, template_size, return_mask=False)
    return inputs, tf.cast(templates, inputs.dtype), corners


def with_synthetic_pairs(dataset, rho: float, seed: int = 0, template_size: int = TEMPLATE_SIZE, rho_start: float | None = None,
                         ramp_batches: int = 0):
    """Map a dataset of DLK batches ``(input, template, corners)`` to synthetic rho pairs.

    Each batch's templates and corners are replaced by `synthesize_pairs` of its inputs, seeded by
    ``(seed, index of the batch)``: deterministic, checkpointable, new offsets for every batch
    (and every epoch, as long as the dataset is repeated *before* this map or the loop counts on).

    Args:
        dataset: ``tf.data.Dataset`` of ``(input (B, S, S, C), template, corners)`` batches, e.g.
            `deeplk.data.load_dataset`.
        rho: largest corner offset (pixels).
        seed: non-negative integer.
        rho_start, ramp_batches: optional ramp: batch ``i`` draws its offsets in
            ``[-r_i, r_i]`` with ``r_i = rho_start + (rho - rho_start) * min(1, i / ramp_batches)``
            (small motions first: a regression net leaves the centred-guess plateau sooner);
            ``rho_start=None`` or ``ramp_batches=0``: ``rho`` from the start.

    Returns:
        A ``tf.data.Dataset`` of ``(input, template (B, t, t, C), corners (B, 4, 2))`` batches.
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`dataset` must be a tf.data.Dataset, got {type(dataset).__name__}")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 1 or spec[0].shape.rank != 4:
        raise ValueError(f"`dataset` must yield (input (B, S, S, C), ...) batches, got element_spec {spec}")
    size = spec[0].shape[1]
    if size is None:
        raise ValueError("`dataset` inputs need a static image size")
    _check_rho(rho, template_size, size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}")

    ramp = rho_start is not None and ramp_batches != 0
    if ramp:
        _check_rho(rho_start, template_size, size)
        if isinstance(ramp_batches, bool) or not isinstance(ramp_batches, (int, np.integer)) or ramp_batches < 0:
            raise ValueError(f"`ramp_batches` must be an integer >= 0, got {ramp_batches!r}")

    def make(index, batch):
        pair_seed = tf.stack([tf.constant(int(seed), tf.int64), index])
        if not ramp:
            return synthesize_pairs(batch[0], rho, pair_seed, template_size)
        fraction = tf.minimum(1.0, tf.cast(index, tf.float32) / float(ramp_batches))
        rho_i = float(rho_start) + (float(rho) - float(rho_start)) * fraction
        return synthesize_pairs(batch[0], rho_i, pair_seed, template_size)

    # Prefetch: the next batches' pairs are drawn while the model trains on this one.
    ds = dataset.enumerate().map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
