"""CLKN: the Cascaded (Conditional) Lucas-Kanade Network baseline (Chang et al., CVPR 2017).

A CNN maps the input image and the template to feature maps at four pyramid levels; at each
level, coarse to fine, **one** inverse-compositional Lucas-Kanade step on those features updates
the homography; training penalises, with a hinge, the corner error after every level that exceeds
a per-level margin, so that the features make a single LK step land well.

Our version (the 192 / 128 data protocol of the project):

- **Pyramid.** Input and template are reduced by 2x2 average pooling (`deeplk.lk.build_pyramid`)
  to four levels, coarsest first: inputs 24, 48, 96, 192 and templates 16, 32, 64, 128 pixels.
  Pixel coordinates of consecutive levels are related by ``x_coarse = (x_fine + 0.5) / 2 - 0.5``,
  i.e. `deeplk.geometry.scale_homography` with ``half_pixel_centers=True``.
- **Features.** One network per level (`CLKNLevelNet`), shared by the input and the template of
  that level (Siamese): per-image channel standardisation, ``depth`` 3x3 convolutions with leaky
  ReLU ("same" padding, so pixel coordinates are unchanged), then a 1x1 convolution to
  ``channels`` (4) feature channels.
- **Alignment.** ``H`` starts at the centred placement of the template (offset 32 for 128 in
  192, `deeplk.geometry.centred_homography`), is scaled to each level, refined by
  `deeplk.lk.lucas_kanade` with ``max_iterations=lk_iterations`` (1) on that level's features, and
  scaled back (`cascade_lucas_kanade`). Gradients flow through the LK step into the features of
  both images and into the incoming ``H`` (hence into the coarser levels).
- **Loss** (`clkn_hinge_loss`): ``sum_k w_k * mean_b max(0, PE_k,b - m_k)``, ``PE_k`` the mean
  corner error after level ``k`` in pixels of the 192 input, ``m_k`` the level's margin (default
  one pixel *of that level*: 8, 4, 2, 1).

The training task `CLKNTask` implements `deeplk.train.TrainTask`; `train_stage` trains it into
``<checkpoint_dir>/clkn/``, where `deeplk.train.train` writes the model's constructor arguments
(``model_config.json``, from `CLKNTask.run_config`) next to the checkpoints so that `load_clkn`
and the ``clkn`` evaluation method (`build_clkn_method`) rebuild the same model. Folders of the
older layout (``clkn_config.json``) still load. The method never sees the ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import check_positive_int, check_shape
from deeplk.geometry import centred_homography, homography_to_corners, corner_error, scale_homography
from deeplk.lk import build_pyramid, check_pyramid_doubles, lucas_kanade

__all__ = [
    "METHOD_DESCRIPTIONS",
    "METHOD_NAME",
    "STAGE_NAMES",
    "stage_dir",
    "FAMILY",
    "DEFAULT_MARGINS",
    "default_margins",
    "CLKNLevelNet",
    "CLKN",
    "CLKNConfig",
    "cascade_lucas_kanade",
    "clkn_hinge_loss",
    "CLKNTask",
    "level_corner_errors",
    "train_stage",
    "load_clkn",
    "build_clkn_method",
    "build_method",
]

METHOD_NAME = "clkn"
#: The stages `train_stage` trains, named by their run folder under the checkpoint folder.
STAGE_NAMES = (METHOD_NAME,)
METHOD_DESCRIPTIONS = {
    METHOD_NAME: "CLKN: 4-level Siamese CNN features (4 channels), one IC-LK step per level, "
                 "centred start, hinge loss on corner error",
}
#: File in ``<checkpoint_dir>/clkn/`` holding the model's constructor arguments.
#: The family name in ``model_config.json`` (`deeplk.train.read_run_config`).
FAMILY = "clkn"
#: Hinge margins per level (coarsest first), pixels of the 192 input: one pixel of each level.
DEFAULT_MARGINS = (8.0, 4.0, 2.0, 1.0)


def default_margins(levels: int) -> tuple:
    """One pixel of each level, in full-resolution pixels, coarsest first (8, 4, 2, 1 for 4)."""
    levels = check_positive_int("levels", levels)
    return tuple(float(2 ** (levels - 1 - k)) for k in range(levels))
#: Default feature widths per level (coarsest first): wide where the maps are small.
DEFAULT_FILTERS = (16, 16, 8, 8)
#: Default number of 3x3 convolutions per level (coarsest first).
DEFAULT_DEPTH = (3, 3, 2, 2)
#: A tolerance that every update passes: the level stops after its `lk_iterations` updates
#: without warping once more for an iteration that will not run.
_STOP_AFTER_CAP = 1e12


# --------------------------------------------------------------------------------------------
# The cascade of LK steps (plain function; the model wraps it)
# --------------------------------------------------------------------------------------------


def cascade_lucas_kanade(
    input_pyramid: Sequence,
    template_pyramid: Sequence,
    init_H,
    lk_iterations: int = 1,
    damping: float = 1e-4,
    jit_compile: bool = False,
):
    """Coarse-to-fine IC-LK with a fixed number of updates per level, keeping every level's result.

    Level ``k`` (coarsest first, ``L`` levels) has pixels ``2^(L-1-k)`` times larger than the
    finest level. The full-resolution estimate is scaled to the level
    (``scale_homography(H, 2^-(L-1-k), half_pixel_centers=True)``, matching 2x2 average pooling),
    refined by `deeplk.lk.lucas_kanade` with ``max_iterations=lk_iterations`` (no convergence
    test: every sample makes exactly that many updates unless it fails), and scaled back. A sample
    that fails at a level (textureless features, estimate outside the input) keeps that level's
    incoming estimate.

    Args:
        input_pyramid: list of ``L`` ``(B, Hi_k, Wi_k, C)`` input features, coarsest first, each
            level twice the size of the previous one.
        template_pyramid: list of ``L`` ``(B, h_k, w_k, C)`` template features (static sizes).
        init_H: ``(B, 3, 3)`` initial ``input_H_template`` at full (finest) resolution.
        lk_iterations: LK updates per level (CLKN: 1).
        damping: relative damping of `deeplk.lk.lucas_kanade`.
        jit_compile: XLA for eager calls (inside a `tf.function` the loop is inlined).

    Returns:
        ``(level_H, level_failed)``: lists of ``L`` ``(B, 3, 3)`` full-resolution estimates after
        each level and ``L`` ``(B,)`` bool failure flags.

    Raises:
        ValueError: pyramids of different lengths or sizes that do not double, bad `init_H`.
    """
    input_pyramid, template_pyramid = list(input_pyramid), list(template_pyramid)
    levels = len(input_pyramid)
    if levels == 0 or len(template_pyramid) != levels:
        raise ValueError(
            "`input_pyramid` and `template_pyramid` must be non-empty lists of the same length, "
            f"got {levels} and {len(template_pyramid)}"
        )
    check_pyramid_doubles("input_pyramid", input_pyramid)
    check_pyramid_doubles("template_pyramid", template_pyramid)
    lk_iterations = check_positive_int("lk_iterations", lk_iterations)
    H = tf.convert_to_tensor(init_H)
    check_shape("init_H", H, (None, 3, 3), "B x 3 x 3 homographies input_H_template")
    level_H, level_failed = [], []
    for k in range(levels):
        to_level = 0.5 ** (levels - 1 - k)
        H_level = H if to_level == 1.0 else scale_homography(H, to_level, half_pixel_centers=True)
        result = lucas_kanade(
            input_pyramid[k], template_pyramid[k], H_level,
            max_iterations=lk_iterations, tolerance=_STOP_AFTER_CAP, damping=damping,
            jit_compile=jit_compile,
        )
        H = result.H
        if to_level != 1.0:
            H = scale_homography(H, 1.0 / to_level, half_pixel_centers=True)
        level_H.append(H)
        level_failed.append(result.failed)
    return level_H, level_failed


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def clkn_hinge_loss(level_corners, true_corners, margins=DEFAULT_MARGINS, level_weights=None):
    """CLKN's training loss: a hinge on the corner error after every level.

    ``loss = sum_k w_k * mean_b max(0, PE_k,b - m_k)`` with ``PE_k,b`` the mean corner error
    (`deeplk.geometry.corner_error`) of sample ``b`` after level ``k``.

    Args:
        level_corners: list of ``L`` ``(B, 4, 2)`` predicted corners (one per level, coarsest
            first), or one ``(L, B, 4, 2)`` tensor, pixels of the input frame.
        true_corners: ``(B, 4, 2)`` ground-truth corners.
        margins: ``L`` margins ``m_k`` in pixels (errors below them cost nothing).
        level_weights: ``L`` weights ``w_k``; ``None``: all 1.

    Returns:
        ``(loss, errors)``: the scalar loss (dtype of the corners) and the ``(L, B)`` corner
        errors.

    Raises:
        ValueError: shapes that do not match, a number of margins or weights other than ``L``,
            negative margins or weights.
    """
    if isinstance(level_corners, (list, tuple)):
        if not level_corners:
            raise ValueError("`level_corners` must hold at least one level")
        level_corners = tf.stack([tf.convert_to_tensor(c) for c in level_corners])
    level_corners = tf.convert_to_tensor(level_corners)
    check_shape("level_corners", level_corners, (None, None, 4, 2), "L x B x 4 corners x (x, y)")
    true_corners = tf.cast(true_corners, level_corners.dtype)
    check_shape("true_corners", true_corners, (None, 4, 2), "B x 4 corners x (x, y)")
    levels = int(level_corners.shape[0])

    def per_level(name, values, default):
        values = np.asarray(default if values is None else values, dtype=np.float64).reshape(-1)
        if values.size != levels:
            raise ValueError(f"`{name}` must hold one value per level ({levels}), got "
                             f"{values.tolist()}")
        if not np.all(np.isfinite(values) & (values >= 0)):
            raise ValueError(f"`{name}` must be finite and >= 0, got {values.tolist()}")
        return tf.constant(values, level_corners.dtype)

    m = per_level("margins", margins, DEFAULT_MARGINS)
    w = per_level("level_weights", level_weights, np.ones(levels))
    errors = tf.stack([corner_error(level_corners[k], true_corners) for k in range(levels)])
    hinge = tf.nn.relu(errors - m[:, None])  # (L, B)
    loss = tf.reduce_sum(w * tf.reduce_mean(hinge, axis=1))
    return loss, errors


# --------------------------------------------------------------------------------------------
# Keras model
# --------------------------------------------------------------------------------------------


def _int_tuple(name: str, value, levels: int) -> tuple:
    values = np.asarray(value, dtype=object).reshape(-1).tolist()
    if len(values) == 1:
        values = values * levels
    if len(values) != levels:
        raise ValueError(f"`{name}` must be an int or one int per level ({levels}), got {value!r}")
    return tuple(check_positive_int(name, v) for v in values)


@keras.saving.register_keras_serializable(package="deeplk")
class CLKNLevelNet(keras.layers.Layer):
    """The feature network of one CLKN level: ``depth`` x (3x3 conv + leaky ReLU), then a 1x1
    convolution to ``channels`` features.

    Input ``(B, H, W, C_in)`` images (any size; float32 in [0, 1]), output
    ``(B, H, W, channels)`` features on the same pixel grid ("same" padding).

    Args:
        filters: width of the 3x3 convolutions.
        depth: number of 3x3 convolutions (receptive field ``2 * depth + 1`` pixels of the level).
        channels: output feature channels (the 1x1 convolution).
        standardise: standardise each image per channel first (zero mean, unit variance over its
            pixels), which removes global brightness, contrast and colour-cast differences
            between the two images; else only centre to [-0.5, 0.5].
    """

    def __init__(self, filters: int = 16, depth: int = 3, channels: int = 4,
                 standardise: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.depth = check_positive_int("depth", depth)
        self.channels = check_positive_int("channels", channels)
        self.standardise = bool(standardise)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"`input_shape` must be (B, H, W, C), got {tuple(input_shape)}")
        self.convs = [
            keras.layers.Conv2D(self.filters, 3, padding="same", activation="leaky_relu",
                                name=f"conv{i}")
            for i in range(self.depth)
        ]
        self.project = keras.layers.Conv2D(self.channels, 1, name="project")
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:3] + (self.filters,)
        self.project.build(shape)

    def call(self, images):
        if self.standardise:
            mean, var = tf.nn.moments(images, axes=[1, 2], keepdims=True)
            x = (images - mean) * tf.math.rsqrt(var + 1e-4)
        else:
            x = images - 0.5
        for conv in self.convs:
            x = conv(x)
        return self.project(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, depth=self.depth, channels=self.channels,
                      standardise=self.standardise)
        return config


@keras.saving.register_keras_serializable(package="deeplk")
class CLKN(keras.Model):
    """The 4-level CLKN: per-level Siamese feature networks and one IC-LK step per level.

    ``call((inputs, templates))`` with ``inputs`` ``(B, Hi, Wi, 3)`` and ``templates``
    ``(B, h, w, 3)`` (192 and 128 in the data protocol; sizes divisible by ``2^(levels-1)``)
    returns a dict:

    - ``"H"``: ``(B, 3, 3)`` final ``input_H_template`` (template pixels -> input pixels);
    - ``"level_H"``: ``(L, B, 3, 3)`` the full-resolution estimate after each level, coarsest
      first (the last one is ``"H"``);
    - ``"level_failed"``: ``(L, B)`` bool, LK failed at that level (the estimate was kept).

    The start is the centred placement of the template. No ground truth is used.

    Args:
        levels: pyramid levels (4).
        filters: width of each level's 3x3 convolutions, an int or one per level (coarsest first).
        depth: 3x3 convolutions per level, an int or one per level.
        channels: feature channels produced by each level's final 1x1 convolution (4).
        lk_iterations: LK updates per level (1).
        damping: relative damping of the LK step (`deeplk.lk.lucas_kanade`).
        standardise: each level network standardises its images per channel first (see
            `CLKNLevelNet`).
    """

    def __init__(self, levels: int = 4, filters=DEFAULT_FILTERS, depth=DEFAULT_DEPTH,
                 channels: int = 4, lk_iterations: int = 1, damping: float = 1e-4,
                 standardise: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.levels = check_positive_int("levels", levels)
        self.filters = _int_tuple("filters", filters, self.levels)
        self.depth = _int_tuple("depth", depth, self.levels)
        self.channels = check_positive_int("channels", channels)
        self.lk_iterations = check_positive_int("lk_iterations", lk_iterations)
        damping = float(damping)
        if not (np.isfinite(damping) and damping >= 0):
            raise ValueError(f"`damping` must be a finite number >= 0, got {damping!r}")
        self.damping = damping
        self.standardise = bool(standardise)

    def build(self, input_shape=None):
        channels = 3
        if input_shape is not None:
            shapes = list(input_shape)
            if len(shapes) == 2 and shapes[0] is not None and np.ndim(shapes[0]) == 1:
                channels = shapes[0][-1] or 3
        self.level_nets = [
            CLKNLevelNet(self.filters[k], self.depth[k], self.channels, self.standardise,
                         name=f"level{k}")
            for k in range(self.levels)
        ]
        for net in self.level_nets:
            net.build((None, None, None, channels))
        self.built = True

    def _check_inputs(self, inputs, templates):
        inputs = tf.convert_to_tensor(inputs)
        templates = tf.convert_to_tensor(templates)
        check_shape("inputs", inputs, (None, None, None, None), "B x Hi x Wi x 3 images")
        check_shape("templates", templates, (None, None, None, inputs.shape[-1]),
                    "B x h x w x C templates, C as the inputs")
        factor = 2 ** (self.levels - 1)
        for name, x in (("inputs", inputs), ("templates", templates)):
            h, w = x.shape[1], x.shape[2]
            if h is None or w is None:
                raise ValueError(f"`{name}` must have a static height and width, got "
                                 f"{tuple(x.shape)}")
            if h % factor or w % factor or min(h, w) // factor < 2:
                raise ValueError(
                    f"`{name}` height and width must be multiples of {factor} (2^(levels-1)) "
                    f"and at least {2 * factor}, got shape {tuple(x.shape)}"
                )
        return inputs, templates

    def call(self, data, training=None):
        if not isinstance(data, (list, tuple)) or len(data) != 2:
            raise ValueError("CLKN expects `(inputs, templates)`, got "
                             f"{type(data).__name__}")
        inputs, templates = self._check_inputs(*data)
        input_pyramid = build_pyramid(inputs, self.levels)
        template_pyramid = build_pyramid(templates, self.levels)
        input_features = [net(x) for net, x in zip(self.level_nets, input_pyramid)]
        template_features = [net(t) for net, t in zip(self.level_nets, template_pyramid)]
        batch = tf.shape(inputs)[0]
        init_H = centred_homography(tuple(inputs.shape[1:3]), tuple(templates.shape[1:3]),
                                     batch, inputs.dtype)
        level_H, level_failed = cascade_lucas_kanade(
            input_features, template_features, init_H,
            lk_iterations=self.lk_iterations, damping=self.damping, jit_compile=False,
        )
        return {"H": level_H[-1], "level_H": tf.stack(level_H), "level_failed":
                tf.stack(level_failed)}

    def features(self, images, level: int):
        """The features of `images` ``(B, H, W, 3)`` at full size through level `level`'s net
        (for plots)."""
        return self.level_nets[level](tf.convert_to_tensor(images))

    def get_config(self):
        config = super().get_config()
        config.update(self.model_config())
        return config

    def model_config(self) -> dict:
        """The constructor arguments (the fields of `CLKNConfig`)."""
        return dict(levels=self.levels, filters=list(self.filters), depth=list(self.depth),
                    channels=self.channels, lk_iterations=self.lk_iterations,
                    damping=self.damping, standardise=self.standardise)


@dataclass
class CLKNConfig:
    """The CLKN architecture: the `CLKN` constructor arguments, validated (and ``filters`` /
    ``depth`` expanded to one value per level) on construction; invalid values raise
    ``ValueError`` naming the field."""

    levels: int = 4
    filters: Any = DEFAULT_FILTERS
    depth: Any = DEFAULT_DEPTH
    channels: int = 4
    lk_iterations: int = 1
    damping: float = 1e-4
    standardise: bool = True

    def __post_init__(self):
        for key, value in CLKN(**asdict(self)).model_config().items():
            setattr(self, key, value)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Training task
# --------------------------------------------------------------------------------------------


class CLKNTask:
    """`deeplk.train.TrainTask` for CLKN: batches ``(input, template, corners)`` as from
    `deeplk.data.load_dataset`; loss `clkn_hinge_loss`; metrics ``pe_level<k>`` (mean corner
    error after level k, pixels) and ``failed_level<k>`` (fraction of LK failures).

    Args:
        model_config: a `CLKNConfig` or its fields as a dict (missing ones take the defaults).
        margins: hinge margins per level (pixels of the input frame), coarsest first; ``None``:
            one pixel of each level (`default_margins`: 8, 4, 2, 1 for four levels).
        level_weights: per-level loss weights, or ``None`` for all 1.
        notes: training settings recorded in ``model_config.json`` (learning rate, data ...).
    """

    def __init__(self, model_config: dict | None = None, margins=None, level_weights=None,
                 notes: dict | None = None):
        from deeplk.train import as_config

        self.notes = dict(notes or {})
        self.config = as_config(CLKNConfig, model_config, "model_config")
        self.model_config = self.config.to_dict()
        levels = self.config.levels
        if margins is None:
            margins = default_margins(levels)
        self.margins = tuple(float(m) for m in np.asarray(margins, np.float64).reshape(-1))
        if len(self.margins) != levels:
            raise ValueError(f"`margins` must hold one value per level ({levels}), got "
                             f"{list(self.margins)}")
        self.level_weights = (None if level_weights is None else
                              tuple(float(w) for w in np.asarray(level_weights).reshape(-1)))
        # Check margins and weights once, on a dummy example.
        clkn_hinge_loss(tf.zeros([levels, 1, 4, 2]), tf.zeros([1, 4, 2]), self.margins,
                        self.level_weights)

    def run_config(self) -> dict:
        """What `deeplk.train.train` writes to ``model_config.json``."""
        return {"family": FAMILY, "model": dict(self.model_config),
                "task": {"margins": list(self.margins), "level_weights": self.level_weights, **self.notes}}

    def build_model(self) -> CLKN:
        model = CLKN(**self.model_config, name="clkn")
        model.build()
        return model

    def compute_loss(self, model, batch, training):
        inputs, templates, corners = batch
        out = model((inputs, templates), training=training)
        template_size = tuple(templates.shape[1:3])
        levels = int(out["level_H"].shape[0])
        level_corners = [homography_to_corners(out["level_H"][k], template_size)
                         for k in range(levels)]
        loss, errors = clkn_hinge_loss(level_corners, corners, self.margins, self.level_weights)
        metrics = {}
        for k in range(levels):
            metrics[f"pe_level{k}"] = tf.reduce_mean(errors[k])
            metrics[f"failed_level{k}"] = tf.reduce_mean(tf.cast(out["level_failed"][k],
                                                                 tf.float32))
        return loss, metrics


def level_corner_errors(model: CLKN, inputs, templates, true_corners,
                        batch_size: int = 32) -> np.ndarray:
    """Corner error (PE, pixels of the input) after each level of `model`, per sample.

    Args:
        model: a `CLKN`.
        inputs: ``(N, Hi, Wi, 3)`` input images; templates: ``(N, h, w, 3)``.
        true_corners: ``(N, 4, 2)`` ground-truth corners (used only to score).
        batch_size: samples per forward pass.

    Returns:
        ``(L + 1, N)`` float64: row 0 is the centred start, row ``k + 1`` the error after level
        ``k`` (coarsest first).
    """
    inputs = np.asarray(inputs, np.float32)
    templates = np.asarray(templates, np.float32)
    true_corners = np.asarray(true_corners, np.float64)
    check_shape("true_corners", true_corners, (len(inputs), 4, 2), "N x 4 corners x (x, y)")
    check_shape("templates", templates, (len(inputs), None, None, None), "N x h x w x C")
    batch_size = check_positive_int("batch_size", batch_size)
    size = tuple(templates.shape[1:3])
    start = centred_homography(tuple(inputs.shape[1:3]), size, len(inputs), tf.float64)
    rows = [corner_error(homography_to_corners(start, size), true_corners).numpy()]
    chunks = []
    for i in range(0, len(inputs), batch_size):
        out = model((inputs[i:i + batch_size], templates[i:i + batch_size]), training=False)
        level_H = tf.cast(out["level_H"], tf.float64)
        chunks.append(np.stack([
            corner_error(homography_to_corners(level_H[k], size),
                         true_corners[i:i + batch_size]).numpy()
            for k in range(model.levels)
        ]))
    return np.concatenate([np.stack(rows), np.concatenate(chunks, axis=1)], axis=0)


# --------------------------------------------------------------------------------------------
# Checkpoints and the evaluation method
# --------------------------------------------------------------------------------------------


def stage_dir(checkpoint_dir, stage: str) -> Path:
    """The run folder ``<checkpoint_dir>/clkn`` (CLKN trains all its levels in one stage)."""
    from deeplk.train import stage_folder

    return stage_folder(checkpoint_dir, stage, STAGE_NAMES, FAMILY)


def train_stage(stage: str, dataset, checkpoint_dir="checkpoints", *, steps: int = 1000,
                learning_rate: float = 1e-3, seed: int = 0, model_config=None,
                task_options: dict | None = None, notes: dict | None = None, **train_options):
    """Train CLKN (``stage="clkn"``, its only stage: all levels at once) with
    `deeplk.train.train` into ``<checkpoint_dir>/clkn`` (a folder with checkpoints resumes;
    `train` writes ``model_config.json`` there).

    Args:
        stage: ``"clkn"`` (`STAGE_NAMES`).
        dataset: batches ``(inputs, templates, corners)`` (e.g. `deeplk.data.load_dataset` with
            ``shuffle=True``).
        checkpoint_dir: the parent of ``clkn/``.
        steps, learning_rate, seed: `deeplk.train.TrainConfig` fields.
        model_config: a `CLKNConfig` or its fields as a dict (``filters``, ``depth`` ...).
        task_options: `CLKNTask` options (``margins``, ``level_weights``).
        notes: settings to record in ``model_config.json`` (data folder, batch size ...).
        train_options: further `deeplk.train.TrainConfig` fields (``checkpoint_every``,
            ``log_dir``, ``log_every``, ``progress`` ...).

    Returns:
        The `deeplk.train.TrainResult`.
    """
    from deeplk.train import TrainConfig, train

    folder = stage_dir(checkpoint_dir, stage)
    task = CLKNTask(model_config, **(task_options or {}),
                    notes={"learning_rate": learning_rate, **(notes or {})})
    config = TrainConfig(steps=steps, learning_rate=learning_rate, seed=seed, checkpoint_dir=folder,
                         **train_options)
    return train(task, dataset, config)


def load_clkn(folder) -> CLKN:
    """The trained `CLKN` in `folder` (``<checkpoint_dir>/clkn``): rebuilt from
    ``model_config.json`` (or the older ``clkn_config.json``), weights from the latest checkpoint
    or ``final.weights.h5`` (`deeplk.train.load_run`).

    Raises:
        FileNotFoundError: missing config or weights (the message names the folder).
    """
    from deeplk.train import load_run

    try:
        return load_run(folder, lambda record: CLKNTask(record.model), FAMILY)[0]
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"no CLKN model: {e} (train CLKN with notebooks/04_train_clkn.ipynb, whose "
            f"checkpoint_dir/{METHOD_NAME} is this folder)") from None


def build_clkn_method(checkpoint_dir=None, batch_size: int = 64, jit_compile: bool = True):
    """The ``clkn`` evaluation method: ``predict(inputs, templates) -> (corners, failed)``.

    Reads the model from ``<checkpoint_dir>/clkn/`` (see `load_clkn`; `checkpoint_dir` defaults
    to ``checkpoints``). ``corners`` ``(B, 4, 2)`` float64 where the template corners land in the
    input; ``failed`` ``(B,)`` is set where the estimate is not finite or LK failed at every level
    (corners are then NaN). A level where LK fails keeps the incoming estimate and is not a
    failure of the method. Runs in chunks of `batch_size`, compiled with XLA by default.
    """
    folder = stage_dir(checkpoint_dir if checkpoint_dir is not None else "checkpoints", METHOD_NAME)
    model = load_clkn(folder)
    batch_size = check_positive_int("batch_size", batch_size)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def run(inputs, templates):
        out = model((inputs, templates), training=False)
        corners = homography_to_corners(out["H"], tuple(templates.shape[1:3]))
        return corners, tf.reduce_all(out["level_failed"], axis=0)

    def predict(inputs, templates):
        inputs = np.asarray(inputs, np.float32)
        templates = np.asarray(templates, np.float32)
        check_shape("inputs", inputs, (None, None, None, 3), "B x 192 x 192 x 3 images")
        check_shape("templates", templates, (len(inputs), None, None, 3),
                    "B x 128 x 128 x 3 templates")
        corners = np.full((len(inputs), 4, 2), np.nan)
        failed = np.zeros(len(inputs), bool)
        for start in range(0, len(inputs), batch_size):
            stop = min(start + batch_size, len(inputs))
            c, f = run(tf.constant(inputs[start:stop]), tf.constant(templates[start:stop]))
            corners[start:stop] = c.numpy().astype(np.float64)
            failed[start:stop] = f.numpy()
        failed |= ~np.all(np.isfinite(corners), axis=(1, 2))
        corners[failed] = np.nan
        return corners, failed

    return predict


def build_method(name: str, checkpoint_dir=None, **options):
    """The family's method builder (`deeplk.methods`): ``"clkn"`` (`build_clkn_method`)."""
    if name != METHOD_NAME:
        raise ValueError(f"the clkn family builds ['clkn'], not {name!r}")
    return build_clkn_method(checkpoint_dir, **options)
