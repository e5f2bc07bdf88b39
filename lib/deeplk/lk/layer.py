"""`LucasKanadeLayer`: the solver of `deeplk.lk.solver` as a Keras layer."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Union

import keras

from deeplk.lk.options import LKOptions
from deeplk.lk.solver import _SINGLE_DEFAULTS, LKResult, lucas_kanade

__all__ = ["LucasKanadeLayer"]

_FIELDS = frozenset(f.name for f in dataclasses.fields(LKOptions))


@keras.saving.register_keras_serializable(package="deeplk")
class LucasKanadeLayer(keras.layers.Layer):
    """Inverse-compositional LK as a Keras layer (one level; use one per pyramid level).

    ``call([input_features, template_features, init_H])`` returns the refined ``(B, 3, 3)``
    ``input_H_template``; `solve` returns the full `LKResult`. No weights; gradients flow to both
    feature maps and to ``init_H`` through every iteration.

    Args:
        options: the solver settings (`LKOptions` or a dict of its fields), one level: as in
            `deeplk.lk.lucas_kanade` (50 iterations, tolerance 0.01 px unless set).
        **kwargs: `LKOptions` fields (replacing those of `options`, e.g. ``max_iterations=10``)
            and `keras.layers.Layer` arguments (``name``, ``dtype``, ...). ``dtype`` defaults to
            ``"float32"`` whatever the global Keras policy: under ``mixed_float16`` the layer
            casts its inputs to float32 and returns a float32 H (the solve never runs in half
            precision).

    ``get_config()["options"]`` holds the options as a dict (`LKOptions.to_dict`).
    """

    def __init__(self, options: Union[None, LKOptions, Mapping] = None, **kwargs):
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _FIELDS}
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.options = LKOptions.coerce(options, **settings)
        self.options.resolve(1, **_SINGLE_DEFAULTS)  # one level: per-level values must be single

    def solve(self, inputs, return_history: bool = False) -> LKResult:
        """The full `LKResult` for ``inputs = [input_features, template_features, init_H]``."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError(
                "`inputs` must be a list [input_features, template_features, init_H], got "
                f"{type(inputs).__name__}"
                + (f" of length {len(inputs)}" if isinstance(inputs, (list, tuple)) else "")
            )
        input_features, template_features, init_H = inputs
        # Eager calls are typically differentiated (custom loops, tests): no XLA there; inside
        # a model the loop is inlined and Keras' own `jit_compile` applies.
        return lucas_kanade(input_features, template_features, init_H, self.options,
                            return_history=return_history, jit_compile=False)

    def call(self, inputs):
        return self.solve(inputs).H

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 3, 3)

    def get_config(self):
        config = super().get_config()
        config.update(options=self.options.to_dict())
        return config
