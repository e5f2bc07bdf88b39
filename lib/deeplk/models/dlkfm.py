"""DLKFM: per-level Siamese feature extractors, the convexity loss and coarse-to-fine inference.

Deep Lucas-Kanade Feature Maps (Zhao, Huang & Zhang, "Deep Lucas-Kanade Homography for
Multimodal Image Alignment", CVPR 2021) learn, for each of three pyramid levels, two feature
extractors (one for the input image, one for the template, *separate weights*) whose outputs make
the Lucas-Kanade objective convex-looking around the true homography even when the two images have
different intensities (map vs satellite, seasons). Alignment then runs the classical
inverse-compositional LK (`deeplk.lk`) on the learned features, coarse to fine.

**Extractor** (`FeatureExtractor`, one per level and branch): conv3x3 + BN + LeakyReLU,
``num_blocks`` residual blocks (conv-BN-LeakyReLU-conv-BN + skip, LeakyReLU), conv3x3 + BN +
LeakyReLU, then a final conv3x3 to ``channels`` outputs: the "regular" features. The 1-channel
"special" map is `deeplk.features.special_feature_map` of the regular output. Level 1 reads the
RGB images (192 / 128); levels 2 and 3 read the previous level's regular features with a stride-2
first conv (96 / 64, then 48 / 32). The stride-2 conv pads one pixel on each side and samples the
centres ``2 i`` of the finer level, so the coordinates of consecutive levels are related by
``x_coarse = x_fine / 2`` (``scale_homography(..., half_pixel_centers=False)``), used in training
and inference alike.

**Loss per level** (`dlkfm_loss`): with ``f(H)`` the mean squared difference between the
template features and the input features warped by ``H`` (over the valid pixels,
`alignment_mse`),

    loss = f(H*) + convexity_weight * sum_{p, sign, k} max(0, margin * (d_k - d_{k-1}) - (f_k - f_{k-1}))

where ``H*`` is the true homography at this level and, for each of ``P`` random perturbations
``delta_p`` of the four template corners (uniform in ``[-perturbation, perturbation]`` pixels of
the level per coordinate) and each direction ``sign = +-1``, ``f_k`` is ``f`` at the corners moved
by ``sign * t_k * delta_p`` (``t = 0, 1, 2``; ``f_0 = f(H*)``) and ``d_k = t_k^2 rho_p^2`` with
``rho_p^2`` the mean squared corner displacement in units of half the template side. The hinge asks
the loss to grow at least quadratically (``f(t) - f(0) >= margin rho^2 t^2``) and monotonically
along each sampled direction: the original code's formulation (its Eq. with ``t = 1, 2`` on both
sides of ``H*``), except that the perturbations move the corners instead of scaling the entries of
``H`` (a pixel-meaningful size at every level). The first term alone is minimised by constant
features; the hinge forbids that.

**Normalised features** (``normalise=True``, the default of new models): the loss and LK consume
the regular features standardised per sample and channel over the map (`standardise_features`).
Without it the regular features have no fixed scale and training on the multimodal demo shrank
them until the hinge was met in absolute terms with a nearly flat landscape (feature MSE 0.002 at
the truth, LK drifting from 2 px starts); standardised, the MSE per channel is ``2 (1 - corr)``.
The original code reaches scale invariance through the special map instead.

**MIND input** (``input_representation="mind"``): each level's extractor reads, instead of the
RGB image or the previous level's features, that level of the MIND descriptor pyramid of the
``lk_mind`` method (`deeplk.descriptors.mind`, 2x2 average pooling, blur `MIND_BLUR`) concatenated
with the image's own average pyramid (stride 1), and its output is *added* to the descriptor
(zero-padded to ``channels``). The heads start at zero, so the untrained model's features are the
descriptor pyramid and, with the aligner's defaults (``lk_mind``'s solver settings), it gives
``lk_mind``'s estimate; training starts from features that already align across modalities. The
levels are related by 2x2 pooling (``half_pixel_centers=True``; `DLKFMNet.half_pixel_centers`).
Use it with ``normalise=False`` (standardising would reweight the descriptor channels).

**Unrolled loss** (`DLKFMTask` ``loss="unrolled"``, `unrolled_lk_loss`): instead of the feature
MSE and convexity hinge, the mean corner error (full-resolution pixels) of ``unroll_iterations``
LK iterations at the level, started from the true corners each moved by up to
``start_perturbation`` pixels (the bound drawn per sample), differentiated through the solver:
what the evaluation measures, from starts like the initial guess's errors.

**Training** (`DLKFMTask`, through `deeplk.train.train`): level ``k``'s model holds the extractors
of levels ``1..k``; levels ``< k`` are loaded from the level ``k - 1`` checkpoint, run in inference
mode (batch-norm moving statistics) behind ``stop_gradient`` and are not among the trained
variables, so they stay exactly as loaded. Level ``k``'s checkpoint therefore holds the whole chain
``1..k`` it was trained with; inference loads the highest level's checkpoint (consistent even if a
lower level is retrained later).

**Checkpoint layout**: ``<checkpoint_dir>/dlkfm/level1|level2|level3/``, each the
``checkpoint_dir`` of one `deeplk.train.train` call, which writes ``model_config.json`` there
(the architecture and the loss settings, `DLKFMTask.run_config`). Folders of the older layout
(one ``<checkpoint_dir>/dlkfm/config.json`` for every level) still load.

**Inference** (`DLKFMAligner`, method ``dlkfm`` via `build_dlkfm_method`): features of every
level, then `deeplk.lk.pyramid_lucas_kanade` from the coarsest level to level 1 with the
homography rescaled between levels; the initial guess is the centred placement, SIFT + RANSAC
(centred where SIFT fails) or any predictor passed in (``init="mhn"``: `deeplk.methods` passes
the trained ``mhn`` method). No ground truth is used. With
``fold_batchnorm=True`` the features come from `FeatureExtractor.inference`, every batch norm
folded into its convolution (`fold_batchnorm`): the same values up to float32 rounding without
the separate multiply / add passes over the feature maps (``bench/dlkfm.py`` measures both).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_positive_int, check_shape
from deeplk.features import special_feature_map
from deeplk.geometry import (
    corners_to_homography,
    homography_to_corners,
    scale_homography,
)
from deeplk.geometry_np import centred_homography
from deeplk.lk.options import LKOptions
from deeplk.paths import resolve
from deeplk.warp import warp_image

__all__ = [
    "LEVELS",
    "FEATURE_TYPES",
    "INITS",
    "feature_residual",
    "METHOD_DESCRIPTIONS",
    "ResidualBlock",
    "FeatureExtractor",
    "fold_batchnorm",
    "DLKFMNet",
    "DLKFMConfig",
    "standardise_features",
    "alignment_mse",
    "convexity_hinge",
    "dlkfm_loss",
    "level_homography",
    "unrolled_lk_loss",
    "LOSSES",
    "INPUT_REPRESENTATIONS",
    "DLKFMTask",
    "train_stage",
    "DLKFMAligner",
    "FAMILY",
    "dlkfm_root",
    "STAGE_NAMES",
    "stage_dir",
    "level_dir",
    "level_architecture",
    "trained_levels",
    "load_dlkfm",
    "build_dlkfm_method",
    "build_method",
]

log = logging.getLogger(__name__)

#: The pyramid levels, finest (1, full resolution) to coarsest (3, quarter resolution).
LEVELS = (1, 2, 3)
FEATURE_TYPES = ("regular", "special")
INITS = ("centred", "sift", "mhn")
#: The family name in ``model_config.json`` (`deeplk.train.read_run_config`).
FAMILY = "dlkfm"
#: The stages `train_stage` trains, named by their run folder under the checkpoint folder.
STAGE_NAMES = tuple(f"dlkfm/level{k}" for k in LEVELS)
#: Architecture keys of ``model_config.json`` (the constructor arguments of `DLKFMNet` but
#: ``levels`` and ``seed``).
ARCH_KEYS = ("channels", "num_blocks", "leaky_alpha", "bn_momentum", "feature_type",
             "normalise", "input_representation")
#: What the extractors read (`DLKFMNet`'s ``input_representation``).
INPUT_REPRESENTATIONS = ("rgb", "mind")
#: Architecture keys that older ``model_config.json`` files lack, with the value they meant.
_ARCH_KEY_DEFAULTS = {"input_representation": "rgb"}
#: The MIND descriptor pyramid of ``input_representation="mind"``: `deeplk.descriptors.mind`
#: with its defaults (K channels), 2x2 average pooling, Gaussian blur per level (level 1 first),
#: as the ``lk_mind`` method's `deeplk.lk.align_images` builds it.
MIND_CHANNELS = 4
MIND_BLUR = {1: 0.0, 2: 1.0, 3: 1.0}
#: Default corner perturbation (pixels of the level, per coordinate) of the convexity loss.
DEFAULT_PERTURBATION = {1: 4.0, 2: 3.0, 3: 3.0}

#: `deeplk.lk.pyramid_lucas_kanade` options of the ``dlkfm`` method unless given.
DEFAULT_LK_OPTIONS = LKOptions(algorithm="esm", coarse_motions=(("translation", 10),))

METHOD_DESCRIPTIONS = {
    "dlkfm": "DLKFM: learned per-level Siamese features, inverse-compositional LK levels 3->2->1, "
             "centred / SIFT / MHN start",
}


def _check_level(name: str, level) -> int:
    if isinstance(level, bool) or level not in LEVELS:
        raise ValueError(f"`{name}` must be one of {LEVELS}, got {level!r}")
    return int(level)


def _check_feature_type(value) -> str:
    if value not in FEATURE_TYPES:
        raise ValueError(f"`feature_type` must be one of {FEATURE_TYPES}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def fold_batchnorm(conv: keras.layers.Conv2D, bn: keras.layers.BatchNormalization):
    """``(kernel, bias)`` of one convolution equal to `conv` followed by `bn` in inference mode.

    Inference-mode batch norm is the per-channel affine map ``y -> gamma (y - mean) /
    sqrt(var + eps) + beta`` (moving statistics), so it folds into the preceding convolution:
    ``kernel' = kernel * s`` and ``bias' = (bias - mean) * s + beta`` with ``s = gamma /
    sqrt(var + eps)`` per output channel. Computed from the current variables at every call (a
    few thousand numbers), so it follows later weight changes.

    Returns:
        ``kernel (kh, kw, C_in, C_out)`` and ``bias (C_out,)``, float32 tensors.
    """
    kernel = tf.convert_to_tensor(conv.kernel)
    scale = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        scale = scale * tf.convert_to_tensor(bn.gamma)
    bias = tf.convert_to_tensor(conv.bias) if conv.use_bias else tf.zeros_like(scale)
    bias = (bias - tf.convert_to_tensor(bn.moving_mean)) * scale
    if bn.center:
        bias = bias + tf.convert_to_tensor(bn.beta)
    return kernel * scale, bias


@keras.saving.register_keras_serializable(package="deeplk")
class ResidualBlock(keras.layers.Layer):
    """conv3x3-BN-LeakyReLU-conv3x3-BN plus the identity skip, then LeakyReLU.

    ``(B, H, W, channels) -> (B, H, W, channels)``.

    Args:
        channels: feature channels (input and output).
        leaky_alpha: negative slope of the LeakyReLU.
        bn_momentum: batch-norm moving-average momentum.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, channels: int, leaky_alpha: float = 0.2, bn_momentum: float = 0.9,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = check_positive_int("channels", channels)
        self.leaky_alpha = float(leaky_alpha)
        self.bn_momentum = float(bn_momentum)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(f"ResidualBlock with {self.channels} channels got an input of shape "
                             f"{tuple(input_shape)}")
        shape = tuple(input_shape[:-1]) + (self.channels,)
        self.conv1 = keras.layers.Conv2D(self.channels, 3, padding="same", use_bias=False,
                                         name="conv1")
        self.bn1 = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="bn1")
        self.conv2 = keras.layers.Conv2D(self.channels, 3, padding="same", use_bias=False,
                                         name="conv2")
        self.bn2 = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="bn2")
        for layer in (self.conv1, self.bn1, self.conv2, self.bn2):
            layer.build(shape)

    def call(self, x, training=None):
        y = self.bn1(self.conv1(x), training=training)
        y = tf.nn.leaky_relu(y, self.leaky_alpha)
        y = self.bn2(self.conv2(y), training=training)
        return tf.nn.leaky_relu(x + y, self.leaky_alpha)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, leaky_alpha=self.leaky_alpha,
                      bn_momentum=self.bn_momentum)
        return config


@keras.saving.register_keras_serializable(package="deeplk")
class FeatureExtractor(keras.layers.Layer):
    """One DLKFM branch at one level: ``(B, H, W, C_in) -> (B, H / stride, W / stride, channels)``.

    conv3x3 (stride 1 or 2) + BN + LeakyReLU, `num_blocks` `ResidualBlock`, conv3x3 + BN +
    LeakyReLU, final conv3x3 (with bias, linear) to `channels`: the "regular" features. With
    ``stride=2`` the first conv pads one pixel on each side and reads the pixels ``2 i - 1 .. 2 i +
    1``: output pixel ``i`` is centred on input pixel ``2 i`` (``ceil(H / 2)`` outputs, 192 -> 96).

    Args:
        channels: output (and hidden) channels; 64 in the paper.
        num_blocks: residual blocks; 3 in the paper.
        stride: 1 (level 1) or 2 (levels 2, 3).
        leaky_alpha, bn_momentum: see `ResidualBlock`.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, channels: int = 64, num_blocks: int = 3, stride: int = 1,
                 leaky_alpha: float = 0.2, bn_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_positive_int("channels", channels)
        if isinstance(num_blocks, bool) or int(num_blocks) != num_blocks or num_blocks < 0:
            raise ValueError(f"`num_blocks` must be an integer >= 0, got {num_blocks!r}")
        self.num_blocks = int(num_blocks)
        if stride not in (1, 2):
            raise ValueError(f"`stride` must be 1 or 2, got {stride!r}")
        self.stride = int(stride)
        self.leaky_alpha = float(leaky_alpha)
        self.bn_momentum = float(bn_momentum)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"FeatureExtractor expects (B, H, W, C) inputs, got {input_shape}")
        c = self.channels
        if self.stride == 2:
            self.stem = keras.layers.Conv2D(c, 3, strides=2, padding="valid", use_bias=False,
                                            name="stem")
        else:
            self.stem = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="stem")
        self.stem_bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="stem_bn")
        for i in range(self.num_blocks):  # attributes, not a list (see `DLKFMNet.build`)
            setattr(self, f"block{i}",
                    ResidualBlock(c, self.leaky_alpha, self.bn_momentum, name=f"block{i}"))
        self.mid = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="mid")
        self.mid_bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="mid_bn")
        self.head = keras.layers.Conv2D(c, 3, padding="same", name="head")
        self.stem.build(input_shape)
        hidden = (None, None, None, c)
        self.stem_bn.build(hidden)
        for block in self.blocks:
            block.build(hidden)
        for layer in (self.mid, self.mid_bn, self.head):
            layer.build(hidden)

    @property
    def blocks(self) -> list:
        return [getattr(self, f"block{i}") for i in range(self.num_blocks)]

    def call(self, x, training=None):
        if self.stride == 2:
            x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = tf.nn.leaky_relu(self.stem_bn(self.stem(x), training=training), self.leaky_alpha)
        for block in self.blocks:
            x = block(x, training=training)
        x = tf.nn.leaky_relu(self.mid_bn(self.mid(x), training=training), self.leaky_alpha)
        return self.head(x)

    def inference(self, x):
        """`call` in inference mode with every batch norm folded into its convolution
        (`fold_batchnorm`): each conv + BN + LeakyReLU is one ``Conv2D`` + ``BiasAdd`` +
        ``LeakyRelu`` chain, which TensorFlow's graph optimiser fuses into one op, instead of
        Keras's separate multiply / add passes over the feature maps. Same values as
        ``call(x, training=False)`` up to float32 rounding."""
        x = tf.convert_to_tensor(x)

        def conv_bn(y, conv, bn, stride=1, padding="SAME"):
            kernel, bias = fold_batchnorm(conv, bn)
            y = tf.nn.conv2d(y, tf.cast(kernel, y.dtype), stride, padding)
            return tf.nn.bias_add(y, tf.cast(bias, y.dtype))

        act = lambda y: tf.nn.leaky_relu(y, self.leaky_alpha)  # noqa: E731
        if self.stride == 2:
            x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            x = act(conv_bn(x, self.stem, self.stem_bn, 2, "VALID"))
        else:
            x = act(conv_bn(x, self.stem, self.stem_bn))
        for block in self.blocks:
            y = act(conv_bn(x, block.conv1, block.bn1))
            x = act(x + conv_bn(y, block.conv2, block.bn2))
        x = act(conv_bn(x, self.mid, self.mid_bn))
        head = tf.nn.conv2d(x, tf.cast(tf.convert_to_tensor(self.head.kernel), x.dtype), 1, "SAME")
        return tf.nn.bias_add(head, tf.cast(tf.convert_to_tensor(self.head.bias), x.dtype))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.stride == 2:
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
        return (b, h, w, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, num_blocks=self.num_blocks, stride=self.stride,
                      leaky_alpha=self.leaky_alpha, bn_momentum=self.bn_momentum)
        return config


@keras.saving.register_keras_serializable(package="deeplk")
class DLKFMNet(keras.Model):
    """The Siamese DLKFM feature network for levels ``1..levels``.

    ``call([images, templates])`` returns ``[input_1, template_1, ..., input_L, template_L]``, the
    regular features of every level (level 1 at full resolution, each next level half the size).
    `extract` does the same with per-level training flags and gradient stops (for training one
    level with the earlier ones frozen); `lk_features` gives the maps LK aligns (regular or
    special, by `feature_type`).

    Args:
        levels: number of levels built (1, 2 or 3).
        channels, num_blocks, leaky_alpha, bn_momentum: of every `FeatureExtractor`.
        feature_type: ``"regular"`` (LK on the ``channels``-channel features) or ``"special"``
            (LK on `deeplk.features.special_feature_map` of them); used by the loss and by
            inference.
        normalise: standardise the regular features the loss and LK consume, per sample and
            channel over the map (`standardise_features`), before the special map if any. The
            regular features have no fixed scale otherwise: training can shrink them until the
            convexity hinge is met in absolute terms while the landscape is flat (seen on the
            multimodal demo); standardised, the MSE is ``2 (1 - correlation)`` per channel.
        seed: seed of ``loss_rng``, the `keras.random.SeedGenerator` the training loss draws its
            perturbations from.
        input_representation: ``"rgb"`` (the paper's chain of extractors on the images) or
            ``"mind"`` (per level a residual on the MIND descriptor pyramid; see the module
            docstring; ``channels >= MIND_CHANNELS``).
        **kwargs: `keras.Model` arguments (``name``).
    """

    def __init__(self, levels: int = 3, channels: int = 64, num_blocks: int = 3,
                 leaky_alpha: float = 0.2, bn_momentum: float = 0.9,
                 feature_type: str = "regular", normalise: bool = False, seed: int = 0,
                 input_representation: str = "rgb", **kwargs):
        super().__init__(**kwargs)
        self.levels = _check_level("levels", levels)
        if input_representation not in INPUT_REPRESENTATIONS:
            raise ValueError(f"`input_representation` must be one of {INPUT_REPRESENTATIONS}, "
                             f"got {input_representation!r}")
        self.input_representation = input_representation
        if input_representation == "mind" and channels < MIND_CHANNELS:
            raise ValueError(f"`channels` must be at least {MIND_CHANNELS} (the MIND channels) "
                             f"with input_representation='mind', got {channels!r}")
        if not isinstance(normalise, (bool, np.bool_)):
            raise ValueError(f"`normalise` must be a bool, got {normalise!r}")
        self.normalise = bool(normalise)
        self.seed = int(seed)
        self.channels = check_positive_int("channels", channels)
        self.num_blocks = int(num_blocks)
        self.leaky_alpha = float(leaky_alpha)
        self.bn_momentum = float(bn_momentum)
        self.feature_type = _check_feature_type(feature_type)
        FeatureExtractor(self.channels, self.num_blocks)  # validates the arguments

    def build(self, input_shape=None):
        # Random state of the loss's perturbation sampler: a model variable, so that training
        # checkpoints and resumes it.
        self.loss_rng = keras.random.SeedGenerator(self.seed, name="loss_rng")
        # One attribute per sublayer: `tf.train.Checkpoint` (the training loop's checkpoints)
        # does not see layers held in a Python list by a Keras 3 layer.
        mind = self.input_representation == "mind"
        for k in range(1, self.levels + 1):
            stride = 1 if k == 1 or mind else 2
            c_in = MIND_CHANNELS + 3 if mind else 3 if k == 1 else self.channels
            for branch in ("input", "template"):
                ext = FeatureExtractor(self.channels, self.num_blocks, stride, self.leaky_alpha,
                                       self.bn_momentum, name=f"level{k}_{branch}")
                ext.build((None, None, None, c_in))
                if mind:  # the residual starts at 0: the untrained model gives the descriptor
                    ext.head.kernel.assign(tf.zeros_like(ext.head.kernel))
                    ext.head.bias.assign(tf.zeros_like(ext.head.bias))
                setattr(self, f"level{k}_{branch}", ext)
        self.built = True

    @property
    def half_pixel_centers(self) -> bool:
        """Coordinate convention between levels: False for ``"rgb"`` (stride-2 convolutions,
        ``x_coarse = x_fine / 2``), True for ``"mind"`` (2x2 average pooling)."""
        return self.input_representation == "mind"

    def descriptor_pyramid(self, images, levels: Optional[int] = None) -> list:
        """``input_representation="mind"``: per level (level 1 first) the MIND descriptor of
        `images` (2x2 average pyramid, blurred by `MIND_BLUR`) concatenated with the images'
        own 2x2 average pyramid: ``(B, H_k, W_k, MIND_CHANNELS + 3)``. The first
        `MIND_CHANNELS` channels are what the ``lk_mind`` method aligns at that level."""
        from deeplk.descriptors import mind
        from deeplk.lk import build_pyramid, gaussian_blur

        levels = self.levels if levels is None else levels
        images = tf.convert_to_tensor(images)
        desc = build_pyramid(mind(images), levels)[::-1]
        rgb = build_pyramid(images, levels)[::-1]
        return [tf.concat([gaussian_blur(d, MIND_BLUR[k]), r], axis=-1)
                for k, (d, r) in enumerate(zip(desc, rgb), start=1)]

    @property
    def input_extractors(self) -> list:
        """The input-branch `FeatureExtractor` of each level (level 1 first)."""
        return [getattr(self, f"level{k}_input") for k in range(1, self.levels + 1)]

    @property
    def template_extractors(self) -> list:
        """The template-branch `FeatureExtractor` of each level (level 1 first)."""
        return [getattr(self, f"level{k}_template") for k in range(1, self.levels + 1)]

    def extractor_variables(self, level: int, trainable_only: bool = True) -> list:
        """Variables of the two extractors of `level` (trainable ones only by default)."""
        level = _check_level("level", level)
        if level > self.levels:
            raise ValueError(f"this model has {self.levels} levels, asked for level {level}")
        layers = (self.input_extractors[level - 1], self.template_extractors[level - 1])
        if trainable_only:
            return [v for layer in layers for v in layer.trainable_variables]
        return [v for layer in layers for v in layer.weights]

    def extract(self, images, templates, train_level: Optional[int] = None, training=False,
                fold_batchnorm: bool = False):
        """Regular features per level: ``[(input_1, template_1), ..., (input_L, template_L)]``.

        Args:
            images: ``(B, Hi, Wi, 3)`` input images in [0, 1].
            templates: ``(B, h, w, 3)`` templates.
            train_level: the level being trained (``None``: inference). Levels below it run in
                inference mode behind ``stop_gradient``; levels above it are not computed.
            training: batch-norm mode of `train_level` (or of every level if it is ``None``).
            fold_batchnorm: inference only (``train_level=None``, ``training=False``): run
                `FeatureExtractor.inference` (batch norms folded into the convolutions; same
                values up to float32 rounding, faster).
        """
        images = tf.convert_to_tensor(images)
        templates = tf.convert_to_tensor(templates)
        check_shape("images", images, (None, None, None, 3), "B x H x W x 3 RGB")
        check_shape("templates", templates, (None, None, None, 3), "B x h x w x 3 RGB")
        last = self.levels if train_level is None else _check_level("train_level", train_level)
        if last > self.levels:
            raise ValueError(f"`train_level` {last} is above the model's {self.levels} levels")
        if fold_batchnorm and (train_level is not None or training):
            raise ValueError("`fold_batchnorm=True` is for inference only (train_level=None, "
                             f"training=False), got train_level={train_level!r}, "
                             f"training={training!r}")
        if self.input_representation == "mind":
            return self._extract_mind(images, templates, last, train_level, training,
                                      fold_batchnorm)
        out, x, t = [], images, templates
        if fold_batchnorm:
            for k in range(1, last + 1):
                x = self.input_extractors[k - 1].inference(x)
                t = self.template_extractors[k - 1].inference(t)
                out.append((x, t))
            return out
        for k in range(1, last + 1):
            frozen = train_level is not None and k < train_level
            mode = False if frozen else training
            x = self.input_extractors[k - 1](x, training=mode)
            t = self.template_extractors[k - 1](t, training=mode)
            if frozen:
                x, t = tf.stop_gradient(x), tf.stop_gradient(t)
            out.append((x, t))
        return out

    def _extract_mind(self, images, templates, last, train_level, training, fold_batchnorm,
                      first: int = 1):
        """`extract` for ``input_representation="mind"``: level ``k``'s features are its MIND
        descriptor (zero-padded to ``channels``) plus the level's extractor applied to
        `descriptor_pyramid` (a residual; no level reads another), for levels ``first..last``."""
        out = []
        pyramids = (self.descriptor_pyramid(images, last),
                    self.descriptor_pyramid(templates, last))
        for k in range(first, last + 1):
            frozen = train_level is not None and k < train_level
            mode = False if frozen else training
            pair = []
            for ext, pyr in zip((self.input_extractors[k - 1], self.template_extractors[k - 1]),
                                pyramids):
                x = pyr[k - 1]
                base = tf.pad(x[..., :MIND_CHANNELS],
                              [[0, 0], [0, 0], [0, 0], [0, self.channels - MIND_CHANNELS]])
                f = base + (ext.inference(x) if fold_batchnorm else ext(x, training=mode))
                pair.append(tf.stop_gradient(f) if frozen else f)
            out.append(tuple(pair))
        return out

    def lk_features(self, features, feature_type: Optional[str] = None):
        """The maps LK aligns for one level's regular features (a pair or a single tensor).

        Half-precision features (a model built under the ``mixed_float16`` policy) are cast to
        float32 first: the standardisation, the special map, the losses' warps and LK run in
        float32."""
        kind = self.feature_type if feature_type is None else _check_feature_type(feature_type)

        def one(f):
            if f.dtype in (tf.float16, tf.bfloat16):
                f = tf.cast(f, tf.float32)
            if self.normalise:
                f = standardise_features(f)
            return f if kind == "regular" else special_feature_map(f)

        if isinstance(features, (tuple, list)):
            return type(features)(one(f) for f in features)
        return one(features)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("DLKFMNet expects [images, templates]")
        pairs = self.extract(inputs[0], inputs[1], training=training)
        return [f for pair in pairs for f in pair]

    def get_config(self):
        config = super().get_config()
        config.update(levels=self.levels, channels=self.channels, num_blocks=self.num_blocks,
                      leaky_alpha=self.leaky_alpha, bn_momentum=self.bn_momentum,
                      feature_type=self.feature_type, normalise=self.normalise,
                      seed=self.seed, input_representation=self.input_representation)
        return config

    def architecture(self) -> dict:
        """The `ARCH_KEYS` of this model (what ``model_config.json`` records)."""
        return {k: getattr(self, k) for k in ARCH_KEYS}


@dataclass
class DLKFMConfig:
    """The DLKFM architecture (`ARCH_KEYS`: the `DLKFMNet` arguments but ``levels`` and
    ``seed``), validated on construction; invalid values raise ``ValueError`` naming the field.
    New models normalise their features (``normalise=True``)."""

    channels: int = 64
    num_blocks: int = 3
    leaky_alpha: float = 0.2
    bn_momentum: float = 0.9
    feature_type: str = "regular"
    normalise: bool = True
    input_representation: str = "rgb"

    def __post_init__(self):
        for key, value in DLKFMNet(levels=1, **asdict(self)).architecture().items():
            setattr(self, key, value)

    def to_dict(self) -> dict:
        return asdict(self)


def make_dlkfm_net(levels: int, seed: int = 0, **arch) -> DLKFMNet:
    """A built `DLKFMNet` (any input size and batch)."""
    model = DLKFMNet(levels=levels, seed=seed, **arch)
    model.build([(None, None, None, 3), (None, None, None, 3)])
    return model


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def standardise_features(features, epsilon: float = 1e-5) -> tf.Tensor:
    """Per-sample, per-channel standardisation over the spatial axes.

    Args:
        features: ``(B, H, W, C)`` floating feature maps.
        epsilon: added to the variance (a constant channel becomes 0, not 0/0).

    Returns:
        ``(features - mean) / sqrt(var + epsilon)`` with the mean and (biased) variance of each
        sample's channel over its ``H x W`` pixels; same shape and dtype.
    """
    x = tf.convert_to_tensor(features)
    check_shape("features", x, (None, None, None, None), "B x H x W x C feature maps")
    if not x.dtype.is_floating:
        raise ValueError(f"`features` must be a floating tensor, got dtype {x.dtype.name}")
    if not (np.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"`epsilon` must be a positive number, got {epsilon!r}")
    mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + tf.cast(epsilon, x.dtype))


def alignment_mse(input_features, template_features, input_H_template) -> tf.Tensor:
    """Mean squared feature difference after warping the input features onto the template.

    Args:
        input_features: ``(B, Hi, Wi, C)`` features of the input image.
        template_features: ``(B, h, w, C)`` features of the template (static ``h, w``).
        input_H_template: ``(B, 3, 3)`` template pixels -> input pixels (at this level).

    Returns:
        ``(B,)`` mean over the valid pixels (those sampling inside the input) and channels of
        ``(warp(input) - template)^2``; 0 where no pixel is valid.
    """
    fi = tf.convert_to_tensor(input_features)
    ft = tf.convert_to_tensor(template_features, fi.dtype)
    check_shape("input_features", fi, (None, None, None, None), "B x Hi x Wi x C")
    check_shape("template_features", ft, (None, None, None, fi.shape[-1]), "B x h x w x C")
    H = tf.cast(tf.convert_to_tensor(input_H_template), fi.dtype)
    check_shape("input_H_template", H, (None, 3, 3), "B x 3 x 3")
    h, w = ft.shape[1], ft.shape[2]
    if h is None or w is None:
        raise ValueError(f"`template_features` must have a static size, got {tuple(ft.shape)}")
    warped, mask = warp_image(fi, H, (int(h), int(w)))
    sq = tf.reduce_sum(tf.square(warped - ft) * mask, axis=[1, 2, 3])
    count = tf.reduce_sum(mask, axis=[1, 2, 3]) * tf.cast(tf.shape(ft)[-1], fi.dtype)
    return sq / tf.maximum(count, 1.0)


def convexity_hinge(losses, sq_distances, margin: float = 1.0) -> tf.Tensor:
    """The paper's convexity hinge along sampled rays from the true parameters.

    Args:
        losses: ``(..., T + 1)`` loss values ``f(t_0 = 0), f(t_1), ..., f(t_T)`` along a ray
            (``t`` increasing).
        sq_distances: ``(..., T + 1)`` matching squared distances ``d(t_k)`` from the true
            parameters (``d(t_0) = 0``).
        margin: required growth per unit squared distance.

    Returns:
        ``(...)``: ``sum_k max(0, margin * (d_k - d_{k-1}) - (f_k - f_{k-1}))``, zero iff the loss
        grows along the ray by at least ``margin`` times the growth of the squared distance at
        every step (e.g. ``f(t) = a t^2 + c`` with ``d = t^2``, ``a >= margin``).
    """
    f = tf.convert_to_tensor(losses)
    d = tf.cast(tf.convert_to_tensor(sq_distances), f.dtype)
    if f.shape.rank is None or f.shape.rank < 1 or (f.shape[-1] is not None and f.shape[-1] < 2):
        raise ValueError(f"`losses` must have a last axis of at least 2 values, got shape "
                         f"{tuple(f.shape)}")
    if d.shape != f.shape:
        raise ValueError(f"`sq_distances` must have the shape of `losses` {tuple(f.shape)}, got "
                         f"{tuple(d.shape)}")
    gain = f[..., 1:] - f[..., :-1]
    need = margin * (d[..., 1:] - d[..., :-1])
    return tf.reduce_sum(tf.nn.relu(need - gain), axis=-1)


def dlkfm_loss(input_features, template_features, input_H_template, perturbations,
               convexity_weight: float = 0.2, margin: float = 1.0,
               steps: Sequence[float] = (1.0, 2.0)):
    """DLKFM's per-level loss: ``f(H*) + convexity_weight * hinge`` (see the module docstring).

    Args:
        input_features: ``(B, Hi, Wi, C)`` input features at this level (regular or special).
        template_features: ``(B, h, w, C)`` template features.
        input_H_template: ``(B, 3, 3)`` true homography at this level.
        perturbations: ``(B, P, 4, 2)`` corner displacements ``delta_p`` (pixels of the level);
            each is applied as ``+- t * delta_p`` for every ``t`` in `steps`.
        convexity_weight: weight of the hinge (0.1-0.2 in the paper).
        margin: see `convexity_hinge`; distances are mean squared corner displacements in units
            of half the template side.
        steps: increasing positive multiples ``t`` of each perturbation.

    Returns:
        ``(total, mse, hinge)``, each ``(B,)``; ``total = mse + convexity_weight * hinge``, the
        hinge summed over perturbations, both directions and the steps.
    """
    fi = tf.convert_to_tensor(input_features)
    ft = tf.convert_to_tensor(template_features, fi.dtype)
    H = tf.stop_gradient(tf.cast(tf.convert_to_tensor(input_H_template), fi.dtype))
    delta = tf.cast(tf.convert_to_tensor(perturbations), fi.dtype)
    check_shape("perturbations", delta, (None, None, 4, 2), "B x P x 4 corners x (x, y)")
    steps = [float(s) for s in steps]
    if not steps or any(s <= 0 for s in steps) or sorted(steps) != steps:
        raise ValueError(f"`steps` must be increasing positive numbers, got {steps!r}")
    h, w = int(ft.shape[1]), int(ft.shape[2])
    half = max(h - 1, w - 1, 1) / 2.0
    mse = alignment_mse(fi, ft, H)
    hinge = tf.zeros_like(mse)
    num_p = delta.shape[1]
    if num_p is None:
        raise ValueError("`perturbations` must have a static number P of perturbations")
    if num_p > 0 and convexity_weight > 0:
        corners = tf.stop_gradient(homography_to_corners(H, (h, w)))
        for p in range(num_p):
            d = delta[:, p]
            rho2 = tf.reduce_mean(tf.reduce_sum(tf.square(d / half), axis=-1), axis=-1)  # (B,)
            for sign in (1.0, -1.0):
                fs, ds = [mse], [tf.zeros_like(rho2)]
                for t in steps:
                    Hp = tf.stop_gradient(corners_to_homography(corners + sign * t * d, (h, w)))
                    fs.append(alignment_mse(fi, ft, Hp))
                    ds.append(rho2 * t * t)
                hinge += convexity_hinge(tf.stack(fs, -1), tf.stack(ds, -1), margin)
    return mse + convexity_weight * hinge, mse, hinge


def level_homography(corners, level: int, template_size=(128, 128),
                     half_pixel_centers: bool = False) -> tf.Tensor:
    """The true ``input_H_template`` at `level` from full-resolution corners ``(B, 4, 2)``.

    Coordinates of consecutive levels are related by ``x_coarse = x_fine / 2`` (the stride-2
    layers sample the even pixels), hence ``scale_homography(H, 0.5 ** (level - 1),
    half_pixel_centers=False)``; a model on the MIND pyramid (2x2 average pooling) passes
    ``half_pixel_centers=True`` (`DLKFMNet.half_pixel_centers`).
    """
    level = _check_level("level", level)
    H = corners_to_homography(corners, template_size)
    if level == 1:
        return H
    return scale_homography(H, 0.5 ** (level - 1), half_pixel_centers=half_pixel_centers)


#: Training objectives of `DLKFMTask` (``loss``).
LOSSES = ("convexity", "unrolled")


def unrolled_lk_loss(input_features, template_features, corners, start_corners, level: int,
                     template_size, half_pixel_centers: bool, options) -> tf.Tensor:
    """Mean corner error (full-resolution pixels) of LK at `level` started from `start_corners`.

    Runs `deeplk.lk.lucas_kanade` on the level's features from ``start_corners`` (full
    resolution, scaled to the level), differentiably through every iteration, and returns the
    mean over the four corners of the Euclidean distance between the result's corners (back at
    full resolution) and the true `corners`.

    Args:
        input_features, template_features: ``(B, Hi, Wi, C)`` / ``(B, h, w, C)`` at `level`.
        corners, start_corners: ``(B, 4, 2)`` true and starting corners at full resolution.
        level: the pyramid level of the features (1, 2, 3).
        template_size: ``(h, w)`` of the full-resolution template.
        half_pixel_centers: coordinate convention between levels (`DLKFMNet.half_pixel_centers`).
        options: `deeplk.lk.LKOptions` (one level) of the unrolled solver.

    Returns:
        ``(B,)`` mean corner error in pixels.
    """
    from deeplk.lk import lucas_kanade

    fi = tf.convert_to_tensor(input_features)
    level = _check_level("level", level)
    scale = 0.5 ** (level - 1)
    corners = tf.cast(corners, fi.dtype)
    H0 = scale_homography(corners_to_homography(tf.cast(start_corners, fi.dtype), template_size),
                          scale, half_pixel_centers)
    result = lucas_kanade(fi, template_features, tf.stop_gradient(H0), options, jit_compile=False)
    H = scale_homography(result.H, 1.0 / scale, half_pixel_centers)
    est = homography_to_corners(H, template_size)
    dist = tf.sqrt(tf.reduce_sum(tf.square(est - corners), axis=-1) + 1e-6)
    return tf.reduce_mean(dist, axis=-1)


# --------------------------------------------------------------------------------------------
# Checkpoint layout and config
# --------------------------------------------------------------------------------------------


def dlkfm_root(checkpoint_dir=None) -> Path:
    """``<checkpoint_dir>/dlkfm`` (``checkpoint_dir`` defaults to ``checkpoints``; relative paths
    are under the project root)."""
    return resolve("checkpoints" if checkpoint_dir is None else checkpoint_dir) / "dlkfm"


def level_dir(checkpoint_dir, level: int) -> Path:
    """``<checkpoint_dir>/dlkfm/level<k>``: the `deeplk.train.TrainConfig.checkpoint_dir` of
    level ``k``."""
    return dlkfm_root(checkpoint_dir) / f"level{_check_level('level', level)}"


def stage_dir(checkpoint_dir, stage: str) -> Path:
    """The run folder ``<checkpoint_dir>/<stage>`` of `stage` (one of `STAGE_NAMES`)."""
    from deeplk.train import stage_folder

    return stage_folder(checkpoint_dir, stage, STAGE_NAMES, FAMILY)


def level_architecture(checkpoint_dir, level: int) -> dict | None:
    """The architecture recorded for `level` (``None``: that level has no run folder config)."""
    from deeplk.train import read_run_config

    folder = level_dir(checkpoint_dir, level)
    try:
        arch = read_run_config(folder, FAMILY).model
    except FileNotFoundError:
        return None
    arch = {**_ARCH_KEY_DEFAULTS, **arch}
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"the DLKFM config of {folder} lacks the keys {missing}")
    return {k: arch[k] for k in ARCH_KEYS}


def trained_levels(checkpoint_dir) -> list[int]:
    """Levels whose folder under ``<checkpoint_dir>/dlkfm`` holds weights."""
    from deeplk.train import has_weights

    return [k for k in LEVELS if has_weights(level_dir(checkpoint_dir, k))]


# --------------------------------------------------------------------------------------------
# Training task
# --------------------------------------------------------------------------------------------


class DLKFMTask:
    """`deeplk.train.TrainTask` for one DLKFM level (earlier levels frozen).

    Batches are ``(inputs (B, 192, 192, 3), templates (B, 128, 128, 3), corners (B, 4, 2))`` as
    from `deeplk.data.load_dataset`. Train with
    ``TrainConfig(checkpoint_dir=task.checkpoint_dir, ...)``.

    Args:
        level: 1, 2 or 3. Levels 2 and 3 need the level below trained in the same
            `checkpoint_dir` (its weights of levels ``< level`` are loaded and frozen).
        checkpoint_dir: the parent of ``dlkfm/`` (e.g. ``checkpoints``).
        channels, num_blocks, leaky_alpha, bn_momentum, feature_type, normalise,
        input_representation: the architecture (`DLKFMNet`; new models default to ``normalise=True``); for levels 2
            and 3 ``None`` (default) reads it from level ``k - 1``'s ``model_config.json``, an
            explicit value must match it.
        num_perturbations: ``P`` corner perturbations per sample (2-4 in the paper).
        convexity_weight, margin, steps: see `dlkfm_loss`.
        perturbation: maximum corner displacement (pixels of the level, per coordinate) at
            ``t = 1``; ``None``: `DEFAULT_PERTURBATION` of the level.
        seed: seed of the perturbation sampler (checkpointed with the model).
        load_previous: load the frozen levels from the level below (False: leave them
            initialised, e.g. when the caller restores a checkpoint of this level anyway).
            With ``input_representation="mind"`` given and no level below trained, the levels
            below stay as built (the MIND descriptor: the residuals start at zero).
        notes: training settings recorded in ``model_config.json`` (data folder, batch size ...).
        jit_compile: compile the loss (features, warps, perturbations) with XLA. Off by
            default: on the shared 2-core CPU XLA took ~90 s to compile the step and ran it no
            faster than graph mode (faster on an idle machine; measure with bench/dlkfm.py).
        loss: ``"convexity"`` (`dlkfm_loss`) or ``"unrolled"`` (`unrolled_lk_loss`; the
            metric ``mse`` is then the feature MSE at the truth, for monitoring).
        start_perturbation: ``loss="unrolled"``: the largest start offset per corner
            coordinate, full-resolution pixels; each sample draws its bound uniformly in
            ``[0, start_perturbation]``.
        unroll_iterations, unroll_algorithm: ``loss="unrolled"``: LK iterations (all run:
            tolerance 0) and update rule (``"esm"`` or ``"inverse_compositional"``).
    """

    def __init__(self, level: int, checkpoint_dir="checkpoints", *, channels=None,
                 num_blocks=None, leaky_alpha=None, bn_momentum=None, feature_type=None,
                 normalise=None, input_representation=None, num_perturbations: int = 2,
                 convexity_weight: float = 0.2,
                 margin: float = 1.0, steps: Sequence[float] = (1.0, 2.0),
                 perturbation: Optional[float] = None, seed: int = 0,
                 load_previous: bool = True, jit_compile: bool = False,
                 loss: str = "convexity", start_perturbation: float = 16.0,
                 unroll_iterations: int = 10, unroll_algorithm: str = "esm",
                 notes: Optional[dict] = None):
        self.level = _check_level("level", level)
        self.notes = dict(notes or {})
        self.root_parent = checkpoint_dir
        self.checkpoint_dir = level_dir(checkpoint_dir, self.level)
        given = dict(channels=channels, num_blocks=num_blocks, leaky_alpha=leaky_alpha,
                     bn_momentum=bn_momentum, feature_type=feature_type, normalise=normalise,
                     input_representation=input_representation)
        defaults = DLKFMConfig().to_dict()
        saved = level_architecture(checkpoint_dir, self.level - 1) if self.level > 1 else None
        # MIND levels are independent and an untrained one is the descriptor itself: a level
        # above untrained ones keeps them as built.
        if self.level > 1 and saved is None and input_representation == "mind":
            load_previous = False
        if self.level > 1 and saved is None and load_previous:
            raise FileNotFoundError(
                f"level {self.level} needs level {self.level - 1} trained first, but "
                f"{level_dir(checkpoint_dir, self.level - 1)} holds no trained model"
            )
        if saved is not None:
            for k, v in given.items():
                if v is not None and v != saved[k]:
                    raise ValueError(
                        f"`{k}`={v!r} differs from {saved[k]!r} recorded for level "
                        f"{self.level - 1} in {level_dir(checkpoint_dir, self.level - 1)} "
                        f"(levels 2 and 3 must use the architecture of level 1)")
            self.arch = dict(saved)
        else:
            self.arch = {k: defaults[k] if v is None else v for k, v in given.items()}
        self.arch = DLKFMConfig(**self.arch).to_dict()  # validates
        if isinstance(num_perturbations, bool) or int(num_perturbations) != num_perturbations \
                or num_perturbations < 0:
            raise ValueError(f"`num_perturbations` must be an integer >= 0, got "
                             f"{num_perturbations!r}")
        self.num_perturbations = int(num_perturbations)
        if not (np.isfinite(convexity_weight) and convexity_weight >= 0):
            raise ValueError(f"`convexity_weight` must be >= 0, got {convexity_weight!r}")
        self.convexity_weight = float(convexity_weight)
        self.margin = float(margin)
        self.steps = tuple(float(s) for s in steps)
        p = DEFAULT_PERTURBATION[self.level] if perturbation is None else perturbation
        if not (np.isfinite(p) and p > 0):
            raise ValueError(f"`perturbation` must be a positive number, got {perturbation!r}")
        self.perturbation = float(p)
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if not (np.isfinite(start_perturbation) and start_perturbation >= 0):
            raise ValueError(f"`start_perturbation` must be a number >= 0, got "
                             f"{start_perturbation!r}")
        self.start_perturbation = float(start_perturbation)
        self.unroll_iterations = check_positive_int("unroll_iterations", unroll_iterations)
        self.unroll_options = LKOptions(max_iterations=self.unroll_iterations, tolerance=0.0,
                                        algorithm=unroll_algorithm)
        from deeplk.lk.solver import _SINGLE_DEFAULTS

        self.unroll_options.resolve(1, **_SINGLE_DEFAULTS)  # validates the algorithm
        self.seed = int(seed)
        self.load_previous = bool(load_previous)
        self.jit_compile = bool(jit_compile)
        self._compiled: dict = {}
        if self.level > 1 and self.load_previous:
            from deeplk.train import has_weights

            below = level_dir(checkpoint_dir, self.level - 1)
            if not has_weights(below):
                raise FileNotFoundError(
                    f"level {self.level} needs level {self.level - 1} trained first: no "
                    f"checkpoint in {below}")

    def build_model(self) -> DLKFMNet:
        model = make_dlkfm_net(self.level, seed=self.seed, **self.arch)
        if self.level > 1 and self.load_previous:
            previous = load_dlkfm(self.root_parent, self.level - 1)
            for k in range(1, self.level):
                for a, b in ((model.input_extractors, previous.input_extractors),
                             (model.template_extractors, previous.template_extractors)):
                    a[k - 1].set_weights(b[k - 1].get_weights())
        return model

    def run_config(self) -> dict:
        """What `deeplk.train.train` writes to ``model_config.json``."""
        task = dict(level=self.level, num_perturbations=self.num_perturbations,
                    convexity_weight=self.convexity_weight, margin=self.margin, steps=list(self.steps),
                    perturbation=self.perturbation, seed=self.seed, loss=self.loss)
        if self.loss == "unrolled":
            task.update(start_perturbation=self.start_perturbation,
                        unroll_iterations=self.unroll_iterations,
                        unroll_algorithm=self.unroll_options.algorithm)
        task.update(self.notes)
        return {"family": FAMILY, "model": dict(self.arch), "task": task}

    def trainable_variables(self, model: DLKFMNet) -> list:
        return model.extractor_variables(self.level)

    def compute_loss(self, model: DLKFMNet, batch, training: bool):
        if self.jit_compile:
            fn = self._compiled.get(id(model))
            if fn is None:
                fn = tf.function(self._loss, jit_compile=True, autograph=False)
                self._compiled = {id(model): fn}
            loss, mse, hinge = fn(model, batch, training)
        else:
            loss, mse, hinge = self._loss(model, batch, training)
        if self.loss == "unrolled":
            return loss, {"mse": mse}
        return loss, {"mse": mse, "convexity": hinge}

    def _loss(self, model: DLKFMNet, batch, training: bool):
        inputs, templates, corners = batch
        if model.input_representation == "mind":  # levels are independent: only this one
            fi, ft = model._extract_mind(inputs, templates, self.level, self.level, training,
                                         False, first=self.level)[-1]
        else:
            fi, ft = model.extract(inputs, templates, train_level=self.level,
                                   training=training)[-1]
        fi, ft = model.lk_features((fi, ft))
        size = tuple(templates.shape[1:3])
        batch_size = tf.shape(corners)[0]
        if self.loss == "unrolled":
            # Starts: the true corners moved by up to `start_perturbation` px (full
            # resolution) per coordinate, the bound drawn per sample (near and far starts).
            bound = keras.random.uniform(tf.stack([batch_size, 1, 1]), 0.0,
                                         self.start_perturbation, seed=model.loss_rng)
            noise = keras.random.uniform(tf.stack([batch_size, 4, 2]), -1.0, 1.0,
                                         seed=model.loss_rng)
            corners = tf.cast(corners, fi.dtype)
            err = unrolled_lk_loss(fi, ft, corners, corners + bound * noise, self.level, size,
                                   model.half_pixel_centers, self.unroll_options)
            err = tf.reduce_mean(err)
            return err, tf.reduce_mean(alignment_mse(
                fi, ft, level_homography(corners, self.level, size, model.half_pixel_centers))), \
                tf.zeros_like(err)
        H = level_homography(corners, self.level, size, model.half_pixel_centers)
        delta = keras.random.uniform(
            tf.stack([batch_size, self.num_perturbations, 4, 2]), -self.perturbation,
            self.perturbation, seed=model.loss_rng)
        total, mse, hinge = dlkfm_loss(fi, ft, H, delta, self.convexity_weight, self.margin,
                                       self.steps)
        return tf.reduce_mean(total), tf.reduce_mean(mse), tf.reduce_mean(hinge)


def train_stage(stage: str, dataset, checkpoint_dir="checkpoints", *, steps: int = 1000,
                learning_rate: float = 1e-3, seed: int = 0, model_config=None,
                task_options: Optional[dict] = None, notes: Optional[dict] = None, **train_options):
    """Train one DLKFM level (``stage="dlkfm/level<k>"``) with `deeplk.train.train`, the levels
    below it frozen.

    The run's folder is ``<checkpoint_dir>/dlkfm/level<k>`` (`stage_dir`); a folder with
    checkpoints resumes. Level ``k > 1`` needs level ``k - 1`` trained in the same
    `checkpoint_dir` (a `FileNotFoundError` naming the folder otherwise).

    Args:
        stage: one of `STAGE_NAMES`.
        dataset: batches ``(inputs, templates, corners)`` (e.g. `deeplk.data.load_dataset` with
            ``shuffle=True, repeat=True``).
        checkpoint_dir: the parent of ``dlkfm/``.
        steps, learning_rate, seed: `deeplk.train.TrainConfig` fields (`seed` also seeds the
            perturbation sampler).
        model_config: the architecture, a `DLKFMConfig` or its fields as a dict (level 1;
            levels 2 and 3 take level 1's, ``None``).
        task_options: further `DLKFMTask` keyword arguments (``num_perturbations``,
            ``convexity_weight``, ``perturbation`` ...).
        notes: settings to record in ``model_config.json`` (data folder, batch size ...).
        train_options: further `deeplk.train.TrainConfig` fields (``log_every``, ``progress``,
            ``checkpoint_every``, ``log_dir``, ``clipnorm`` ...).

    Returns:
        The `deeplk.train.TrainResult`.
    """
    from deeplk.train import TrainConfig, as_config, check_stage, train

    check_stage(stage, STAGE_NAMES, FAMILY)
    level = STAGE_NAMES.index(stage) + 1
    arch = {} if model_config is None else as_config(DLKFMConfig, model_config, "model_config").to_dict()
    task = DLKFMTask(level, checkpoint_dir, seed=seed, **arch, **(task_options or {}),
                     notes={"learning_rate": learning_rate, **(notes or {})})
    config = TrainConfig(steps=steps, learning_rate=learning_rate, seed=seed,
                         checkpoint_dir=task.checkpoint_dir, **train_options)
    return train(task, dataset, config)


def load_dlkfm(checkpoint_dir, levels: int = 3) -> DLKFMNet:
    """The trained `DLKFMNet` with levels ``1..levels`` from ``<checkpoint_dir>/dlkfm/level<levels>``.

    Raises:
        FileNotFoundError: naming the folder, if the config or the level's weights are missing.
    """
    from deeplk.train import load_run

    levels = _check_level("levels", levels)
    folder = level_dir(checkpoint_dir, levels)

    def make_task(record):
        arch = {k: record.model[k] for k in ARCH_KEYS if k in record.model}
        return DLKFMTask(levels, checkpoint_dir, load_previous=False, **arch)

    try:
        return load_run(folder, make_task, FAMILY)[0]
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no DLKFM level-{levels} model: {e} (train the levels with "
                                f"notebooks/03_train_dlkfm.ipynb, level=1, 2, 3, "
                                f"checkpoint_dir={dlkfm_root(checkpoint_dir).parent})") from None


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------


def _check_init(init, init_predictor) -> None:
    """``init`` is ``"centred"``, ``"sift"``, or names the method whose predictor is given; or a
    sequence of those with a sequence of predictors (None for ``"centred"`` / ``"sift"``)."""
    if isinstance(init, (list, tuple)):
        if len(init) == 0:
            raise ValueError("`init` is an empty sequence: name at least one start")
        predictors = [None] * len(init) if init_predictor is None else init_predictor
        if not isinstance(predictors, (list, tuple)) or len(predictors) != len(init):
            raise ValueError(f"with several starts init={list(init)!r}, `init_predictor` must be a "
                             f"sequence of as many predictors (None for 'centred' / 'sift')")
        if len(set(init)) != len(init):
            raise ValueError(f"`init` names a start twice: {list(init)!r}")
        for name, predictor in zip(init, predictors):
            _check_init(name, predictor)
        return
    if not isinstance(init, str):
        raise ValueError(f"`init` must be a string ({INITS} or a method name) or a list of them, "
                         f"got {init!r}")
    if init not in ("centred", "sift") and init_predictor is None:
        raise ValueError(f"init={init!r} needs `init_predictor`, the predictor of the method "
                         f"{init!r} (deeplk.methods.get_method('dlkfm', init={init!r}) builds it)")


def feature_residual(input_features, template_features, input_H_template,
                     min_valid_fraction: float = 0.5) -> tf.Tensor:
    """Mean squared difference between the template's features and the input's warped by H, over
    the valid pixels (`deeplk.warp.warp_image`'s mask), per channel and pixel: LK's objective at
    the estimate. ``(B,)`` float32; inf where fewer than `min_valid_fraction` of the template's
    pixels are valid or H is not finite.

    Args:
        input_features: ``(B, Hi, Wi, C)``; template_features: ``(B, h, w, C)``.
        input_H_template: ``(B, 3, 3)`` in the features' pixel frame.
    """
    fi = tf.convert_to_tensor(input_features, tf.float32)
    t = tf.convert_to_tensor(template_features, tf.float32)
    H = tf.cast(input_H_template, tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(H), axis=[1, 2])
    H = tf.where(finite[:, None, None], H, tf.eye(3, batch_shape=[tf.shape(H)[0]]))
    _, mask = warp_image(fi[..., :1], H, tuple(t.shape[1:3]))  # the valid pixels only
    enough = tf.reduce_mean(mask, axis=[1, 2, 3]) >= min_valid_fraction
    return tf.where(finite & enough, alignment_mse(fi, t, H), tf.constant(np.inf, tf.float32))


class DLKFMAligner:
    """Coarse-to-fine LK on the features of a `DLKFMNet` (the ``dlkfm`` method's predictor).

    ``aligner(inputs, templates) -> (corners (B, 4, 2) float64, NaN where failed, failed (B,))``.

    Args:
        model: a `DLKFMNet` (its ``levels`` are used, coarsest first).
        init: ``"centred"``, ``"sift"`` (SIFT + RANSAC, plausible results only, else centred) or
            the name of the method `init_predictor` runs (the paper's ``"mhn"``, or e.g.
            ``"dhn"``, ``"lk_mind"``; centred where it fails). A list of these (e.g.
            ``["lk_mind", "dhn"]``): LK runs from each start and each pair keeps the estimate
            with the lowest `feature_residual` on the finest level's features (LK's own
            objective; for a model on the MIND descriptor, the descriptor's residual), so that
            a start outside the basin is outvoted by one inside it.
        init_predictor: ``predict(inputs, templates) -> (corners, failed)`` giving the initial
            corners (required for a method name; ``deeplk.methods.get_method("dlkfm",
            init=name)`` passes the method `name`); with several starts a list of them, None
            for ``"centred"`` and ``"sift"``.
        feature_type: ``None`` (the model's), ``"regular"`` or ``"special"``.
        max_iterations, tolerance, damping: per level, coarsest first, passed to
            `deeplk.lk.pyramid_lucas_kanade`; ``max_iterations=None``: the caps of
            `deeplk.lk.align_images` (`deeplk.lk.align_defaults`: 15 at the coarsest level, 5
            between, 2 at the finest), with which the released figures were made (more
            iterations let a pair that diverges drift farther).
        batch_size: pairs per feature/LK call (bounds the memory of the feature maps).
        jit_compile: XLA for the LK loop.
        lk_options: further `deeplk.lk.LKOptions` (the object or a dict of its fields) of
            `deeplk.lk.pyramid_lucas_kanade`, without the three above; ``None``:
            `DEFAULT_LK_OPTIONS` (ESM updates after a translation stage: on the multimodal demo,
            64 val pairs, 7.8 % below 5 px against 1.6 % with the inverse-compositional rule,
            whose fixed point drifts off the feature-MSE minimum when the residual at the truth
            is large); ``{}``: the plain inverse-compositional rule.
        fold_batchnorm: compute the features with the batch norms folded into the
            convolutions (`FeatureExtractor.inference`; same values up to float32 rounding).
    """

    def __init__(self, model: DLKFMNet, init: str = "centred",
                 init_predictor: Optional[Callable] = None,
                 feature_type: Optional[str] = None, max_iterations=None,
                 tolerance=None, damping: float = 1e-4, batch_size: int = 16,
                 jit_compile: bool = True, lk_options=None,
                 fold_batchnorm: bool = False):
        _check_init(init, init_predictor)
        self.model = model
        self.init = init
        self.feature_type = model.feature_type if feature_type is None else \
            _check_feature_type(feature_type)
        default_options = DEFAULT_LK_OPTIONS
        if model.input_representation == "mind":  # the lk_mind method's solver settings
            from deeplk.lk.align import align_defaults

            lk_mind = align_defaults(model.levels)
            default_options = LKOptions(algorithm=lk_mind["algorithm"],
                                        coarse_motions=lk_mind["coarse_motions"])
            if lk_options is None:
                max_iterations = lk_mind["max_iterations"] if max_iterations is None \
                    else max_iterations
                tolerance = lk_mind["tolerance"] if tolerance is None else tolerance
        tolerance = 1e-2 if tolerance is None else tolerance
        if max_iterations is None:  # the caps of align_images, not the plain pyramid's 30 / 10 / 5
            from deeplk.lk.align import align_defaults

            max_iterations = align_defaults(model.levels)["max_iterations"]
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.damping = float(damping)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.jit_compile = bool(jit_compile)
        self.lk_options = LKOptions.coerce(default_options if lk_options is None else lk_options)
        # stride-2 feature levels are corner-aligned, the MIND pyramid's are pixel areas
        fixed = dict(max_iterations=max_iterations, tolerance=tolerance, damping=self.damping,
                     half_pixel_centers=model.half_pixel_centers)
        overlap = [k for k in fixed if getattr(self.lk_options, k) != getattr(LKOptions(), k)]
        if overlap:
            raise ValueError(f"`lk_options` must not set {overlap}: pass max_iterations, tolerance "
                             "and damping as DLKFMAligner arguments")
        self._solver_options = self.lk_options.replace(**fixed)
        self.fold_batchnorm = bool(fold_batchnorm)
        self.init_predictor = init_predictor
        self._features = tf.function(self._features_eager, reduce_retracing=True)

    def _features_eager(self, images, templates):
        pairs = self.model.extract(images, templates, training=False,
                                   fold_batchnorm=self.fold_batchnorm)
        pairs = [self.model.lk_features(p, self.feature_type) for p in pairs]
        return [p[0] for p in pairs][::-1], [p[1] for p in pairs][::-1]  # coarsest first

    @property
    def starts(self) -> list:
        """``[(name, predictor or None), ...]``: the starts LK runs from."""
        if isinstance(self.init, (list, tuple)):
            predictors = self.init_predictor or [None] * len(self.init)
            return list(zip(self.init, predictors))
        return [(self.init, self.init_predictor)]

    def initial_homographies(self, inputs: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """``(B, 3, 3)`` float64 initial ``input_H_template`` of the (first) start (never uses a
        label); `start_homographies` gives every start's."""
        return self.start_homographies(inputs, templates)[0]

    def start_homographies(self, inputs: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """``(S, B, 3, 3)`` float64: the initial ``input_H_template`` of each of the S starts."""
        return np.stack([self._start(name, predictor, inputs, templates)
                         for name, predictor in self.starts])

    @staticmethod
    def _start(init, init_predictor, inputs, templates) -> np.ndarray:
        b = len(inputs)
        H = np.repeat(centred_homography(inputs.shape[1:3], templates.shape[1:3])[None], b, axis=0)
        if init == "sift":
            from deeplk.baselines import sift_homographies

            H = sift_homographies(inputs, templates)
        elif init_predictor is not None:
            corners, failed = init_predictor(inputs, templates)
            corners = np.asarray(corners, np.float64)
            ok = ~np.asarray(failed, bool) & np.all(np.isfinite(corners), axis=(1, 2))
            if ok.any():
                H[ok] = corners_to_homography(corners[ok], tuple(templates.shape[1:3])).numpy()
        return H

    def align(self, inputs, templates, init_H=None):
        """`deeplk.lk.LKResult` (full resolution) for one batch; `init_H` ``(B, 3, 3)`` (or
        ``(S, B, 3, 3)``: several starts) or the configured start(s). With several starts each
        pair keeps the result with the lowest `feature_residual` at the finest level."""
        from deeplk.lk import LKResult, pyramid_lucas_kanade

        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        starts = self.start_homographies(inputs, templates) if init_H is None else np.asarray(init_H)
        ip, tp = self._features(tf.constant(inputs), tf.constant(templates))

        def solve(H0):
            return pyramid_lucas_kanade(ip, tp, tf.constant(H0, tf.float32), self._solver_options,
                                        jit_compile=self.jit_compile)

        if starts.ndim == 3:
            return solve(starts)
        results = [solve(H0) for H0 in starts]
        if len(results) == 1:
            return results[0]
        residuals = tf.stack([tf.where(r.failed, np.inf, feature_residual(ip[-1], tp[-1], r.H))
                              for r in results])  # (S, B)
        best = tf.argmin(residuals, axis=0, output_type=tf.int32)
        index = tf.stack([best, tf.range(tf.shape(best)[0])], axis=1)

        def pick(field):
            if field[0] is None:
                return None
            return tf.gather_nd(tf.stack(field), index)

        fields = [pick([getattr(r, name) for r in results]) if name != "history" else None
                  for name in LKResult._fields]
        return LKResult(*fields)

    def __call__(self, inputs, templates):
        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        check_shape("inputs", inputs, (None, None, None, 3), "B x Hi x Wi x 3 RGB in [0, 1]")
        check_shape("templates", templates, (len(inputs), None, None, 3),
                    "B x h x w x 3 RGB in [0, 1], same B as inputs")
        n = len(inputs)
        corners = np.full((n, 4, 2), np.nan)
        failed = np.zeros(n, dtype=bool)
        size = tuple(templates.shape[1:3])
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            result = self.align(inputs[start:stop], templates[start:stop])
            c = homography_to_corners(tf.cast(result.H, tf.float64), size).numpy()
            f = result.failed.numpy() | ~np.all(np.isfinite(c), axis=(1, 2))
            c[f] = np.nan
            corners[start:stop], failed[start:stop] = c, f
        return corners, failed


def default_init(checkpoint_dir=None) -> str:
    """The ``dlkfm`` method's start when no `init` is given: ``"lk_mind"`` for a model on the MIND
    descriptor (its features start as lk_mind's and are trained to refine lk_mind's estimates),
    else ``"centred"`` (also when nothing is trained yet: building the method then says so)."""
    from deeplk.train import read_run_config

    available = trained_levels(checkpoint_dir)
    if not available:
        return "centred"
    record = read_run_config(level_dir(checkpoint_dir, max(available)), FAMILY)
    return "lk_mind" if record.model.get("input_representation") == "mind" else "centred"


def build_dlkfm_method(checkpoint_dir=None, init: Optional[str] = None, levels: Optional[int] = None,
                       feature_type: Optional[str] = None,
                       init_predictor: Optional[Callable] = None, **options) -> DLKFMAligner:
    """The ``dlkfm`` method: ``predict(inputs, templates) -> (corners, failed)``.

    Args:
        checkpoint_dir: parent of ``dlkfm/`` (default ``checkpoints``).
        init: ``"centred"``, ``"sift"`` or a method name (see `DLKFMAligner`); ``None``:
            `default_init` (``"lk_mind"`` for a model on the MIND descriptor).
        levels: use levels ``1..levels`` (coarsest = `levels`); ``None``: the highest trained
            level (a warning if it is below 3).
        feature_type: override the trained ``feature_type`` (``"regular"`` / ``"special"``).
        init_predictor: the predictor of the method named by `init` (`deeplk.methods` passes
            it, e.g. the trained ``mhn`` method; tests pass stand-ins).
        **options: `DLKFMAligner` options (``max_iterations``, ``tolerance``, ``damping``,
            ``batch_size``, ``jit_compile``, ``lk_options``).

    Raises:
        FileNotFoundError: naming ``<checkpoint_dir>/dlkfm`` (or the level folder) when no
            trained model is there.
        ValueError: a method name as `init` without `init_predictor`.
    """
    if init is None:
        init = default_init(checkpoint_dir)
    _check_init(init, init_predictor)
    if levels is None:
        available = trained_levels(checkpoint_dir)
        if not available:
            raise FileNotFoundError(
                f"no trained DLKFM in {dlkfm_root(checkpoint_dir)}: no level folder holds weights "
                f"(train the levels with notebooks/03_train_dlkfm.ipynb, level=1, 2, 3, "
                f"checkpoint_dir={dlkfm_root(checkpoint_dir).parent})")
        levels = max(available)
        if levels < 3:
            warnings.warn(f"DLKFM in {dlkfm_root(checkpoint_dir)} has levels up to {levels} "
                          "only: aligning with those", stacklevel=2)
    model = load_dlkfm(checkpoint_dir, levels)
    return DLKFMAligner(model, init=init, init_predictor=init_predictor,
                        feature_type=feature_type, **options)


def build_method(name: str, checkpoint_dir=None, **options):
    """The family's method builder (`deeplk.methods`): ``"dlkfm"`` (`build_dlkfm_method`)."""
    if name != "dlkfm":
        raise ValueError(f"the dlkfm family builds ['dlkfm'], not {name!r}")
    return build_dlkfm_method(checkpoint_dir, **options)
