"""HomographyNet: frozen VGG19 (to ``block3_conv4``) + 7 inception blocks + MLP, supervised and
unsupervised, with the rho 16 -> 32 curriculum.

The model (`HomographyNet`) takes a DLK pair ``(input (B, 192, 192, 3), template (B, 128, 128,
3))``, float32 RGB in [0, 1], and predicts where the template's corners land in the input, as
offsets ``(B, 4, 2)`` (x, y pixels) from the centred corners ``(32, 32), (159, 32), (159, 159),
(32, 159)`` (`deeplk.geometry_np.centred_corners`)::

    input    --(resize by input_scale)--> VGG19 to block3_conv4 (frozen, stride 4) --+
    template --(resize by input_scale)--> same VGG19 --> zero-pad to the input grid --+-- concat
        --> 7 inception blocks (2x2 max-pool after blocks 2, 4, 6) --> flatten
        --> dense 1024 + batch norm + ReLU --> dropout --> dense 8 (zero init: starts at the centred guess)
        --> x offset_scale --> (B, 4, 2) offsets in input pixels

The template's features are placed at the feature-grid offset of the template in the input
(``32 / 4 = 8`` cells at full scale), so both feature maps are in the input frame. The backbone
sees images preprocessed as `keras.applications.vgg19.preprocess_input` expects (``x * 255``,
RGB -> BGR, ImageNet mean subtracted). Its weights (`vgg_weights`): ``"imagenet"`` (the Keras
download; without network a clear error says where to put the file), a local weights file of a
``VGG19(include_top=False)`` model, or ``None`` (random, for tests and offline demos). It is
frozen (``trainable=False``): not in ``model.trainable_variables``, never updated, but part of
the saved weights.

Options beyond the paper's architecture, for CPU budgets only (defaults = the paper):
``input_scale`` (resize input and template before the backbone, e.g. 0.25: 48 / 32 px, about
16x fewer backbone FLOPs), ``inception_filters`` (filters per inception branch, 64 by default)
and ``num_inception_blocks`` (7 by default; with 4 only the pooling after block 2 remains, so the
MLP sees a grid 4x finer per side).
``vgg_layer`` (``"block2_conv2"`` / ``"block1_conv2"`` / ``"block1_conv1"``: cut the frozen backbone
earlier, stride 2 / 1 / 1). Not from the paper but the default: ``fc_batch_norm`` (batch norm before the hidden ReLU; the
plain dense + ReLU died on the demo data and the net predicted a constant). For training without
ImageNet weights (the offline demo): ``input_norm="standardise"`` (each image to zero mean, unit
variance instead of the ImageNet preprocessing), ``bn_momentum`` (of every batch norm; 0.9 lets the
inference statistics follow a short training) and ``train_backbone`` (train the VGG layers too;
default frozen, as in the paper).

Without ImageNet weights the net learns from a backbone cut at ``block1_conv1`` or
``block1_conv2`` (the two images' features meet pixel by pixel); the demo profile's settings and
what was measured on the way are in ``docs/RESULTS.md``.

Training (`deeplk.train.train`, one loop for every model):

- `SupervisedTask`: mean squared error of the offsets, in units of ``offset_scale`` (32 px).
- `UnsupervisedTask`: `masked_photometric_l1`: the predicted offsets -> corners -> H with the
  batched TensorDLT (`deeplk.geometry.corners_to_homography`, any batch size), the input warped
  into the template frame by H (`deeplk.warp.warp_image`, pixel coordinates, so an identity
  warp is exact: no shrinking), L1 against the template averaged over the valid pixels only.
  Optionally averaged over average-pooled pyramid levels (``loss_pools``,
  `pyramid_photometric_l1`) for a wider basin, and plus a penalty on predicted corners outside
  the input (``outside_weight``, `outside_penalty`): the masked L1 costs nothing for pixels
  warped from outside the input, and without it a large learning rate drifts to such warps. The
  labels are only used for the logged ``mace`` metric.
- `make_train_dataset` and `train_stage`: one curriculum stage, named by its run folder
  (``"hnet_sup/rho16"``, ``"hnet_unsup/rho32"`` ..., `STAGE_NAMES`). Rho 16 synthesises pairs
  on the fly from the training inputs (`deeplk.data.augment.with_synthetic_pairs`, offsets
  uniform in [-16, 16]; optionally ramping the largest offset up from ``rho_start`` over
  ``ramp_steps``); rho 32 trains on the DLK pairs themselves (their +-32 box; ``pairs="synthetic"``
  for on-the-fly rho 32 pairs instead) and starts from the rho 16 stage's latest weights when
  that stage exists. Checkpoints go to ``<checkpoint_dir>/<hnet_sup|hnet_unsup>/rho<16|32>/``
  (each the ``checkpoint_dir`` of one `deeplk.train.train` call, which also writes
  ``model_config.json`` from the task's `run_config`), so the methods ``hnet_sup`` /
  ``hnet_unsup`` rebuild the model and load
  the latest stage without options.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_bool, check_momentum, check_non_negative, check_shape, renamed_hint
from deeplk.data.augment import with_synthetic_pairs
from deeplk.geometry_np import centred_corners
from deeplk.geometry import corners_to_homography, scale_homography
from deeplk.paths import resolve
from deeplk.warp import warp_image

__all__ = [
    "VGG_LAYER",
    "VGG_LAYERS",
    "VGG_NOTOP_FILE",
    "VGG_NOTOP_URL",
    "MODES",
    "RHOS",
    "DEFAULT_PAIRS",
    "STAGE_NAMES",
    "METHOD_DESCRIPTIONS",
    "vgg19_backbone",
    "vgg_preprocess",
    "standardise_images",
    "INPUT_NORMS",
    "InceptionBlock",
    "HomographyNet",
    "HomographyNetConfig",
    "masked_photometric_l1",
    "outside_penalty",
    "pyramid_photometric_l1",
    "SupervisedTask",
    "UnsupervisedTask",
    "make_task",
    "stage_dir",
    "latest_stage",
    "make_train_dataset",
    "train_stage",
    "load_stage_model",
    "build_hnet_sup_method",
    "build_hnet_unsup_method",
    "build_method",
]

#: Where the backbone is cut.
VGG_LAYER = "block3_conv4"
#: The Keras ImageNet weights of ``VGG19(include_top=False)`` and where they come from.
VGG_NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + VGG_NOTOP_FILE
#: ImageNet mean in BGR order (``keras.applications.vgg19.preprocess_input``, "caffe" mode).
_BGR_MEAN = (103.939, 116.779, 123.68)
_STRIDE = 4  # of block3_conv4 (two 2x2 poolings)
#: Where the backbone may be cut: ``{layer: (channels, stride)}``. `VGG_LAYER` is the paper's;
#: the earlier cuts are CPU options (fewer FLOPs, finer feature grid).
VGG_LAYERS = {"block1_conv1": (64, 1), "block1_conv2": (64, 1), "block2_conv2": (128, 2), "block3_conv4": (256, 4)}

#: How images are normalised before the backbone: ImageNet preprocessing (the pretrained weights'
#: convention) or per-image standardisation (`standardise_images`).
INPUT_NORMS = ("vgg", "standardise")
#: Training modes and their method / checkpoint folder names.
MODES = {"supervised": "hnet_sup", "unsupervised": "hnet_unsup"}
#: The curriculum's stages (largest corner offset, pixels), in order.
RHOS = (16, 32)
#: The pairs each stage trains on by default (`make_train_dataset`).
DEFAULT_PAIRS = {16: "synthetic", 32: "dlk"}
#: The stages `train_stage` trains, named by their run folder under the checkpoint folder.
STAGE_NAMES = tuple(f"{name}/rho{rho}" for name in MODES.values() for rho in RHOS)
#: The family name in ``model_config.json`` (`deeplk.train.read_run_config`).
FAMILY = "homography_net"

METHOD_DESCRIPTIONS = {
    "hnet_sup": "HomographyNet (frozen VGG19 block3_conv4 + 7 inception blocks + MLP), supervised on corner offsets, rho 16 -> 32",
    "hnet_unsup": "HomographyNet, unsupervised: masked photometric L1 through TensorDLT and the warp, rho 16 -> 32",
}


# ------------------------------------------------------------------------------------------
# Backbone


def _keras_models_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def vgg19_backbone(weights="imagenet", layer: str = VGG_LAYER) -> keras.Model:
    """VGG19 from its input to `layer` (``block3_conv4``: 256 channels, stride 4), any image
    size, frozen.

    Args:
        weights: ``"imagenet"`` (Keras downloads ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
            into ``~/.keras/models/`` once), a path to a weights file of a
            ``keras.applications.VGG19(include_top=False)`` model, or ``None`` (random).
        layer: the last layer kept, one of `VGG_LAYERS` (``"block2_conv2"``: 128 channels,
            stride 2; ``"block1_conv2"`` or ``"block1_conv1"``: 64 channels, stride 1).

    Returns:
        A functional ``keras.Model`` ``(B, H, W, 3) -> (B, H/s, W/s, channels)`` with
        ``trainable=False``, expecting `vgg_preprocess`-ed images.

    Raises:
        FileNotFoundError: `weights` is a path that does not exist.
        RuntimeError: ``"imagenet"`` and the download failed (no network): the message names the
            file to put in place.
    """
    if layer not in VGG_LAYERS:
        raise ValueError(f"`vgg_layer` must be one of {sorted(VGG_LAYERS)}, got {layer!r}")
    if weights is not None and weights != "imagenet":
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"`vgg_weights` must be 'imagenet', a file path or None, got {weights!r}")
        path = resolve(weights)
        if not path.is_file():
            raise FileNotFoundError(f"`vgg_weights` file not found: {path}")
        weights = str(path)
    if weights is None:  # the same layers, without building blocks 4 and 5 (20M unused weights)
        backbone = _vgg19_to_layer(layer)
        backbone.trainable = False
        return backbone
    try:
        vgg = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as e:  # noqa: BLE001 - the download raises plain Exception
        if weights != "imagenet":
            raise ValueError(f"cannot load VGG19 weights from {weights}: {e}") from e
        target = _keras_models_dir() / VGG_NOTOP_FILE
        raise RuntimeError(
            f"could not get the ImageNet VGG19 weights ({type(e).__name__}: {str(e)[:200]}). "
            f"Without network, download {VGG_NOTOP_URL} elsewhere and put it at {target} "
            "(or pass vgg_weights=<path to that file>); vgg_weights=None gives a random "
            "backbone"
        ) from e
    backbone = keras.Model(vgg.input, vgg.get_layer(layer).output, name=f"vgg19_{layer}")
    backbone.trainable = False
    return backbone


def _vgg19_to_layer(layer: str = VGG_LAYER) -> keras.Model:
    """The first layers of ``keras.applications.VGG19`` up to `layer`, same names and
    initialisers (random weights)."""
    inputs = keras.Input((None, None, 3), name="input_layer")
    x = inputs
    last, last_conv = int(layer[5]), int(layer[-1])  # "block<k>_conv<i>"
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 4)][:last], start=1):
        for i in range(1, (last_conv if block == last else convs) + 1):
            x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
        if block < last:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=f"vgg19_{layer}")


def standardise_images(images, eps: float = 1e-4):
    """Per image: zero mean and unit variance over pixels and channels (``(B, H, W, C)`` -> same
    shape). The ``input_norm="standardise"`` alternative to `vgg_preprocess` for a backbone without
    ImageNet weights: the input and its template reach the backbone with the same contrast whatever
    the image's brightness. ``eps`` is a floor on the variance (flat images), not added to it, so
    the result is exactly invariant to ``a * images + b`` whenever the variance stays above it."""
    images = tf.convert_to_tensor(images)
    check_shape("images", images, (None, None, None, None), "B x H x W x C")
    mean, var = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
    return (images - mean) * tf.math.rsqrt(tf.maximum(var, eps))


def vgg_preprocess(images):
    """``keras.applications.vgg19.preprocess_input(images * 255)`` for RGB images in [0, 1]:
    BGR order, ImageNet mean subtracted, 0-255 range. ``(B, H, W, 3)`` -> same shape."""
    images = tf.convert_to_tensor(images)
    check_shape("images", images, (None, None, None, 3), "B x H x W x RGB")
    return images[..., ::-1] * 255.0 - tf.constant(_BGR_MEAN, images.dtype)


# ------------------------------------------------------------------------------------------
# Layers and the model


@keras.saving.register_keras_serializable(package="deeplk")
class InceptionBlock(keras.layers.Layer):
    """Inception block: four branches concatenated, every convolution followed by batch norm and
    ReLU: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (a 5x5 field); 3x3 max-pool -> 1x1.

    Args:
        filters: channels of each branch (the output has ``4 * filters``).

    Input ``(B, h, w, c)`` -> output ``(B, h, w, 4 * filters)``.
    """

    def __init__(self, filters: int = 64, bn_momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"`filters` must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.bn_momentum = check_momentum("bn_momentum", bn_momentum)

    def build(self, input_shape):
        # Sublayers are attributes (not nested lists): tf.train.Checkpoint tracks attributes of
        # Keras layers but not layers kept in Python lists.
        spec = [
            [("b1_1x1", 1)],
            [("b2_1x1", 1), ("b2_3x3", 3)],
            [("b3_1x1", 1), ("b3_3x3a", 3), ("b3_3x3b", 3)],
            [("b4_pool", None), ("b4_1x1", 1)],
        ]
        self._branch_names = []
        for branch in spec:
            names = []
            shape = tuple(input_shape)
            for name, kernel in branch:
                if kernel is None:
                    layers = [(name, keras.layers.MaxPooling2D(3, strides=1, padding="same", name=name))]
                else:
                    layers = [(f"{name}_conv", keras.layers.Conv2D(self.filters, kernel, padding="same",
                                                                   use_bias=False, name=f"{name}_conv")),
                              (f"{name}_bn", keras.layers.BatchNormalization(momentum=self.bn_momentum,
                                                                             name=f"{name}_bn"))]
                for attr, layer in layers:
                    layer.build(shape)
                    shape = layer.compute_output_shape(shape)
                    setattr(self, attr, layer)
                    names.append(attr)
            self._branch_names.append(tuple(names))
        self._branch_names = tuple(self._branch_names)
        self.built = True

    def call(self, x, training=None):
        outs = []
        for names in self._branch_names:
            h = x
            for attr in names:
                layer = getattr(self, attr)
                if isinstance(layer, keras.layers.BatchNormalization):
                    h = tf.nn.relu(layer(h, training=training))
                else:
                    h = layer(h)
            outs.append(h)
        return tf.concat(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4 * self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "bn_momentum": self.bn_momentum}


def _check_scale(input_size: int, template_size: int, input_scale: float, stride: int = _STRIDE) -> tuple[int, int, int]:
    """Scaled input side, template side and template offset, in pixels; checked for the stride."""
    values = []
    for name, size in (("input_size", input_size), ("template_size", template_size),
                       ("(input_size - template_size) / 2", (input_size - template_size) / 2)):
        scaled = size * input_scale
        if abs(scaled - round(scaled)) > 1e-9 or round(scaled) % stride or round(scaled) <= 0:
            raise ValueError(
                f"`input_scale` {input_scale:g} gives {name} = {scaled:g} px, which must be a positive "
                f"multiple of {stride} (the backbone's stride) so the template's features align "
                "with the input's; e.g. 1, 0.5, 0.25 for 192 / 128"
            )
        values.append(int(round(scaled)))
    return values[0], values[1], values[2]


@keras.saving.register_keras_serializable(package="deeplk")
class HomographyNet(keras.Model):
    """HomographyNet for DLK pairs (see the module docstring for the architecture).

    Args:
        vgg_weights: ``"imagenet"``, a weights file path or ``None`` (see `vgg19_backbone`); only
            used to initialise the frozen backbone (saved weights override it).
        input_size: side of the input images (192).
        template_size: side of the templates (128).
        input_scale: resize input and template by this factor before the backbone (1 = paper);
            the scaled sizes and the template offset must be multiples of 4.
        inception_filters: filters per branch of each inception block (64 = paper).
        num_inception_blocks: 7 in the paper.
        dense_units: width of the hidden dense layer (1024).
        dropout: dropout rate before the output layer (0.5).
        offset_scale: the network's raw outputs are multiplied by this (pixels), so it predicts
            offsets in units of about the largest offset (32).
        vgg_layer: where the backbone is cut (`VGG_LAYERS`): ``"block3_conv4"`` (paper, stride
            4) or, as a CPU option, ``"block2_conv2"`` (stride 2, about 2.4x fewer backbone FLOPs
            and a twice finer feature grid), ``"block1_conv2"`` (stride 1) or ``"block1_conv1"``
            (stride 1, one 3x3 convolution: about 20x cheaper than ``"block1_conv2"``). The scaled sizes
            and the template offset must be multiples of the stride.
        bn_momentum: momentum of the moving statistics of every batch norm (Keras' 0.99 by
            default).
        input_norm: ``"vgg"`` (`vgg_preprocess`, what ImageNet weights expect; default) or
            ``"standardise"`` (`standardise_images`: per image zero mean, unit variance).
        train_backbone: train the backbone's weights with the rest (default False: frozen, the
            paper's setting; True is meant for a backbone without pretrained weights).
        fc_batch_norm: batch norm between the hidden dense layer and its ReLU (default). Without
            it the hidden layer died on the demo (2 of 128 units ever active after 300-600 steps:
            the flattened inputs are all non-negative, and while the offsets are still
            unpredictable the MSE gradient shrinks the output's variance by switching the
            units off), so the net predicted a constant; ``False`` is the plain dense + ReLU.

    Call: ``model((inputs (B, S, S, 3), templates (B, t, t, 3)), training=...)`` -> offsets
    ``(B, 4, 2)`` float32, input pixels, from `centred_corners` (TL, TR, BR, BL; (x, y)).
    """

    def __init__(self, vgg_weights="imagenet", input_size: int = 192, template_size: int = 128,
                 input_scale: float = 1.0, inception_filters: int = 64, num_inception_blocks: int = 7,
                 dense_units: int = 1024, dropout: float = 0.5, offset_scale: float = 32.0,
                 vgg_layer: str = VGG_LAYER, fc_batch_norm: bool = True, bn_momentum: float = 0.99,
                 input_norm: str = "vgg", train_backbone: bool = False, **kwargs):
        super().__init__(**kwargs)
        centred_corners(input_size, template_size)  # checks the sizes
        for name, value in (("inception_filters", inception_filters), ("num_inception_blocks", num_inception_blocks),
                            ("dense_units", dense_units)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not (isinstance(input_scale, (int, float)) and 0 < input_scale <= 1):
            raise ValueError(f"`input_scale` must be a number in (0, 1], got {input_scale!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        if not (isinstance(offset_scale, (int, float)) and offset_scale > 0):
            raise ValueError(f"`offset_scale` must be a positive number, got {offset_scale!r}")
        self.vgg_weights = None if vgg_weights is None else str(vgg_weights)
        self.input_size = int(input_size)
        self.template_size = int(template_size)
        self.input_scale = float(input_scale)
        self.inception_filters = int(inception_filters)
        self.num_inception_blocks = int(num_inception_blocks)
        self.dense_units = int(dense_units)
        self.dropout = float(dropout)
        self.offset_scale = float(offset_scale)
        if vgg_layer not in VGG_LAYERS:
            raise ValueError(f"`vgg_layer` must be one of {sorted(VGG_LAYERS)}, got {vgg_layer!r}")
        self.vgg_layer = str(vgg_layer)
        self.fc_batch_norm = check_bool("fc_batch_norm", fc_batch_norm)
        self.bn_momentum = check_momentum("bn_momentum", bn_momentum)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"`input_norm` must be one of {INPUT_NORMS}, got {input_norm!r}"
                             f"{renamed_hint([input_norm])}")
        self.input_norm = str(input_norm)
        self.train_backbone = check_bool("train_backbone", train_backbone)
        self._sizes = _check_scale(self.input_size, self.template_size, self.input_scale, VGG_LAYERS[vgg_layer][1])

    def build(self, input_shape=None):
        if self.built:
            return
        s_in, s_t, s_off = self._sizes
        self.backbone = vgg19_backbone(self.vgg_weights, self.vgg_layer)
        self.backbone.trainable = self.train_backbone
        # Layers are attributes (tf.train.Checkpoint does not track layers kept in lists);
        # `_block_names` is their order.
        names = []
        channels, stride = VGG_LAYERS[self.vgg_layer]
        fs = s_in // stride
        shape = (None, fs, fs, 2 * channels)
        for i in range(self.num_inception_blocks):
            block = InceptionBlock(self.inception_filters, bn_momentum=self.bn_momentum, name=f"inception_{i + 1}")
            block.build(shape)
            shape = block.compute_output_shape(shape)
            setattr(self, block.name, block)
            names.append(block.name)
            if i % 2 == 1 and i + 1 < self.num_inception_blocks:
                pool = keras.layers.MaxPooling2D(2, padding="same", name=f"pool_{i + 1}")
                shape = pool.compute_output_shape(shape)
                setattr(self, pool.name, pool)
                names.append(pool.name)
        self._block_names = tuple(names)
        flat = int(np.prod(shape[1:]))
        if self.fc_batch_norm:
            self.hidden = keras.layers.Dense(self.dense_units, use_bias=False, name="fc")
            self.hidden.build((None, flat))
            self.fc_bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="fc_bn")
            self.fc_bn.build((None, self.dense_units))
        else:
            self.hidden = keras.layers.Dense(self.dense_units, activation="relu", name="fc")
            self.hidden.build((None, flat))
        self.drop = keras.layers.Dropout(self.dropout, name="dropout")
        self.out = keras.layers.Dense(8, kernel_initializer="zeros", name="offsets")
        self.out.build((None, self.dense_units))
        self.built = True

    def _features(self, images, size: int):
        images = tf.cast(images, tf.float32)
        if images.shape[1] != size:
            images = tf.image.resize(images, (size, size), method="area")
        preprocess = standardise_images if self.input_norm == "standardise" else vgg_preprocess
        return self.backbone(preprocess(images), training=False)

    def call(self, inputs, training=None):
        images, templates = inputs
        check_shape("inputs[0] (input images)", images, (None, self.input_size, self.input_size, 3))
        check_shape("inputs[1] (templates)", templates, (None, self.template_size, self.template_size, 3))
        s_in, s_t, s_off = self._sizes
        x = self._features(images, s_in)
        t = self._features(templates, s_t)
        pad = s_off // VGG_LAYERS[self.vgg_layer][1]
        t = tf.pad(t, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        h = tf.concat([x, t], axis=-1)
        for name in self._block_names:
            layer = getattr(self, name)
            h = layer(h, training=training) if isinstance(layer, InceptionBlock) else layer(h)
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        h = self.hidden(h)
        if self.fc_batch_norm:
            h = tf.nn.relu(self.fc_bn(h, training=training))
        h = self.drop(h, training=training)
        return tf.reshape(self.out(h) * self.offset_scale, [-1, 4, 2])

    def build_for_inputs(self):
        """Build every variable (a dummy batch of one); returns self."""
        self.build()
        self((tf.zeros((1, self.input_size, self.input_size, 3)),
              tf.zeros((1, self.template_size, self.template_size, 3))), training=False)
        return self

    @property
    def blocks(self) -> list:
        """The inception blocks and poolings, in order."""
        return [getattr(self, name) for name in self._block_names]

    @property
    def base_corners(self) -> np.ndarray:
        """(4, 2) float64: where the centred template's corners land (offsets are added to it)."""
        return centred_corners(self.input_size, self.template_size)

    def predict_corners(self, inputs, templates) -> tf.Tensor:
        """``(B, 4, 2)`` float32 corners in the input frame (inference mode)."""
        offsets = self((inputs, templates), training=False)
        return offsets + tf.constant(self.base_corners, tf.float32)

    def get_config(self):
        base = super().get_config()
        base.pop("trainable", None)
        return {**base, "vgg_weights": self.vgg_weights, "input_size": self.input_size,
                "template_size": self.template_size, "input_scale": self.input_scale,
                "inception_filters": self.inception_filters,
                "num_inception_blocks": self.num_inception_blocks, "dense_units": self.dense_units,
                "dropout": self.dropout, "offset_scale": self.offset_scale, "vgg_layer": self.vgg_layer,
                "fc_batch_norm": self.fc_batch_norm, "bn_momentum": self.bn_momentum,
                "input_norm": self.input_norm, "train_backbone": self.train_backbone}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@dataclass
class HomographyNetConfig:
    """The HomographyNet architecture (what ``model_config.json`` holds): the `HomographyNet`
    arguments, validated on construction (invalid values raise ``ValueError`` naming the field).
    ``vgg_weights`` is where a new model's backbone comes from; a trained one loads it from its
    checkpoint."""

    vgg_weights: str | None = "imagenet"
    input_size: int = 192
    template_size: int = 128
    input_scale: float = 1.0
    inception_filters: int = 64
    num_inception_blocks: int = 7
    dense_units: int = 1024
    dropout: float = 0.5
    offset_scale: float = 32.0
    vgg_layer: str = VGG_LAYER
    fc_batch_norm: bool = True
    bn_momentum: float = 0.99
    input_norm: str = "vgg"
    train_backbone: bool = False

    def __post_init__(self):
        model = HomographyNet(**asdict(self))
        for key in asdict(self):
            setattr(self, key, getattr(model, key))

    def to_dict(self) -> dict:
        return asdict(self)


def _model_options(config) -> dict:
    """The full `HomographyNetConfig` of a config, a dict of options (missing ones take the
    defaults) or ``None``, as a dict."""
    from deeplk.train import as_config

    return as_config(HomographyNetConfig, config, "model_config").to_dict()


# ------------------------------------------------------------------------------------------
# Losses


def masked_photometric_l1(inputs, templates, input_H_template, return_per_sample: bool = False):
    """L1 between the template and the input warped into the template frame, over valid pixels.

    ``warped, mask = warp_image(inputs, input_H_template, template size)``; per sample the mean
    of ``|warped - template|`` over the pixels (and channels) where ``mask == 1``, i.e. whose
    sampling position lies inside the input. Black borders never count. A sample without any
    valid pixel contributes 0 (no NaN) to the batch mean. Differentiable with respect to H (and
    the images).

    Args:
        inputs: ``(B, H, W, C)`` input images (float32 or float64).
        templates: ``(B, h, w, C)`` templates.
        input_H_template: ``(B, 3, 3)`` homographies, template pixels -> input pixels.
        return_per_sample: also return the per-sample losses ``(B,)`` and valid fractions ``(B,)``.

    Returns:
        Scalar mean over the batch (in the images' dtype), or ``(loss, per_sample, valid)``.
    """
    inputs = tf.convert_to_tensor(inputs)
    templates = tf.cast(tf.convert_to_tensor(templates), inputs.dtype)
    check_shape("inputs", inputs, (None, None, None, None), "B x H x W x C")
    check_shape("templates", templates, (None, None, None, inputs.shape[-1]), "B x h x w x C")
    check_shape("input_H_template", input_H_template, (None, 3, 3), "B x 3 x 3")
    size = templates.shape[1:3]
    if None in size:
        raise ValueError(f"`templates` need a static size, got shape {tuple(templates.shape)}")
    warped, mask = warp_image(inputs, input_H_template, tuple(size))
    channels = tf.cast(tf.shape(inputs)[-1], inputs.dtype)
    abs_diff = tf.reduce_sum(tf.abs(warped - templates) * mask, axis=[1, 2, 3])
    count = tf.reduce_sum(mask, axis=[1, 2, 3]) * channels
    per_sample = tf.math.divide_no_nan(abs_diff, count)
    loss = tf.reduce_mean(per_sample)
    if return_per_sample:
        valid = tf.reduce_mean(mask, axis=[1, 2, 3])
        return loss, per_sample, valid
    return loss


def _check_pools(pools, input_size: int, template_size: int) -> tuple[int, ...]:
    pools = (pools,) if isinstance(pools, (int, np.integer)) and not isinstance(pools, bool) else pools
    try:
        pools = tuple(pools)
    except TypeError:
        pools = None
    if not pools or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in pools):
        raise ValueError(f"`pools` must be a non-empty sequence of positive integers, got {pools!r}")
    for k in pools:
        if input_size % k or template_size % k:
            raise ValueError(f"`pools` factor {k} must divide the input size {input_size} and the template "
                             f"size {template_size}")
    return tuple(int(k) for k in pools)


def pyramid_photometric_l1(inputs, templates, input_H_template, pools=(1,), return_per_sample: bool = False):
    """`masked_photometric_l1` averaged over pyramid levels: a wider basin for large offsets.

    For each factor ``k`` in `pools`, input and template are average-pooled by ``k`` (``k x k``
    blocks, stride ``k``; the same as ``cv2.resize(..., INTER_AREA)`` to ``1/k`` of the size) and
    compared at the homography expressed at that resolution
    (``deeplk.geometry.scale_homography(H, 1/k)``, half-pixel centres); the losses of the levels
    are averaged. ``pools=(1,)`` is exactly `masked_photometric_l1`. Coarse levels see structure
    larger than the offsets, so their gradient still points toward the right corners when fine
    detail has decorrelated (measured on the demo validation pairs: at 24-32 px from the truth
    the raw loss' gradient points the right way for 84 % / 70 % of the samples, at ``k = 8``
    for 91 % / 86 %); the full-resolution level keeps the precision.

    Args:
        inputs: ``(B, H, W, C)`` input images.
        templates: ``(B, h, w, C)`` templates.
        input_H_template: ``(B, 3, 3)`` homographies, template pixels -> input pixels.
        pools: pooling factors, each dividing ``H``, ``W``, ``h`` and ``w``.
        return_per_sample: also return per-sample losses ``(B,)`` (mean over levels) and the
            valid fractions ``(B,)`` of the first level.

    Returns:
        Scalar mean over the batch, or ``(loss, per_sample, valid)``.
    """
    inputs = tf.convert_to_tensor(inputs)
    templates = tf.cast(tf.convert_to_tensor(templates), inputs.dtype)
    check_shape("inputs", inputs, (None, None, None, None), "B x H x W x C")
    check_shape("templates", templates, (None, None, None, inputs.shape[-1]), "B x h x w x C")
    check_shape("input_H_template", input_H_template, (None, 3, 3), "B x 3 x 3")
    if None in inputs.shape[1:3] or None in templates.shape[1:3]:
        raise ValueError("`inputs` and `templates` need static sizes for `pools`")
    pools = _check_pools(pools, math.gcd(inputs.shape[1], inputs.shape[2]),
                         math.gcd(templates.shape[1], templates.shape[2]))
    H = tf.cast(tf.convert_to_tensor(input_H_template), inputs.dtype)
    per_level, valid = [], None
    for k in pools:
        if k == 1:
            x, t, Hk = inputs, templates, H
        else:
            x = tf.nn.avg_pool2d(inputs, k, k, "VALID")
            t = tf.nn.avg_pool2d(templates, k, k, "VALID")
            Hk = scale_homography(H, 1.0 / k)
        _, per_sample, v = masked_photometric_l1(x, t, Hk, return_per_sample=True)
        per_level.append(per_sample)
        valid = v if valid is None else valid
    per_sample = tf.add_n(per_level) / float(len(pools))
    loss = tf.reduce_mean(per_sample)
    if return_per_sample:
        return loss, per_sample, valid
    return loss


def outside_penalty(corners, input_size: int, scale: float = 1.0):
    """How far predicted template corners lie outside the input, a label-free prior of the DLK
    protocol (the template is cut from inside the input).

    The mean over the batch's corners and both coordinates of ``max(0, -c) + max(0, c - (S - 1))``
    (``S`` = `input_size`, pixel centres ``0 .. S - 1``), divided by `scale`; zero for corners
    inside the input, growing linearly outside, so its gradient pulls a prediction that has left
    the input back toward it where the photometric loss no longer says which way to go.

    Args:
        corners: ``(B, 4, 2)`` predicted template corners in input pixels.
        input_size: side of the square input.
        scale: divides the distance (e.g. ``offset_scale``, to make it unit-free).

    Returns:
        Scalar float32.
    """
    corners = tf.cast(tf.convert_to_tensor(corners), tf.float32)
    check_shape("corners", corners, (None, 4, 2), "B x 4 x 2")
    excess = tf.nn.relu(-corners) + tf.nn.relu(corners - float(input_size - 1))
    return tf.reduce_mean(excess) / float(scale)


def _mace(pred_corners, true_corners):
    return tf.reduce_mean(tf.norm(pred_corners - true_corners, axis=-1))


# ------------------------------------------------------------------------------------------
# Training tasks (deeplk.train.TrainTask)


class _Task:
    """Shared part of the tasks: builds the model from `model_config`, optionally starting from
    the latest weights of another stage's ``checkpoint_dir`` (`init_from`)."""

    mode = ""

    def __init__(self, model_config=None, init_from=None):
        self.model_config = _model_options(model_config)
        self.init_from = init_from
        self.notes: dict = {}  # training settings recorded in model_config.json (`train_stage`)

    def run_config(self) -> dict:
        """What `deeplk.train.train` writes to ``model_config.json``."""
        task = {"mode": self.mode, "init_from": None if self.init_from is None else str(self.init_from),
                "loss_pools": list(getattr(self, "loss_pools", (1,))),
                "outside_weight": getattr(self, "outside_weight", 0.0), **self.notes}
        return {"family": FAMILY, "model": self.model_config, "task": task}

    def build_model(self) -> HomographyNet:
        config = dict(self.model_config)
        if self.init_from is not None:
            config["vgg_weights"] = None  # the backbone comes from the checkpoint
        model = HomographyNet(**config, name="homography_net").build_for_inputs()
        if self.init_from is not None:
            from deeplk.train import load_latest

            source = load_latest(type(self)(config), self.init_from)
            for mine, theirs in zip(model.weights, source.weights):
                mine.assign(theirs)
        return model

    def trainable_variables(self, model):
        return list(model.trainable_variables)  # the backbone is frozen: not among them

    def _offsets(self, model, batch, training):
        inputs, templates, corners = batch
        base = tf.constant(centred_corners(model.input_size, model.template_size), tf.float32)
        pred = tf.cast(model((inputs, templates), training=training), tf.float32)  # mixed: float16
        return pred, tf.cast(corners, tf.float32) - base, base


class SupervisedTask(_Task):
    """Regress the corner offsets: MSE in units of ``offset_scale``; metric ``mace`` (pixels)."""

    mode = "supervised"

    def compute_loss(self, model, batch, training):
        pred, target, _ = self._offsets(model, batch, training)
        loss = tf.reduce_mean(tf.square((pred - target) / model.offset_scale))
        return loss, {"mace": _mace(pred, target)}


class UnsupervisedTask(_Task):
    """Masked photometric L1 at the predicted homography, averaged over the pyramid levels
    `loss_pools` (`pyramid_photometric_l1`; ``(1,)``, the default, is the plain
    `masked_photometric_l1`), plus `outside_weight` times `outside_penalty` of the predicted
    corners (0, the default: none); the labels only feed the ``mace`` metric. Metrics ``valid`` =
    mean fraction of valid template pixels, ``outside`` = the mean penalty."""

    mode = "unsupervised"

    def __init__(self, model_config: dict | None = None, init_from=None, loss_pools=(1,),
                 outside_weight: float = 0.0):
        super().__init__(model_config, init_from)
        config = HomographyNet(**{**self.model_config, "vgg_weights": None})
        self.loss_pools = _check_pools(loss_pools, config.input_size, config.template_size)
        self.outside_weight = check_non_negative("outside_weight", outside_weight)

    def compute_loss(self, model, batch, training):
        inputs, templates, _ = batch
        pred, target, base = self._offsets(model, batch, training)
        H = corners_to_homography(base + pred, model.template_size)
        loss, _, valid = pyramid_photometric_l1(inputs, templates, H, self.loss_pools, return_per_sample=True)
        outside = outside_penalty(base + pred, model.input_size, model.offset_scale)
        if self.outside_weight:
            loss = loss + self.outside_weight * outside
        return loss, {"mace": _mace(pred, target), "valid": tf.reduce_mean(valid), "outside": outside}


def make_task(mode: str, model_config: dict | None = None, init_from=None, loss_pools=None,
              outside_weight=None) -> _Task:
    """`SupervisedTask` or `UnsupervisedTask` for ``mode`` in ``"supervised"``, ``"unsupervised"``;
    `loss_pools` (``None`` = ``(1,)``) and `outside_weight` (``None`` = 0), unsupervised only, see
    `UnsupervisedTask`."""
    if mode == "supervised":
        if loss_pools is not None and tuple(np.atleast_1d(loss_pools)) != (1,):
            raise ValueError(f"`loss_pools` is for mode='unsupervised' only, got {loss_pools!r} with mode='supervised'")
        if outside_weight:
            raise ValueError(f"`outside_weight` is for mode='unsupervised' only, got {outside_weight!r} with "
                             "mode='supervised'")
        return SupervisedTask(model_config, init_from)
    if mode == "unsupervised":
        return UnsupervisedTask(model_config, init_from, (1,) if loss_pools is None else loss_pools,
                                0.0 if outside_weight is None else outside_weight)
    raise ValueError(f"`mode` must be 'supervised' or 'unsupervised', got {mode!r}")


# ------------------------------------------------------------------------------------------
# The curriculum


def _stage_name(mode: str, rho: int) -> str:
    if mode not in MODES:
        raise ValueError(f"`mode` must be 'supervised' or 'unsupervised', got {mode!r}")
    if rho not in RHOS:
        raise ValueError(f"`rho` must be one of {RHOS}, got {rho!r}")
    return f"{MODES[mode]}/rho{rho}"


def _parse_stage(stage: str) -> tuple[str, int]:
    """``"hnet_sup/rho32"`` -> ``("supervised", 32)`` (ValueError for a name not in `STAGE_NAMES`)."""
    from deeplk.train import check_stage

    check_stage(stage, STAGE_NAMES, FAMILY)
    name, rho = stage.split("/rho")
    return {v: k for k, v in MODES.items()}[name], int(rho)


def stage_dir(checkpoint_dir, stage: str) -> Path:
    """The run folder ``<checkpoint_dir>/<hnet_sup|hnet_unsup>/rho<rho>`` of `stage` (one of
    `STAGE_NAMES`), resolved."""
    from deeplk.train import stage_folder

    return stage_folder(checkpoint_dir, stage, STAGE_NAMES, FAMILY)


def _stage_trained(path: Path) -> bool:
    from deeplk.train import RUN_CONFIG_NAME, has_weights

    return (path / RUN_CONFIG_NAME).is_file() and has_weights(path)


def latest_stage(checkpoint_dir, mode: str) -> int | None:
    """The last curriculum stage (rho) of `mode` with saved weights under `checkpoint_dir`."""
    done = [rho for rho in RHOS if _stage_trained(stage_dir(checkpoint_dir, _stage_name(mode, rho)))]
    return done[-1] if done else None


def _stage_model_config(path: Path) -> dict:
    from deeplk.train import read_run_config

    return _model_options(read_run_config(path, FAMILY).model)


def make_train_dataset(data_root, stage: str, batch_size: int = 8, seed: int = 0, pairs: str | None = None,
                       max_samples: int | None = None, rho_start: float | None = None, ramp_steps: int = 0):
    """Endless shuffled batches ``(input, template, corners)`` of a DLK folder's ``train2014``
    split for `stage` (one of `STAGE_NAMES`; its rho sets the synthetic offsets).

    Args:
        data_root: DLK-format dataset folder.
        batch_size, seed: batches and the seed of shuffling and of the synthetic pairs (the
            global seeds are set from it too, `deeplk.utils.seed_everything`).
        pairs: ``"synthetic"`` (on-the-fly pairs with offsets in [-rho, rho] cut from the training
            inputs, `with_synthetic_pairs`) or ``"dlk"`` (the dataset's own pairs); ``None``:
            `DEFAULT_PAIRS` of the stage's rho.
        max_samples: use only the first training samples.
        rho_start, ramp_steps: synthetic pairs only: the largest offset grows linearly from
            `rho_start` to rho over the first `ramp_steps` batches; ``None`` / 0: rho throughout.
    """
    from deeplk.data import load_dataset
    from deeplk.utils import seed_everything

    _, rho = _parse_stage(stage)
    pairs = pairs or DEFAULT_PAIRS[rho]
    if pairs not in ("synthetic", "dlk"):
        raise ValueError(f"`pairs` must be 'synthetic', 'dlk' or None, got {pairs!r}")
    if pairs == "dlk" and rho_start is not None and ramp_steps:
        raise ValueError("`rho_start` / `ramp_steps` need pairs='synthetic' (the DLK pairs have fixed offsets)")
    seed_everything(seed)
    ds = load_dataset(data_root, "train2014", batch_size=batch_size, shuffle=True, seed=seed, repeat=True,
                      max_samples=max_samples)
    if pairs == "synthetic":
        ds = with_synthetic_pairs(ds, rho, seed=seed, rho_start=rho_start, ramp_batches=ramp_steps)
    return ds


def train_stage(stage: str, dataset, checkpoint_dir="checkpoints", *, steps: int = 1000,
                learning_rate: float = 1e-4, seed: int = 0, model_config=None,
                task_options: dict | None = None, notes: dict | None = None, **train_options):
    """Train one stage of the rho curriculum (``stage="hnet_sup/rho16"`` ... `STAGE_NAMES`) with
    `deeplk.train.train`.

    Stage rho 32 starts from stage 16's latest weights when ``<checkpoint_dir>/<method>/rho16``
    holds any (its model options must then be the same, apart from `vgg_weights`); resuming stage
    32 itself continues from its own checkpoint.

    Args:
        stage: one of `STAGE_NAMES` (the method, supervised ``hnet_sup`` or unsupervised
            ``hnet_unsup``, and the rho).
        dataset: batches ``(input, template, corners)``, e.g. `make_train_dataset`.
        checkpoint_dir: root of the checkpoints; this stage writes to `stage_dir`.
        steps, learning_rate, seed: `deeplk.train.TrainConfig` fields.
        model_config: a `HomographyNetConfig` or some of its fields as a dict (e.g.
            ``{"vgg_weights": None, "input_scale": 0.25}``).
        task_options: unsupervised only: ``loss_pools``, pyramid levels of the photometric loss
            (e.g. ``(1, 8)``, see `pyramid_photometric_l1`; ``None``: ``(1,)``, the plain
            masked L1); ``outside_weight``, the weight of `outside_penalty` (``None``: 0).
        notes: settings to record in ``model_config.json`` (the data: ``pairs``, ``rho_start``
            ...).
        **train_options: further `deeplk.train.TrainConfig` fields (``lr_schedule``,
            ``log_every``, ``log_dir``, ``checkpoint_every``, ``progress``, ...).

    Returns:
        The `deeplk.train.TrainResult`.
    """
    from deeplk.train import TrainConfig, check_keys, train

    mode, rho = _parse_stage(stage)
    out = stage_dir(checkpoint_dir, stage)
    options = check_keys(task_options, ("loss_pools", "outside_weight"), "task_options", "homography_net.train_stage")
    loss_pools, outside_weight = options.get("loss_pools"), options.get("outside_weight")
    config = _model_options(model_config)  # checks the options before any work
    make_task(mode, config, loss_pools=loss_pools, outside_weight=outside_weight)  # checks the task options
    init_from = None
    if rho == RHOS[1]:
        previous = stage_dir(checkpoint_dir, _stage_name(mode, RHOS[0]))
        if _stage_trained(previous):
            init_from = previous
            prev_config = _stage_model_config(previous)
            differ = {k: (prev_config.get(k), config.get(k)) for k in set(prev_config) | set(config)
                      if k != "vgg_weights" and prev_config.get(k) != config.get(k)}
            if differ:
                raise ValueError(
                    f"the rho={RHOS[0]} stage in {previous} was trained with other model options "
                    f"(option: (stage {RHOS[0]}, now)): {differ}; use the same options"
                )
    task = make_task(mode, config, init_from=init_from, loss_pools=loss_pools, outside_weight=outside_weight)
    task.notes = {"rho": rho, "learning_rate": learning_rate, **(notes or {})}
    train_config = TrainConfig(steps=steps, learning_rate=learning_rate, seed=seed, checkpoint_dir=out,
                               **train_options)
    return train(task, dataset, train_config)


def load_stage_model(checkpoint_dir, mode: str, rho: int | None = None) -> tuple[HomographyNet, int]:
    """The trained model of a stage (default: the latest stage with weights) and its rho.

    Raises:
        FileNotFoundError: nothing trained for `mode` under `checkpoint_dir` (the message says
            how to train it).
    """
    from deeplk.train import RUN_CONFIG_NAME, load_run

    if rho is None:
        rho = latest_stage(checkpoint_dir, mode)
        if rho is None:
            name = MODES.get(mode, mode)
            raise FileNotFoundError(
                f"no trained {name} under {resolve(checkpoint_dir) / name}: expected "
                f"rho16/ or rho32/ with {RUN_CONFIG_NAME} and checkpoints; train it with "
                f"notebooks/02_train_homography_net.ipynb (mode={mode!r}) or "
                "deeplk.models.homography_net.train_stage"
            )
    path = stage_dir(checkpoint_dir, _stage_name(mode, rho))
    model, _ = load_run(path, lambda record: make_task(mode, {**_model_options(record.model), "vgg_weights": None}),
                        FAMILY)
    return model, rho


# ------------------------------------------------------------------------------------------
# Evaluation methods (deeplk.methods)


def _build_method(mode: str, checkpoint_dir=None, rho: int | None = None, batch_size: int = 64):
    model, _ = load_stage_model("checkpoints" if checkpoint_dir is None else checkpoint_dir, mode, rho)
    base = tf.constant(model.base_corners, tf.float32)
    s, t = model.input_size, model.template_size

    @tf.function(input_signature=[tf.TensorSpec((None, s, s, 3), tf.float32),
                                  tf.TensorSpec((None, t, t, 3), tf.float32)])
    def run(inputs, templates):
        return model((inputs, templates), training=False) + base

    def predict(inputs, templates):
        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        check_shape("inputs", inputs, (None, s, s, 3), "B x input x input x RGB")
        check_shape("templates", templates, (inputs.shape[0], t, t, 3), "B x template x template x RGB")
        parts = [run(inputs[i:i + batch_size], templates[i:i + batch_size]).numpy()
                 for i in range(0, len(inputs), batch_size)]
        corners = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 4, 2))
        failed = ~np.all(np.isfinite(corners), axis=(1, 2))
        corners[failed] = np.nan
        return corners, failed

    return predict


def build_hnet_sup_method(checkpoint_dir=None, rho: int | None = None, batch_size: int = 64):
    """Method ``hnet_sup``: the supervised HomographyNet of the latest stage under
    ``<checkpoint_dir>/hnet_sup/`` (``checkpoint_dir`` None: ``checkpoints``)."""
    return _build_method("supervised", checkpoint_dir, rho, batch_size)


def build_hnet_unsup_method(checkpoint_dir=None, rho: int | None = None, batch_size: int = 64):
    """Method ``hnet_unsup``: the unsupervised HomographyNet of the latest stage under
    ``<checkpoint_dir>/hnet_unsup/``."""
    return _build_method("unsupervised", checkpoint_dir, rho, batch_size)


def build_method(name: str, checkpoint_dir=None, **options):
    """The family's method builder (`deeplk.methods`): ``"hnet_sup"`` or ``"hnet_unsup"``
    (options ``rho``, ``batch_size``)."""
    modes = {v: k for k, v in MODES.items()}
    if name not in modes:
        raise ValueError(f"the homography_net family builds {sorted(modes)}, not {name!r}")
    return _build_method(modes[name], checkpoint_dir, **options)
