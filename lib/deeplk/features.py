"""Feature-map operators of DLKFM: the single-channel "special" feature map.

DLKFM (Zhao, Huang & Zhang, CVPR 2021) feeds Lucas-Kanade either with the 64-channel "regular"
feature maps of its extractor or with a single-channel "special" map computed from them: for
every pixel, the ``3 x 3 x C`` neighbourhood is seen as a ``C x 9`` matrix ``M`` (one column per
neighbour), each column is centred by removing its mean over the ``C`` channels, and with the
``9 x 9`` Gram matrix ``G = M^T M``

    special = (max_i sum_j G_ij + min_i sum_j G_ij) / 2 / (trace(G) + epsilon).

Neighbours outside the image are zero (``'SAME'`` zero padding; a zero column stays zero after
centring). The Gram matrix is never formed: with the centred columns ``d_j`` and ``s = sum_j d_j``,
the row sums are ``d_i . s`` and the trace is ``sum_j |d_j|^2``, so the operator costs a few
passes over nine shifted copies of the centred map.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_shape

__all__ = ["special_feature_map", "SpecialFeatureMap"]


def special_feature_map(features, epsilon: float = 1e-6) -> tf.Tensor:
    """DLKFM's single-channel "special" feature map (see the module docstring).

    Args:
        features: ``(B, H, W, C)`` floating feature maps (float32 or float64), ``C >= 1``.
        epsilon: added to ``trace(G)`` so that a neighbourhood that is constant across channels
            (``trace(G) == 0``, all row sums 0) gives 0 instead of 0/0. It is absolute: with
            features of order 1 and ``C = 64`` the trace is of order 10^2, so the default
            ``1e-6`` only matters for (nearly) flat neighbourhoods.

    Returns:
        ``(B, H, W, 1)`` map in the dtype of `features`. Differentiable (almost everywhere: the
        max / min pick one row).

    Raises:
        ValueError: bad rank, empty or non-floating features, negative `epsilon`.
    """
    x = tf.convert_to_tensor(features)
    if not x.dtype.is_floating:
        raise ValueError(f"`features` must be a floating tensor, got dtype {x.dtype.name}")
    check_shape("features", x, (None, None, None, None), "B x H x W x C feature maps")
    for axis, what in ((1, "height"), (2, "width"), (3, "channel count")):
        if x.shape[axis] is not None and x.shape[axis] < 1:
            raise ValueError(f"`features` must have a {what} of at least 1, got shape "
                             f"{tuple(x.shape)}")
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"`epsilon` must be a finite number >= 0, got {epsilon!r}")
    shape = tf.shape(x)
    height, width = shape[1], shape[2]
    centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    padded = tf.pad(centred, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shifted = [padded[:, dy:dy + height, dx:dx + width, :] for dy in range(3) for dx in range(3)]
    total = tf.add_n(shifted)  # s = sum_j d_j, (B, H, W, C)
    row_sums = tf.stack([tf.reduce_sum(d * total, axis=-1) for d in shifted], axis=-1)
    sq = tf.reduce_sum(tf.square(padded), axis=-1)  # |d|^2 per padded pixel
    trace = tf.add_n([sq[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)])
    out = (tf.reduce_max(row_sums, axis=-1) + tf.reduce_min(row_sums, axis=-1)) / 2.0
    return (out / (trace + tf.cast(epsilon, x.dtype)))[..., None]


@keras.saving.register_keras_serializable(package="deeplk")
class SpecialFeatureMap(keras.layers.Layer):
    """Keras layer wrapping `special_feature_map`: ``(B, H, W, C) -> (B, H, W, 1)``.

    Args:
        epsilon: see `special_feature_map`.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not (np.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"`epsilon` must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)

    def call(self, inputs):
        return special_feature_map(inputs, self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
