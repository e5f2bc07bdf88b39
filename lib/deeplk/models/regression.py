"""Regression baselines: DHN (one network) and the 3-stage MHN, their training task and methods.

**Input.** A pair becomes one ``(B, 192, 192, 2)`` image (`pack_pair`): channel 0 is the grey
input, channel 1 the grey 128 template zero-padded at offset 32, i.e. where an unperturbed
template sits in the input (``input[32:160, 32:160]``).

**Output.** 8 numbers per pair: the *corner offsets* in pixels of the 192 input frame, relative
to the unperturbed corners `BASE_CORNERS` = (32, 32), (159, 32), (159, 159), (32, 159), laid out
``(dx_TL, dy_TL, dx_TR, dy_TR, dx_BR, dy_BR, dx_BL, dy_BL)`` (`offsets_to_corners`,
`corners_to_offsets`). The network's last dense layer predicts ``offsets / offset_scale`` (32 by
default, so targets are about in [-1, 1]) and `RegressionNet` multiplies back, so its output is
in pixels; the loss (`regression_loss`) is the MSE of the scaled offsets.

**Architecture** (`RegressionNet`, DESIGN.md): conv pairs (3x3 conv + batch norm + ReLU, twice)
of 32, 64, 64, 128, 128 channels, each followed by 2x2 max-pooling, then one 3x3 conv of 256
channels; flatten, dense 1024 + ReLU, dropout 0.2, dense 8 (initialised to zero, so an untrained
net predicts the centred guess). ``input_scale < 1`` resizes the packed pair (area averaging)
before the convolutions, for CPU budgets; the predictions stay in 192-frame pixels.

**MHN** (`cascade_corners`): three `RegressionNet` stages with their own weights. Stage 1 sees
the pair as above. Stage ``k > 1`` sees the input *resampled so that the composed estimate so far
puts the template back at offset 32*: with ``input_H_template`` the estimate and
``C = [[1, 0, 32], [0, 1, 32], [0, 0, 1]]`` (the centred placement), the stage's input image is
``I'(q) = I(input_H_centred @ q)`` with ``input_H_centred = input_H_template @ C^-1``
(`deeplk.warp.warp_image`). If the estimate were exact, the template would sit in ``I'`` exactly
at offset 32, so the stage sees the same kind of pair as stage 1 with a smaller misalignment and
regresses the residual offsets in the ``I'`` frame; the corners in the input frame are then
``input_H_centred @ (BASE_CORNERS + residual)`` (`compose_residual`), which is the composition
``input_H_template @ C^-1 @ centred_H_template`` of homographies. (Warping the input rather than
the template keeps the template channel identical for every stage; it is the same relative
alignment.) The stages are trained one after another, each starting from the previous stage's
weights with the earlier stages frozen, so no gradient has to flow through the warp: the task
stops it there (`RegressionTask`), which saves the backward pass through the earlier stages.

**Checkpoints.** ``<checkpoint_dir>/dhn/`` and ``<checkpoint_dir>/mhn/stage1|stage2|stage3/``,
each the ``checkpoint_dir`` of one `deeplk.train.train` call (``final.weights.h5``,
``ckpt-*``, ``train_meta.json``, and ``model_config.json`` written by the loop from
`RegressionTask.run_config`: the `RegressionNet` configuration), so the methods ``dhn`` and ``mhn``
(`build_dhn_method`, `build_mhn_method`) rebuild the networks without being told the options.
`train_stage` trains one of them; `make_train_dataset` reads a DLK folder for it, optionally
drawing fresh perturbations on the fly (`resample_perturbations`, mono-modal data only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_shape
from deeplk.data.protocol import CENTRED_CORNERS as BASE_CORNERS
from deeplk.data.protocol import INPUT_SIZE, PATCH_OFFSET, TEMPLATE_SIZE
from deeplk.geometry import corner_error, corners_to_homography, invert_homography, transform_points
from deeplk.lk import to_greyscale
from deeplk.warp import warp_image

__all__ = [
    "INPUT_SIZE",
    "TEMPLATE_SIZE",
    "PATCH_OFFSET",
    "OFFSET_SCALE",
    "BASE_CORNERS",
    "MHN_STAGES",
    "FAMILY",
    "METHOD_DESCRIPTIONS",
    "AUGMENTATIONS",
    "pack_pair",
    "offsets_to_corners",
    "corners_to_offsets",
    "residual_offsets",
    "compose_residual",
    "regression_loss",
    "RegressionNet",
    "RegressionConfig",
    "cascade_corners",
    "RegressionTask",
    "resample_perturbations",
    "curriculum_offset",
    "make_train_dataset",
    "STAGE_NAMES",
    "stage_dir",
    "load_stage",
    "train_stage",
    "build_dhn_method",
    "build_mhn_method",
    "build_method",
    "evaluate_stage",
]

#: Default scale of the regression targets: the net's last layer predicts offsets / 32.
OFFSET_SCALE = 32.0
MHN_STAGES = 3
#: The family name in ``model_config.json`` (`deeplk.train.read_run_config`).
FAMILY = "regression"
MODELS = ("dhn", "mhn")
#: The stages `train_stage` trains, named by their run folder under the checkpoint folder.
STAGE_NAMES = ("dhn",) + tuple(f"mhn/stage{k}" for k in range(1, MHN_STAGES + 1))
#: ``"none"``: the dataset as stored; ``"resample"``: fresh corners and templates cut from the
#: input on the fly (`resample_perturbations`; mono-modal datasets only).
AUGMENTATIONS = ("none", "resample")

METHOD_DESCRIPTIONS = {
    "dhn": "DHN: one regression CNN on the 2-channel grey pair -> 8 corner offsets",
    "mhn": "MHN: 3 regression CNNs, stages 2-3 see the input warped by the estimate so far",
}


# ------------------------------------------------------------------------------------------
# Packing and corner parametrisation


def _images(name: str, x, size: int) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"`{name}` must be float images in [0, 1], got dtype {x.dtype.name}")
    check_shape(name, x, (None, size, size, None), f"B x {size} x {size} x 1 or 3")
    if x.shape[-1] not in (1, 3, None):
        raise ValueError(f"`{name}` must have 1 or 3 channels, got shape {tuple(x.shape)}")
    return tf.cast(x, tf.float32)


def _pack_grey(grey_inputs: tf.Tensor, grey_templates: tf.Tensor) -> tf.Tensor:
    pad = PATCH_OFFSET
    lo, hi = pad, INPUT_SIZE - TEMPLATE_SIZE - pad
    padded = tf.pad(grey_templates, [[0, 0], [lo, hi], [lo, hi], [0, 0]])
    return tf.concat([grey_inputs, padded], axis=-1)


def _grey_pair(inputs, templates) -> tuple[tf.Tensor, tf.Tensor]:
    inputs = _images("inputs", inputs, INPUT_SIZE)
    templates = _images("templates", templates, TEMPLATE_SIZE)
    b_in, b_t = inputs.shape[0], templates.shape[0]
    if b_in is not None and b_t is not None and b_in != b_t:
        raise ValueError(f"`inputs` and `templates` must have the same batch size, got {b_in} and {b_t}")
    return to_greyscale(inputs), to_greyscale(templates)


def pack_pair(inputs, templates) -> tf.Tensor:
    """The 2-channel network input of a pair.

    Args:
        inputs: ``(B, 192, 192, 3)`` (or 1-channel grey) float images in [0, 1].
        templates: ``(B, 128, 128, 3)`` (or 1-channel) float images in [0, 1].

    Returns:
        ``(B, 192, 192, 2)`` float32: channel 0 the grey input (ITU-R 601 luma), channel 1 the
        grey template at ``[32:160, 32:160]`` and 0 elsewhere.
    """
    return _pack_grey(*_grey_pair(inputs, templates))


def _base(dtype) -> tf.Tensor:
    return tf.constant(BASE_CORNERS, dtype=dtype)


def offsets_to_corners(offsets) -> tf.Tensor:
    """Corner offsets ``(B, 8)`` (pixels, ``dx_TL, dy_TL, ..., dx_BL, dy_BL``) -> corners
    ``(B, 4, 2)`` in the 192 input frame: ``BASE_CORNERS + offsets``. Keeps float64."""
    offsets = tf.convert_to_tensor(offsets)
    if not offsets.dtype.is_floating:
        offsets = tf.cast(offsets, tf.float32)
    check_shape("offsets", offsets, (None, 8), "B x 8 corner offsets (dx, dy) TL, TR, BR, BL")
    return tf.reshape(offsets, [-1, 4, 2]) + _base(offsets.dtype)


def corners_to_offsets(corners) -> tf.Tensor:
    """Corners ``(B, 4, 2)`` in the 192 input frame -> offsets ``(B, 8)`` from `BASE_CORNERS`
    (inverse of `offsets_to_corners`)."""
    corners = tf.convert_to_tensor(corners)
    if not corners.dtype.is_floating:
        corners = tf.cast(corners, tf.float32)
    check_shape("corners", corners, (None, 4, 2), "B x 4 corners x (x, y)")
    return tf.reshape(corners - _base(corners.dtype), [-1, 8])


def _input_H_centred(input_H_template: tf.Tensor) -> tf.Tensor:
    """``input_H_template @ C^-1``: maps the centred 192 frame of the next stage to the input."""
    dtype = input_H_template.dtype
    C_inv = tf.constant([[1, 0, -PATCH_OFFSET], [0, 1, -PATCH_OFFSET], [0, 0, 1]], dtype=dtype)
    return tf.matmul(input_H_template, tf.broadcast_to(C_inv, tf.shape(input_H_template)))


def _check_H(name: str, H) -> tf.Tensor:
    H = tf.convert_to_tensor(H)
    if not H.dtype.is_floating:
        H = tf.cast(H, tf.float32)
    check_shape(name, H, (None, 3, 3), "B x 3 x 3 homographies")
    return H


def residual_offsets(input_H_template, true_corners) -> tf.Tensor:
    """The offsets a later MHN stage must regress, given the estimate so far.

    Args:
        input_H_template: ``(B, 3, 3)`` the composed estimate of the earlier stages.
        true_corners: ``(B, 4, 2)`` where the template corners really are in the input.

    Returns:
        ``(B, 8)`` offsets from `BASE_CORNERS` of the true corners expressed in the stage's
        (warped, centred) frame: ``C @ input_H_template^-1 @ true_corners - BASE_CORNERS``. Zero
        when the estimate is exact.
    """
    H = _check_H("input_H_template", input_H_template)
    true_corners = tf.cast(tf.convert_to_tensor(true_corners), H.dtype)
    check_shape("true_corners", true_corners, (None, 4, 2), "B x 4 corners x (x, y)")
    centred_H_input = invert_homography(_input_H_centred(H))
    return corners_to_offsets(transform_points(centred_H_input, true_corners))


def compose_residual(input_H_template, offsets) -> tf.Tensor:
    """Corners in the input frame after a later stage predicted `offsets` in its centred frame.

    Args:
        input_H_template: ``(B, 3, 3)`` the estimate the stage started from (``None``: stage 1,
            the centred placement ``C``, so the result is ``BASE_CORNERS + offsets``).
        offsets: ``(B, 8)`` the stage's prediction (pixels, centred frame).

    Returns:
        ``(B, 4, 2)`` corners ``input_H_template @ C^-1 @ (BASE_CORNERS + offsets)``: the corners
        of the composed homography ``input_H_template @ C^-1 @ centred_H_template``.
    """
    corners = offsets_to_corners(offsets)
    if input_H_template is None:
        return corners
    H = _check_H("input_H_template", input_H_template)
    return transform_points(_input_H_centred(H), tf.cast(corners, H.dtype))


def regression_loss(pred_offsets, true_offsets, offset_scale: float = OFFSET_SCALE) -> tf.Tensor:
    """Mean squared error of the scaled offsets: ``mean(((pred - true) / offset_scale) ** 2)``
    over the batch and the 8 numbers. Both ``(B, 8)`` in pixels."""
    pred = tf.convert_to_tensor(pred_offsets)
    true = tf.cast(tf.convert_to_tensor(true_offsets), pred.dtype)
    check_shape("pred_offsets", pred, (None, 8), "B x 8 corner offsets")
    check_shape("true_offsets", true, (None, 8), "B x 8 corner offsets")
    return tf.reduce_mean(tf.square((pred - true) / tf.cast(offset_scale, pred.dtype)))


# ------------------------------------------------------------------------------------------
# The network


@keras.saving.register_keras_serializable(package="deeplk")
class RegressionNet(keras.Model):
    """The DHN / MHN-stage regression CNN: ``(B, 192, 192, 2)`` packed pair -> ``(B, 8)`` offsets.

    Args:
        filters: channels of the conv pairs; each pair is followed by 2x2 max-pooling.
        final_filters: channels of the last 3x3 conv (no pooling after it).
        dense_units: width of the hidden dense layer.
        dropout: dropout rate after the hidden dense layer.
        input_scale: in (0, 1]: resize the packed pair to ``round(192 * input_scale)`` (area
            averaging) before the convolutions. Predictions stay in 192-frame pixels.
        batch_norm: batch normalisation after every conv (then the convs have no bias).
        offset_scale: the last dense layer predicts ``offsets / offset_scale``.
        normalise: standardise each pair first: the input channel to zero mean and unit
            variance over the image, the template channel over the template area (it stays 0
            outside), so brightness and contrast differences between the two do not matter.
        bn_momentum: momentum of the batch-norm moving statistics used at inference. Keras'
            0.99 averages over ~100 steps and starts from mean 0 / variance 1, so after a short
            run (a few hundred steps, as on a CPU) the inference statistics still lag the
            training ones and the predictions degrade; 0.9 follows them within ~20 steps.

    Call: ``net(packed, training=None)`` with `packed` from `pack_pair`; returns ``(B, 8)``
    float32 corner offsets in pixels (see the module docstring for the layout).
    """

    def __init__(self, filters: Sequence[int] = (32, 64, 64, 128, 128), final_filters: int = 256,
                 dense_units: int = 1024, dropout: float = 0.2, input_scale: float = 1.0,
                 batch_norm: bool = True, offset_scale: float = OFFSET_SCALE, normalise: bool = False,
                 bn_momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.normalise = bool(normalise)
        self.bn_momentum = float(bn_momentum)
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"`bn_momentum` must be in [0, 1), got {bn_momentum!r}")
        self.filters = tuple(int(f) for f in filters)
        if not self.filters or any(f <= 0 for f in self.filters):
            raise ValueError(f"`filters` must be a non-empty list of positive ints, got {filters!r}")
        self.final_filters = int(final_filters)
        self.dense_units = int(dense_units)
        if self.final_filters <= 0 or self.dense_units <= 0:
            raise ValueError(
                f"`final_filters` and `dense_units` must be positive, got {final_filters!r}, {dense_units!r}"
            )
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.input_scale = float(input_scale)
        self.size = int(round(INPUT_SIZE * self.input_scale))
        if not 0.0 < self.input_scale <= 1.0 or self.size < 2 ** len(self.filters):
            raise ValueError(
                f"`input_scale` must be in (0, 1] and leave at least {2 ** len(self.filters)} px "
                f"for {len(self.filters)} poolings, got {input_scale!r} ({self.size} px)"
            )
        self.batch_norm = bool(batch_norm)
        self.offset_scale = float(offset_scale)
        if not self.offset_scale > 0:
            raise ValueError(f"`offset_scale` must be positive, got {offset_scale!r}")

    def _conv(self, name: str, channels: int) -> list:
        layers = [keras.layers.Conv2D(channels, 3, padding="same", use_bias=not self.batch_norm,
                                      name=f"{name}_conv")]
        if self.batch_norm:
            layers.append(keras.layers.BatchNormalization(momentum=self.bn_momentum, name=f"{name}_bn"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu"))
        return layers

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or tuple(shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 2):
            raise ValueError(f"`input_shape` must be (B, {INPUT_SIZE}, {INPUT_SIZE}, 2) (packed pairs), "
                             f"got {shape}")
        stack = []
        if self.size != INPUT_SIZE:
            stack.append(keras.layers.Resizing(self.size, self.size, interpolation="area", name="resize"))
        for i, f in enumerate(self.filters, start=1):
            stack += self._conv(f"block{i}a", f) + self._conv(f"block{i}b", f)
            stack.append(keras.layers.MaxPooling2D(2, name=f"block{i}_pool"))
        stack += self._conv("final", self.final_filters)
        stack += [
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(self.dense_units, activation="relu", name="dense"),
            keras.layers.Dropout(self.dropout, name="dropout"),
            keras.layers.Dense(8, kernel_initializer="zeros", bias_initializer="zeros", name="offsets"),
        ]
        shape = (None, INPUT_SIZE, INPUT_SIZE, 2)
        for layer in stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            # One attribute per layer: TensorFlow checkpoints (deeplk.train) do not see layers
            # kept only in a list attribute (Keras 3 TrackedList), so they would be lost.
            setattr(self, f"layer_{layer.name}", layer)
        self._layer_names = tuple(f"layer_{layer.name}" for layer in stack)
        self.built = True

    @property
    def stack(self) -> list:
        """The layers in call order."""
        return [getattr(self, name) for name in self._layer_names]

    def call(self, packed, training=None):
        x = _standardise(packed) if self.normalise else packed
        for layer in self.stack:
            x = layer(x, training=training) if isinstance(layer, (keras.layers.BatchNormalization,
                                                                   keras.layers.Dropout)) else layer(x)
        return x * self.offset_scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 8)

    def get_config(self):
        return {
            "name": self.name,
            "filters": list(self.filters),
            "final_filters": self.final_filters,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
            "input_scale": self.input_scale,
            "batch_norm": self.batch_norm,
            "offset_scale": self.offset_scale,
            "normalise": self.normalise,
            "bn_momentum": self.bn_momentum,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _standardise(packed: tf.Tensor, eps: float = 1e-4) -> tf.Tensor:
    """Per pair: channel 0 to zero mean / unit variance over the image, channel 1 over the
    template area ``[32:160, 32:160]`` (0 stays 0 outside)."""
    lo, hi = PATCH_OFFSET, PATCH_OFFSET + TEMPLATE_SIZE
    x0, x1 = packed[..., :1], packed[..., 1:]
    m0, v0 = tf.nn.moments(x0, axes=[1, 2, 3], keepdims=True)
    m1, v1 = tf.nn.moments(x1[:, lo:hi, lo:hi], axes=[1, 2, 3], keepdims=True)
    inside = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
    inside[:, lo:hi, lo:hi] = 1.0
    x0 = (x0 - m0) * tf.math.rsqrt(v0 + eps)
    x1 = (x1 - m1) * tf.math.rsqrt(v1 + eps) * inside
    return tf.concat([x0, x1], axis=-1)


@dataclass
class RegressionConfig:
    """The architecture of a DHN / MHN-stage network: the `RegressionNet` arguments, validated on
    construction (invalid values raise ``ValueError`` naming the field)."""

    filters: Sequence[int] = (32, 64, 64, 128, 128)
    final_filters: int = 256
    dense_units: int = 1024
    dropout: float = 0.2
    input_scale: float = 1.0
    batch_norm: bool = True
    offset_scale: float = OFFSET_SCALE
    normalise: bool = False
    bn_momentum: float = 0.99

    def __post_init__(self):
        config = RegressionNet(**asdict(self)).get_config()
        for key in asdict(self):
            setattr(self, key, config[key])

    def to_dict(self) -> dict:
        return asdict(self)


def _config(value) -> RegressionConfig:
    """A `RegressionConfig` from one, a dict (a Keras ``get_config`` of `RegressionNet` too: its
    ``name`` is dropped) or ``None``."""
    from deeplk.train import as_config

    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "name"}
    return as_config(RegressionConfig, value, "model_config")


def _net(config: dict | None) -> RegressionNet:
    net = RegressionNet(**(config or {}))
    net.build((None, INPUT_SIZE, INPUT_SIZE, 2))
    return net


def _cascade_grey(nets, grey_inputs, grey_templates, training=False):
    """Corners ``(B, 4, 2)`` of the cascade and the estimate ``input_H_template`` before the last
    stage (``None`` for one stage); see `cascade_corners`."""
    H = None
    corners = None
    for k, net in enumerate(nets):
        if k > 0:
            H = corners_to_homography(corners, TEMPLATE_SIZE)
            grey = warp_image(grey_inputs, _input_H_centred(H), INPUT_SIZE, return_mask=False)
        else:
            grey = grey_inputs
        offsets = net(_pack_grey(grey, grey_templates), training=training)
        corners = compose_residual(H, offsets)
    return corners, H


def cascade_corners(nets: Sequence[RegressionNet], inputs, templates, training=False) -> tf.Tensor:
    """Run DHN (one net) or the MHN stages in turn and return the corners ``(B, 4, 2)`` float32.

    Stage 1 regresses the corners from the packed pair; every later stage warps the grey input by
    ``input_H_centred = input_H_template @ C^-1`` of the estimate so far, regresses the residual
    offsets in that frame, and `compose_residual` maps them back to the input frame.
    """
    if len(nets) == 0:
        raise ValueError("`nets` is empty: give at least one RegressionNet")
    corners, _ = _cascade_grey(nets, *_grey_pair(inputs, templates), training=training)
    return corners


# ------------------------------------------------------------------------------------------
# Training


class RegressionTask:
    """`deeplk.train.TrainTask` of one DHN network or one MHN stage.

    Args:
        net_config: a `RegressionConfig` or its fields as a dict (``None``: the defaults).
        previous: the trained earlier stages (MHN stage ``k`` gets stages ``1..k-1``), frozen:
            they run in inference mode and no gradient flows into them or through the warp.
        init_weights: a ``.weights.h5`` file of the same architecture to start from (MHN stage
            ``k`` starts from stage ``k - 1``); ignored when `deeplk.train.train` resumes.
        model, stage: ``"dhn"`` or ``"mhn"`` and the stage, recorded in ``model_config.json``.
        notes: training settings recorded in ``model_config.json`` beside them.

    The loss is `regression_loss` of the stage's offsets against the true ones (for ``k > 1``
    the residual in the warped frame, `residual_offsets`); the metric ``pe`` is the mean corner
    error in pixels of the composed estimate in the input frame.
    """

    def __init__(self, net_config: dict | None = None, previous: Sequence[RegressionNet] = (),
                 init_weights=None, model: str = "dhn", stage: int = 1, notes: dict | None = None):
        self.net_config = _config(net_config).to_dict()  # validates
        self.notes = dict(notes or {})
        self.previous = list(previous)
        self.init_weights = None if init_weights is None else str(init_weights)
        self.stage = _check_model(model, stage)
        self.model = model

    def run_config(self) -> dict:
        """What `deeplk.train.train` writes to ``model_config.json``."""
        return {"family": FAMILY, "model": self.net_config,
                "task": {"model": self.model, "stage": self.stage, **self.notes}}

    def build_model(self) -> RegressionNet:
        net = _net(self.net_config)
        if self.init_weights is not None:
            net.load_weights(self.init_weights)
        return net

    def stage_inputs(self, inputs, templates, corners):
        """``(packed (B, 192, 192, 2), target offsets (B, 8), start estimate or None)``."""
        grey_in, grey_t = _grey_pair(inputs, templates)
        if not self.previous:
            return _pack_grey(grey_in, grey_t), corners_to_offsets(corners), None
        prev_corners, _ = _cascade_grey(self.previous, grey_in, grey_t, training=False)
        H = tf.stop_gradient(corners_to_homography(tf.stop_gradient(prev_corners), TEMPLATE_SIZE))
        warped = warp_image(grey_in, _input_H_centred(H), INPUT_SIZE, return_mask=False)
        return _pack_grey(warped, grey_t), residual_offsets(H, corners), H

    def compute_loss(self, model, batch, training):
        inputs, templates, corners = batch
        corners = tf.cast(corners, tf.float32)
        packed, target, H = self.stage_inputs(inputs, templates, corners)
        pred = tf.cast(model(packed, training=training), tf.float32)  # float16 when mixed
        loss = regression_loss(pred, target, model.offset_scale)
        pe = tf.reduce_mean(corner_error(compose_residual(H, pred), corners))
        return loss, {"pe": pe}


def resample_perturbations(inputs, seed, max_offset=None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Fresh DLKFM perturbations for a batch of mono-modal inputs (data augmentation).

    Each template corner is drawn uniformly (integers) in its 64 x 64 box of the 192 frame (as
    `deeplk.data.sample_corners`, without its convexity re-draw: boxes 64 px apart always give a
    convex quadrilateral) and the template is cut from the input itself:
    ``template = warp_image(input, input_H_template, 128)``. Only valid when the template source
    is the input image (mono-modal data: ``demo``, ``mscoco``).

    Args:
        inputs: ``(B, 192, 192, C)`` float images.
        seed: shape ``(2,)`` int seed of the stateless random op.
        max_offset: ``None`` (the protocol: offsets from `BASE_CORNERS` in ``[-32, 31]``), or
            ``r`` (a number or scalar tensor in [1, 32], rounded to an integer): offsets in
            ``[-r, r - 1]``, the centre part of each box (the easier pairs of a curriculum,
            `make_train_dataset`); ``r = 32`` is the protocol's range.

    Returns:
        ``(inputs, templates (B, 128, 128, C), corners (B, 4, 2))`` float32.
    """
    inputs = _images("inputs", inputs, INPUT_SIZE)
    b = tf.shape(inputs)[0]
    origins = tf.constant([[0, 0], [128, 0], [128, 128], [0, 128]], tf.float32)
    if max_offset is None:
        draw = tf.random.stateless_uniform(tf.stack([b, 4, 2]), seed=seed, minval=0, maxval=64, dtype=tf.int32)
        corners = origins + tf.cast(draw, tf.float32)
    else:
        r = tf.clip_by_value(tf.round(tf.cast(max_offset, tf.float32)), 1.0, float(PATCH_OFFSET))
        u = tf.random.stateless_uniform(tf.stack([b, 4, 2]), seed=seed, dtype=tf.float32)
        offsets = tf.minimum(tf.floor(u * 2.0 * r), 2.0 * r - 1.0) - r  # integers in [-r, r - 1]
        corners = tf.constant(BASE_CORNERS, tf.float32) + offsets
    H = corners_to_homography(corners, TEMPLATE_SIZE)
    templates = warp_image(inputs, H, TEMPLATE_SIZE, return_mask=False)
    return inputs, templates, corners


def curriculum_offset(step, curriculum_steps: int, start: float):
    """The largest corner offset (px) of batch `step` in a curriculum: ``start`` at step 0, growing
    linearly to the protocol's 32 at `curriculum_steps` and staying there (float, or a float32
    tensor when `step` is one)."""
    if isinstance(step, tf.Tensor):
        frac = tf.minimum(tf.cast(step, tf.float32) / float(curriculum_steps), 1.0)
    else:
        frac = min(float(step) / curriculum_steps, 1.0)
    return start + (PATCH_OFFSET - start) * frac


def make_train_dataset(data_root, batch_size: int = 32, seed: int = 0, augment: str = "none",
                       split: str = "train2014", max_samples: int | None = None,
                       curriculum_steps: int = 0, curriculum_start: float = 8.0):
    """Endless shuffled batches ``(input, template, corners)`` of a DLK folder for `train_stage`.

    ``augment="resample"`` replaces every batch's templates and corners by fresh ones
    (`resample_perturbations`, seeded by `seed` and the batch index, so the sequence is the same
    in every run); valid for mono-modal data only. Build it after `deeplk.utils.seed_everything`.

    ``curriculum_steps > 0`` (with ``"resample"``) starts with small perturbations: batch ``i``
    draws corner offsets up to `curriculum_offset` ``(i)`` px, from `curriculum_start` growing
    linearly to the full +-32 at batch `curriculum_steps`. Small displacements are nearly linear
    in the image gradients, so the net first learns local motion cues, then the whole range.
    """
    from deeplk.data import load_dataset

    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}, got {augment!r}")
    if isinstance(curriculum_steps, bool) or int(curriculum_steps) != curriculum_steps or curriculum_steps < 0:
        raise ValueError(f"`curriculum_steps` must be an int >= 0, got {curriculum_steps!r}")
    if curriculum_steps and augment != "resample":
        raise ValueError("`curriculum_steps` > 0 needs augment='resample' (it draws the perturbations), "
                         f"got augment={augment!r}")
    if not 1.0 <= float(curriculum_start) <= PATCH_OFFSET:
        raise ValueError(f"`curriculum_start` must be in [1, {PATCH_OFFSET}] px, got {curriculum_start!r}")
    curriculum_steps, curriculum_start = int(curriculum_steps), float(curriculum_start)
    ds = load_dataset(data_root, split, batch_size=batch_size, shuffle=True, seed=seed, repeat=True,
                      max_samples=max_samples)
    if augment == "resample":
        def resample(i, batch):
            r = curriculum_offset(i, curriculum_steps, curriculum_start) if curriculum_steps else None
            return resample_perturbations(batch[0], tf.stack([tf.cast(seed, tf.int64), i]), max_offset=r)

        ds = ds.enumerate().map(resample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


# ------------------------------------------------------------------------------------------
# Checkpoints


def _check_model(model: str, stage: int) -> int:
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {model!r}")
    if isinstance(stage, bool) or int(stage) != stage:
        raise ValueError(f"`stage` must be an int, got {stage!r}")
    stage = int(stage)
    top = 1 if model == "dhn" else MHN_STAGES
    if not 1 <= stage <= top:
        raise ValueError(f"`stage` must be in 1..{top} for {model!r}, got {stage}")
    return stage


def _stage_name(model: str, stage: int = 1) -> str:
    stage = _check_model(model, stage)
    return "dhn" if model == "dhn" else f"mhn/stage{stage}"


def _parse_stage(stage: str) -> tuple[str, int]:
    """``"dhn"`` -> ``("dhn", 1)``, ``"mhn/stage2"`` -> ``("mhn", 2)`` (ValueError otherwise)."""
    from deeplk.train import check_stage

    check_stage(stage, STAGE_NAMES, FAMILY)
    return ("dhn", 1) if stage == "dhn" else ("mhn", int(stage.rsplit("stage", 1)[1]))


def stage_dir(checkpoint_dir, stage: str) -> Path:
    """The run folder of `stage` (one of `STAGE_NAMES`): ``<checkpoint_dir>/dhn`` or
    ``<checkpoint_dir>/mhn/stage<k>`` (relative paths under the project root)."""
    from deeplk.train import stage_folder

    return stage_folder(checkpoint_dir, stage, STAGE_NAMES, FAMILY)


def load_stage(folder) -> RegressionNet:
    """The trained `RegressionNet` in `folder` (its config from ``model_config.json``, weights
    from the latest checkpoint or ``final.weights.h5``, via `deeplk.train.load_run`)."""
    from deeplk.train import load_run

    try:
        return load_run(folder, lambda record: RegressionTask(record.model), FAMILY)[0]
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e} (train it with notebooks/01_train_regression.ipynb or "
            "deeplk.models.regression.train_stage)") from None


def _same_net(a, b) -> bool:
    return _config(a) == _config(b)


def train_stage(stage: str, dataset, checkpoint_dir="checkpoints", *, steps: int = 1000,
                learning_rate: float = 1e-3, seed: int = 0, model_config=None,
                task_options: dict | None = None, notes: dict | None = None, **train_options):
    """Train DHN (``stage="dhn"``) or one MHN stage (``"mhn/stage<k>"``) with `deeplk.train.train`.

    The run's folder is ``<checkpoint_dir>/<stage>`` (`stage_dir`: checkpoints,
    ``final.weights.h5``, ``model_config.json``); a folder with checkpoints resumes. MHN stage
    ``k > 1`` needs stages ``1..k-1`` trained in the same `checkpoint_dir`; it uses their
    architecture (`model_config` must agree or be ``None``) and, with ``init_from_previous``,
    starts from stage ``k - 1``'s weights.

    Args:
        stage: one of `STAGE_NAMES`.
        dataset: batches ``(input, template, corners)`` (e.g. `make_train_dataset`).
        checkpoint_dir: the parent of the run folders.
        steps, learning_rate, seed: `deeplk.train.TrainConfig` fields.
        model_config: the architecture, a `RegressionConfig` or its fields as a dict.
        task_options: ``init_from_previous`` (default True) and ``init_weights`` (a
            ``.weights.h5`` of the same architecture to start from); both only apply to a fresh
            run (a folder with checkpoints resumes from them).
        notes: settings to record in ``model_config.json`` (data folder, batch size ...).
        train_options: further `deeplk.train.TrainConfig` fields (``lr_schedule``,
            ``warmup_steps``, ``clipnorm``, ``log_dir``, ``progress``, ``checkpoint_every`` ...).

    Returns:
        The `deeplk.train.TrainResult`.
    """
    from deeplk.train import RUN_CONFIG_NAME, TrainConfig, check_keys, read_run_config, train

    model, stage_k = _parse_stage(stage)
    options = check_keys(task_options, ("init_from_previous", "init_weights"), "task_options",
                         "regression.train_stage")
    init_from_previous = options.get("init_from_previous", True)
    init_weights = options.get("init_weights")
    folder = stage_dir(checkpoint_dir, stage)
    previous = []
    init = None
    if stage_k > 1:
        dirs = [stage_dir(checkpoint_dir, _stage_name(model, k)) for k in range(1, stage_k)]
        previous = [load_stage(d) for d in dirs]
        prev_net = read_run_config(dirs[-1], FAMILY).model
        if model_config is not None and not _same_net(model_config, prev_net):
            raise ValueError(
                f"`model_config` {model_config!r} differs from stage {stage_k - 1}'s architecture in "
                f"{dirs[-1] / RUN_CONFIG_NAME} ({prev_net!r}); MHN stages share one architecture"
            )
        model_config = prev_net
        if init_from_previous:
            init = dirs[-1] / "final.weights.h5"
            if not init.is_file():
                raise FileNotFoundError(f"no final.weights.h5 in {dirs[-1]} to start stage {stage_k} from")
    if init_weights is not None:
        init = Path(init_weights)
        if not init.is_file():
            raise FileNotFoundError(f"`init_weights` file not found: {init}")
    net_config = _config(model_config).to_dict()
    if (folder / RUN_CONFIG_NAME).is_file():
        old = read_run_config(folder, FAMILY).model
        if not _same_net(old, net_config) and any(folder.glob("ckpt-*")):
            raise ValueError(
                f"{folder} holds a checkpoint of another architecture ({old!r}); use another "
                "`checkpoint_dir` or delete the folder"
            )
    task = RegressionTask(net_config, previous=previous, init_weights=init, model=model, stage=stage_k,
                          notes={"learning_rate": learning_rate, **(notes or {})})
    config = TrainConfig(steps=steps, learning_rate=learning_rate, seed=seed, checkpoint_dir=folder,
                         **train_options)
    return train(task, dataset, config)


# ------------------------------------------------------------------------------------------
# Methods


def _predictor(nets: list[RegressionNet]):
    @tf.function(reduce_retracing=True)
    def run(inputs, templates):
        return cascade_corners(nets, inputs, templates, training=False)

    def predict(inputs, templates):
        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        pack_pair(inputs[:0], templates[:0])  # shape errors before tracing
        corners = run(tf.constant(inputs), tf.constant(templates)).numpy().astype(np.float64)
        failed = ~np.isfinite(corners).all(axis=(1, 2))
        corners[failed] = np.nan
        return corners, failed

    return predict


def build_dhn_method(checkpoint_dir=None):
    """Method ``dhn``: the network in ``<checkpoint_dir>/dhn/`` (default ``checkpoints``)."""
    folder = stage_dir("checkpoints" if checkpoint_dir is None else checkpoint_dir, "dhn")
    return _predictor([load_stage(folder)])


def build_mhn_method(checkpoint_dir=None, stages: int = MHN_STAGES):
    """Method ``mhn``: the stages ``<checkpoint_dir>/mhn/stage1..stage<stages>`` in turn."""
    stages = _check_model("mhn", stages)
    root = "checkpoints" if checkpoint_dir is None else checkpoint_dir
    return _predictor([load_stage(stage_dir(root, _stage_name("mhn", k))) for k in range(1, stages + 1)])


def build_method(name: str, checkpoint_dir=None, **options):
    """The family's method builder (`deeplk.methods`): ``"dhn"`` (`build_dhn_method`) or
    ``"mhn"`` (`build_mhn_method`, option ``stages``)."""
    builders = {"dhn": build_dhn_method, "mhn": build_mhn_method}
    if name not in builders:
        raise ValueError(f"the regression family builds {sorted(builders)}, not {name!r}")
    return builders[name](checkpoint_dir, **options)


def evaluate_stage(stage: str, checkpoint_dir, inputs, templates, true_corners, batch_size: int = 64):
    """Score the trained DHN, or MHN up to `stage`, against ``identity`` on some samples.

    Args:
        stage: as in `train_stage` (``"mhn/stage<k>"`` uses MHN stages ``1..k``).
        checkpoint_dir: the folder holding ``dhn/`` or ``mhn/``.
        inputs, templates, true_corners: samples as from `deeplk.data.load_arrays`.

    Returns:
        ``(summaries, predicted corners)``: ``{"identity": record, name: record}`` with records
        as in ``summary.json`` (`deeplk.evaluate.summarise`; ``name`` is ``"dhn"``, ``"mhn"``,
        or ``"mhn_stages1-k"`` for fewer stages) and the ``(N, 4, 2)`` predictions.
    """
    from deeplk import baselines, evaluate

    model, stage = _parse_stage(stage)
    if model == "dhn":
        predict, name = build_dhn_method(checkpoint_dir), "dhn"
    else:
        predict = build_mhn_method(checkpoint_dir, stages=stage)
        name = "mhn" if stage == MHN_STAGES else f"mhn_stages1-{stage}"

    def identity(i, t):
        return baselines.predict_batch(baselines.BASELINES["identity"], i, t)

    summaries, corners = {}, None
    for key, run, warm_up in (("identity", identity, False), (name, predict, True)):
        corners, failed, seconds = evaluate.run_predictor(run, inputs, templates, batch_size, warm_up=warm_up)
        summaries[key] = evaluate.summarise(evaluate.corner_errors(corners, true_corners, failed), seconds=seconds)
    return summaries, corners
