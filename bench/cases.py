"""Training-step benchmark cases of the learned models: ``(task, batch)`` pairs for
``bench/train_step.py`` (untrained weights, synthetic batches: the speed does not depend on the
values). Time one with
``deeplk.train.train(task, tf.data.Dataset.from_tensors(batch), TrainConfig(steps=...))``.
"""

from __future__ import annotations

import numpy as np
import deeplk  # noqa: F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
import tensorflow as tf

from deeplk.data.augment import centred_corners
from deeplk.geometry import corners_to_homography
from deeplk.models import homography_net, regression
from deeplk.warp import warp_image

# name -> (RegressionNet options, number of frozen earlier stages)
REGRESSION_CASES = {
    "dhn": ({}, 0),
    "dhn_half": ({"input_scale": 0.5}, 0),
    "dhn_demo": ({"input_scale": 0.25, "normalise": True, "dropout": 0.0, "bn_momentum": 0.9}, 0),
    "mhn_stage2": ({}, 1),
    "mhn_stage3": ({}, 2),
}


def regression_case(name: str = "dhn", batch_size: int = 32, seed: int = 0):
    """A `deeplk.models.regression.RegressionTask` and one synthetic batch.

    Names: ``"dhn"`` (full resolution), ``"dhn_half"`` (``input_scale=0.5``), ``"dhn_demo"`` (the
    demo profile's net: ``input_scale=0.25``, ``normalise``, no dropout), ``"mhn_stage2"``,
    ``"mhn_stage3"`` (full resolution; the frozen earlier stages are untrained nets of the same
    architecture, which costs the same as trained ones).

    Returns:
        ``(task, batch)`` with ``batch = (inputs (B, 192, 192, 3), templates (B, 128, 128, 3),
        corners (B, 4, 2))`` float32 tensors, the templates cut from the inputs.
    """
    if name not in REGRESSION_CASES:
        raise ValueError(f"unknown benchmark case {name!r}; choose one of {sorted(REGRESSION_CASES)}")
    options, n_prev = REGRESSION_CASES[name]
    rng = np.random.default_rng(seed)
    size = regression.INPUT_SIZE
    inputs = tf.constant(rng.random((batch_size, size, size, 3), dtype=np.float32))
    batch = regression.resample_perturbations(inputs, tf.constant([seed, 0], tf.int64))
    previous = [regression.RegressionTask(options).build_model() for _ in range(n_prev)]
    return regression.RegressionTask(options, previous=previous), batch


def homography_net_case(name: str, batch_size: int | None = None, seed: int = 0, loss_pools=None,
                        outside_weight=None, **model_options):
    """``(task, batch)`` for a training-step benchmark of ``hnet_sup`` or ``hnet_unsup``.

    The paper's architecture (random frozen backbone, no download) with the paper batch size 64
    (DeTone 2016; Nguyen 2018 used 128) unless `batch_size` is given; `model_options` override
    `deeplk.models.homography_net.HomographyNet` options (e.g. ``input_scale=0.25,
    inception_filters=16`` for the demo); `loss_pools` and `outside_weight` are the unsupervised
    loss' pyramid and corner penalty (`deeplk.models.homography_net.make_task`). The batch is a random DLK-format batch
    ``(inputs, templates, corners)``.
    """
    modes = {v: k for k, v in homography_net.MODES.items()}
    if name not in modes:
        raise ValueError(f"`name` must be one of {sorted(modes)}, got {name!r}")
    batch_size = 64 if batch_size is None else int(batch_size)
    config = {"vgg_weights": None, **model_options}
    task = homography_net.make_task(modes[name], config, loss_pools=loss_pools, outside_weight=outside_weight)
    rng = np.random.default_rng(seed)
    s, t = config.get("input_size", 192), config.get("template_size", 128)
    inputs = rng.random((batch_size, s, s, 3), dtype=np.float32)
    offsets = rng.uniform(-32, 32, (batch_size, 4, 2)).astype(np.float32)
    corners = (centred_corners(s, t) + offsets).astype(np.float32)
    H = corners_to_homography(corners, t)
    templates = warp_image(inputs, H, t, return_mask=False).numpy()
    return task, (tf.constant(inputs), tf.constant(templates), tf.constant(corners))
