"""Feature functions for the explorer: what LK sees at each pyramid level.

A *feature source* maps images to feature maps, one level and one branch at a time::

    features(images, level, branch) -> (B, h, w, C) float32

- ``images``: ``(B, 192, 192, 3)`` inputs (``branch="input"``) or ``(B, 128, 128, 3)`` templates
  (``branch="template"``), float32 in [0, 1];
- ``level``: DLKFM's numbering, 1 = finest (192 / 128), 2 = 96 / 64, 3 = coarsest (48 / 32): a map
  at level ``L`` is ``2^(L-1)`` times smaller than the image. How its pixel coordinates relate to
  the image's is a property of the source (`FeatureSource.half_pixel_centers`, as in
  `deeplk.geometry.scale_homography`): pixel areas for average pooling
  (``x_L = (x + 0.5) / 2^(L-1) - 0.5``), even pixels for DLKFM's stride-2 convolutions
  (``x_L = x / 2^(L-1)``);
- ``branch``: ``"input"`` or ``"template"`` (DLKFM has separate weights per branch).

Sources here: raw intensities (`intensity_source`, the classical LK's view), an untrained
random-weight convolutional stand-in (`untrained_source`), and the DLKFM extractors when a
trained model is available (`dlkfm_source`, `load_learned_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from deeplk._checks import check_shape

__all__ = ["BRANCHES", "FeatureSource", "intensity_source", "untrained_source", "level_scale", "dlkfm_source",
           "load_learned_source"]

BRANCHES = ("input", "template")

#: Luma weights (ITU-R 601), as `deeplk.lk.to_greyscale`.
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


def level_scale(level: int) -> float:
    """Resolution of DLKFM level `level` relative to the images: ``0.5 ** (level - 1)``."""
    if isinstance(level, bool) or int(level) != level or level < 1:
        raise ValueError(f"`level` must be an integer >= 1 (1 = finest), got {level!r}")
    return 0.5 ** (int(level) - 1)


@dataclass
class FeatureSource:
    """A named feature function ``fn(images, level, branch) -> (B, h, w, C)`` (module docstring).

    Attributes:
        name: short label used in titles (``"learned"``, ``"intensity"``).
        fn: the feature function.
        levels: the levels it provides, finest first (e.g. ``(1, 2, 3)``).
        trained: False for random weights: figures then say "untrained weights".
        note: one line shown under the figures (checkpoint, or why the weights are untrained).
        half_pixel_centers: how level coordinates relate (`deeplk.geometry.scale_homography`):
            True for 2x2 average pooling (``x_L = (x + 0.5) / 2^(L-1) - 0.5``), False for
            stride-2 convolutions sampling the even pixels (``x_L = x / 2^(L-1)``, DLKFM's).
        lk_features: what LK aligns on this source: ``"regular"`` (all channels) or
            ``"special"`` (`deeplk.features.special_feature_map` of them, one channel).
    """

    name: str
    fn: Callable
    levels: tuple = (1, 2, 3)
    trained: bool = True
    note: str = ""
    half_pixel_centers: bool = True
    lk_features: str = "regular"

    def __post_init__(self):
        if self.lk_features not in ("regular", "special"):
            raise ValueError(f"`lk_features` must be 'regular' or 'special', got {self.lk_features!r}")
        self.levels = tuple(sorted(int(v) for v in self.levels))

    @property
    def label(self) -> str:
        """`name`, plus ``" (untrained weights)"`` when `trained` is False."""
        return self.name if self.trained else f"{self.name} (untrained weights)"

    def __call__(self, images, level: int, branch: str) -> np.ndarray:
        """Feature maps ``(B, h, w, C)`` float32 of `images` ``(B, H, W, 3)`` at `level`."""
        if level not in self.levels:
            raise ValueError(f"`level` must be one of {tuple(self.levels)} for source {self.name!r}, got {level!r}")
        if branch not in BRANCHES:
            raise ValueError(f"`branch` must be one of {BRANCHES}, got {branch!r}")
        images = np.asarray(images, dtype=np.float32)
        check_shape("images", images, (None, None, None, 3), "B x H x W x 3 RGB in [0, 1]")
        out = np.asarray(self.fn(images, int(level), branch), dtype=np.float32)
        check_shape(f"features of source {self.name!r}", out, (images.shape[0], None, None, None), "B x h x w x C")
        s = level_scale(level)
        expected = (int(images.shape[1] * s), int(images.shape[2] * s))
        if out.shape[1:3] != expected:
            raise ValueError(f"source {self.name!r} returned maps of size {out.shape[1:3]} at level {level}, "
                             f"expected {expected} for images of size {images.shape[1:3]}")
        return out

    def pyramid(self, images, branch: str, levels=None) -> list:
        """Feature maps at `levels` (default: all), **coarsest first** (as `deeplk.lk` wants)."""
        levels = sorted(self.levels if levels is None else levels, reverse=True)
        return [self(images, level, branch) for level in levels]


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling, stride 2 (odd sizes floored), as `deeplk.lk.build_pyramid`."""
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :2 * h2, :2 * w2].reshape(b, h2, 2, w2, 2, c).mean(axis=(2, 4))


def intensity_source(levels=(1, 2, 3), blur_sigma: float = 0.0) -> FeatureSource:
    """Raw grey intensities (luma) at each level by repeated 2x2 average pooling: what classical
    LK aligns. Same function for both branches; one channel.

    Args:
        levels: levels provided.
        blur_sigma: optional Gaussian blur (pixels of the level) after pooling; 0 = raw.
    """
    blur_sigma = float(blur_sigma)
    if not (np.isfinite(blur_sigma) and blur_sigma >= 0):
        raise ValueError(f"`blur_sigma` must be a finite number >= 0, got {blur_sigma!r}")

    def fn(images, level, branch):
        x = (images @ _LUMA)[..., None]
        for _ in range(level - 1):
            x = _avg_pool2(x)
        if blur_sigma > 0:
            import cv2

            x = np.stack([cv2.GaussianBlur(im[..., 0], (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)[..., None] for im in x])
        return x

    note = "grey intensities (luma), 2x2 average pyramid" + (f", blur sigma {blur_sigma:g}" if blur_sigma else "")
    return FeatureSource("intensity", fn, tuple(levels), True, note)


def untrained_source(channels: int = 16, seed: int = 0, levels=(1, 2, 3)) -> FeatureSource:
    """A randomly initialised Siamese stand-in for the DLKFM extractors (untrained weights).

    Per branch (separate weights, as DLKFM): level 1 is ``conv3x3(channels) - tanh - conv3x3``
    on the image; level ``L > 1`` a zero-padded stride-2 ``conv3x3`` on level ``L-1``'s output
    (DLKFM's sizes 192/128, 96/64, 48/32 and coordinates ``x_L = x / 2^(L-1)``). Glorot-uniform weights from `seed`. It shows what the
    architecture alone does to the images; it is not what DLKFM learns.
    """
    import keras
    import tensorflow as tf

    channels = int(channels)
    if channels < 1:
        raise ValueError(f"`channels` must be >= 1, got {channels!r}")
    levels = tuple(sorted(levels))
    if levels != tuple(range(1, len(levels) + 1)):
        raise ValueError(f"`levels` must be 1, 2, ... n, got {levels!r}")
    nets = {}
    for b, branch in enumerate(BRANCHES):
        layers = []
        for level in levels:
            init = keras.initializers.GlorotUniform(seed=seed * 1000 + b * 100 + level)
            if level == 1:
                block = [keras.layers.Conv2D(channels, 3, padding="same", activation="tanh", kernel_initializer=init),
                         keras.layers.Conv2D(channels, 3, padding="same",
                                             kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + b * 100 + 50))]
            else:  # pad 1 + valid stride 2: output i is centred on input pixel 2 i (as DLKFM)
                block = [keras.layers.ZeroPadding2D(1),
                         keras.layers.Conv2D(channels, 3, strides=2, padding="valid", activation="tanh", kernel_initializer=init)]
            layers.append(block)
        nets[branch] = layers

    def fn(images, level, branch):
        x = tf.convert_to_tensor(images)
        for block in nets[branch][:level]:
            for layer in block:
                x = layer(x)
        return x.numpy()

    note = f"untrained stand-in: random Siamese conv features ({channels} channels, seed {seed})"
    return FeatureSource("stand-in", fn, levels, False, note, half_pixel_centers=False)


def dlkfm_source(model, trained: bool = True, note: str = "", name: str = "DLKFM") -> FeatureSource:
    """The feature extractors of a `deeplk.models.dlkfm.DLKFMNet` as a `FeatureSource`.

    Level ``L`` of a branch runs that branch's extractors ``1..L`` in inference mode (batch-norm
    moving statistics); the outputs of the last images seen are kept, so a pyramid costs one pass.
    Coordinates of the levels follow the stride-2 layers (``half_pixel_centers=False``; a model
    on the MIND pyramid: its 2x2 pooling, ``True``, each level computed on its own); LK aligns
    what the model was trained for (``model.feature_type``: regular or special maps).
    """
    import tensorflow as tf

    levels = tuple(range(1, int(model.levels) + 1))
    memo: dict = {}

    mind = getattr(model, "input_representation", "rgb") == "mind"

    def fn(images, level, branch):
        extractors = model.input_extractors if branch == "input" else model.template_extractors
        if mind:  # each level: its MIND descriptor plus that level's residual
            from deeplk.models.dlkfm import MIND_CHANNELS

            x = model.descriptor_pyramid(tf.constant(images), level)[level - 1]
            base = tf.pad(x[..., :MIND_CHANNELS],
                          [[0, 0], [0, 0], [0, 0], [0, model.channels - MIND_CHANNELS]])
            return (base + extractors[level - 1](x, training=False)).numpy()
        key = (branch, images.shape, hash(images.tobytes()))
        outs = memo.get(key)
        if outs is None:
            if len(memo) >= 4:
                memo.clear()
            outs = memo[key] = []
        x = tf.constant(images) if not outs else tf.constant(outs[-1])
        while len(outs) < level:
            x = extractors[len(outs)](x, training=False)
            outs.append(x.numpy())
        return outs[level - 1]

    return FeatureSource(name, fn, levels, bool(trained), note,
                         half_pixel_centers=bool(getattr(model, "half_pixel_centers", False)),
                         lk_features=getattr(model, "feature_type", "regular"))


def load_learned_source(checkpoint_dir="checkpoints", seed: int = 0) -> FeatureSource:
    """The learned features to explore: DLKFM from ``<checkpoint_dir>/dlkfm`` when trained, else
    untrained weights, said loudly.

    - Trained levels found (`deeplk.models.dlkfm.trained_levels`): the model of the highest one
      (`deeplk.models.dlkfm.load_dlkfm`, levels ``1..k``), ``trained=True``.
    - No trained level: the DLKFM architecture (level 1's ``model_config.json`` if present) with
      random initial weights from `seed`, ``trained=False``; the note names the folder searched.
    - DLKFM not importable: `untrained_source` (``trained=False``), the note says why.

    Never raises for a missing checkpoint: the explorer must open on a fresh checkout.
    """
    try:
        from deeplk.models import dlkfm
    except ImportError as e:
        src = untrained_source(channels=16, seed=seed)
        src.note += f"; the DLKFM model could not be imported ({e})"
        return src
    root = dlkfm.dlkfm_root(checkpoint_dir)
    levels = dlkfm.trained_levels(checkpoint_dir)
    if levels:
        top = max(levels)
        model = dlkfm.load_dlkfm(checkpoint_dir, top)
        trained = ", ".join(str(k) for k in sorted(levels))
        return dlkfm_source(model, True, f"DLKFM levels 1-{top}, trained: {trained}, from "
                                         f"{dlkfm.level_dir(checkpoint_dir, top)}")
    try:
        arch = dlkfm.level_architecture(checkpoint_dir, 1) or {}
    except ValueError:
        arch = {}
    model = dlkfm.make_dlkfm_net(3, seed=seed, **arch)
    return dlkfm_source(model, False, f"no trained DLKFM in {root}: the DLKFM architecture with random initial "
                        f"weights (seed {seed})")
