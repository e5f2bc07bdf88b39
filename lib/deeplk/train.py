"""One training loop for every model of the project.

The loop knows nothing about homographies: the model-specific part is a small *task* object
(`TrainTask`) that builds the Keras model and computes a scalar loss (plus optional metrics)
on one batch. The loop owns the optimiser, the learning-rate schedule, gradient clipping, the
non-finite-step guard, checkpoints and resumption, distribution, TensorBoard logs and the
progress bar::

    class RegressionTask:
        def build_model(self):
            return make_dhn()                      # a built keras.Model
        def compute_loss(self, model, batch, training):
            inputs, templates, corners = batch
            pred = model(pack(inputs, templates), training=training)
            loss = tf.reduce_mean(tf.square(pred - corners))
            return loss, {"mace": mean_corner_error(pred, corners)}

    ds = load_dataset("Dataset/Demo", "train2014", batch_size=32, shuffle=True, seed=0)
    config = TrainConfig(steps=20_000, checkpoint_dir="checkpoints/dhn", log_dir="runs/dhn")
    result = train(RegressionTask(), ds, config)
    model = load_latest(RegressionTask(), "checkpoints/dhn")

Design notes (what is guaranteed and how):

* **Step.** One ``tf.function`` per run takes the next batch, runs ``task.compute_loss`` under a
  ``tf.GradientTape`` in every replica (``strategy.run``), all-reduces loss, metrics and
  gradients, clips the gradients by their global norm (`TrainConfig.clipnorm`) and applies them
  with the Keras optimiser's ``update_step`` inside ``strategy.extended.update``.
* **Non-finite guard.** If the loss or the global gradient norm is NaN or infinite (every
  replica sees the same all-reduced values, so they agree), the update is not run at all: it
  sits in the true branch of a ``tf.cond``, so weights, Adam moments and the optimiser's
  iteration counter stay untouched. Non-trainable model state that the forward pass may have
  changed (batch-norm moving statistics, random-seed states) is restored from a snapshot taken
  before the step. The step still counts towards `TrainConfig.steps`; skipped steps are counted
  (`TrainResult.skipped_steps`, checkpointed, logged as ``train/skipped_steps``). A global norm
  that overflows float32 counts as non-finite.
* **Distribution and loss scaling.** ``compute_loss`` returns the *mean over its local batch*.
  The loop weights each replica's loss, metrics and gradients by ``local_batch / global_batch``
  (the batch size is read from the leading dimension of the first tensor of the batch) and sums
  them across replicas, so the result is the mean over the global batch even when the batch
  does not split evenly. With one replica this is the plain mean. Model and optimiser are built
  under ``strategy.scope()``; with several replicas the dataset is split by
  ``strategy.experimental_distribute_dataset`` (each global batch is divided between replicas).
* **Choosing the strategy.** ``strategy="auto"`` (what the notebooks' ``distribute`` parameter
  defaults to) is ``MirroredStrategy`` over the local GPUs when more than one GPU is visible and
  the default strategy otherwise (`auto_strategy_name`), so one GPU or a CPU trains exactly as
  ``"default"`` does.
* **Mixed precision.** ``TrainConfig(mixed_precision=True)`` builds the model under the Keras
  ``"mixed_float16"`` policy (layers compute in float16, their weights, the optimiser and the
  checkpoints stay float32, so checkpoints move freely between float32 and mixed runs), only
  when a GPU is visible: on a CPU it logs a warning and trains in float32. Tasks cast what
  they take from the model to float32 before the loss; the LK solver and the warps cast
  half-precision features to float32 on entry (`deeplk.lk`), and `LucasKanadeLayer` is a
  float32 layer. Gradients are protected from float16 underflow by dynamic loss scaling, the
  rule of ``keras.optimizers.LossScaleOptimizer`` (which the loop cannot use as is, since it
  applies updates itself): the loss is multiplied by a scale (initially ``2**15``) before the
  gradients are taken and the gradients divided by it; a step whose gradients overflow is
  skipped by the non-finite guard (and counted in ``skipped_steps``) and halves the scale (not
  below 1); after 2000 finite steps in a row the scale doubles. The scale and its counter are
  checkpointed (a float32 checkpoint resumes under mixed precision from the initial scale).
* **Multi-worker.** ``strategy="multi_worker"`` uses one
  ``tf.distribute.MultiWorkerMirroredStrategy`` per process (`multi_worker_strategy`), which
  reads the cluster from the ``TF_CONFIG`` environment variable (no ``TF_CONFIG``: a single local
  worker). TensorFlow must configure its collective ops before anything else runs, so in a
  multi-worker job call `multi_worker_strategy` first thing in the program, before building
  the dataset. Every worker runs the same program on the same dataset (the global batches); the
  dataset is sharded between workers by data (``AutoShardPolicy.DATA``), so each global batch is
  divided between all replicas of all workers. Only the chief (``"chief"`` task, else worker 0)
  writes into `checkpoint_dir` and `log_dir`; the other workers write their share of a
  checkpoint to a scratch folder (``<checkpoint_dir>/.worker-<i>``, deleted after each save),
  as TensorFlow requires every worker to take part in a save. All workers restore from
  `checkpoint_dir`, so it must be on a file system they share. The data position is restored
  by skipping batches.
* **Checkpoints.** ``tf.train.Checkpoint(model, weights, optimizer, step, skipped, rng[, data])`` managed
  by ``tf.train.CheckpointManager`` (``ckpt-<step>``), every `checkpoint_every` steps, at the
  end, and when the run is interrupted by ``KeyboardInterrupt``. A crash while writing cannot
  spoil the latest good checkpoint: TensorFlow writes a new checkpoint's shards into a
  ``<prefix>_temp`` folder and merges them under a new name (``ckpt-<step>``, never an existing
  good one), and only after that rewrites the ``checkpoint`` index file, atomically (temporary
  file + rename); old checkpoints are deleted after the index points to the new one. On resume,
  a latest checkpoint that cannot be read (truncated or missing files) is reported and the
  previous one is used. (This protects against the process dying; TensorFlow does not fsync,
  so after a power cut it depends on the file system.) The final weights are also exported as
  ``<checkpoint_dir>/final.weights.h5`` (``model.save_weights`` to a temporary name, then
  ``os.replace``) for inference code, and ``<checkpoint_dir>/train_meta.json`` records the
  model's weight shapes so that a checkpoint of another model is reported clearly.
* **Resume.** `train` with a `checkpoint_dir` holding checkpoints restores model, optimiser
  state, step counter, skipped count and the Keras random-seed states of the model (e.g.
  dropout), then continues to `TrainConfig.steps` (at most `checkpoint_every` steps are redone
  after a crash). Raising `steps` continues a finished run. The data position is restored as
  set by `TrainConfig.data_resume`:

  - ``"state"``: the dataset iterator is saved in every checkpoint (tf.data iterator
    checkpointing, including shuffle buffers and their random state), so the run continues with
    exactly the batch it would have seen. Needs one replica and a pipeline TensorFlow can
    serialise (no ``py_function``, ``from_generator`` or unseeded stateful random ops in
    ``map``). Checkpoints also hold the pipeline's buffered elements (a few batches).
  - ``"skip"``: on resume the first ``step`` batches of ``dataset`` are skipped (read and
    dropped), so the same batches as in an uninterrupted run follow if ``dataset`` yields the
    same sequence as the one that run saw (see below); skipping costs reading those batches.
    A run that resumed by skipping saves no iterator state, so its later resumptions skip too.
  - ``"restart"``: iterate ``dataset`` from its beginning again (cheapest; the order is not
    that of an uninterrupted run).
  - ``"auto"`` (default): ``"state"`` when possible (one replica, serialisable pipeline:
    checked at the start by writing the iterator to a scratch folder), else ``"skip"``. A
    ``tf.distribute`` distributed iterator cannot be checkpointed (TF 2.21), hence ``"skip"``
    with several replicas.

  What "the same sequence" takes: `train` makes exactly one iterator over ``dataset`` per
  call. A seeded ``shuffle(..., seed=s)`` (as in ``load_dataset(..., shuffle=True, seed=s)``)
  combines ``s`` with the *global* TensorFlow seed current when the dataset was built, so build
  it after `deeplk.utils.seed_everything` (or ``tf.random.set_seed``) with the same seed each
  time; and with ``reshuffle_each_iteration=True`` (the default) a second iterator over the
  *same dataset object* continues the random sequence instead of restarting it, so after an
  interruption in a notebook rebuild the dataset before calling `train` again ("state" does not
  mind: it restores the shuffle's random state).

  With deterministic ops (the CPU kernels used here are; on GPU call
  ``tf.config.experimental.enable_op_determinism()``) a resumed run then ends with the same
  weights as an uninterrupted one (the tests check equality to float32 rounding). Not
  reproduced: random ops inside ``compute_loss`` whose state is not a variable of the model
  (attach a ``keras.random.SeedGenerator`` to the model in ``build_model``, e.g.
  ``model.loss_rng = keras.random.SeedGenerator(seed)``, and pass it as ``seed=`` so its state is
  checkpointed), and anything random in ``dataset`` under ``"restart"``.
* **Learning rate.** A function of the loop's step counter (skipped steps included), see
  `learning_rate_at`: optional linear warm-up, then constant, cosine or exponential decay.
* **Logs.** Every `log_every` steps and at the end: the mean loss and metrics over the steps
  of the window that were not skipped go to `TrainResult.history`, the progress bar (tqdm) and,
  with `log_dir`, TensorBoard scalars ``train/loss``, ``train/<metric>``,
  ``train/learning_rate``, ``train/grad_norm`` (before clipping), ``train/skipped_steps``
  (cumulative) and ``train/steps_per_second``. Scalars are written with ``tf.summary.write``
  and TensorBoard's scalar metadata, so the ``tensorboard`` package is not needed to write them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

from deeplk._checks import RENAMED, renamed_hint
from deeplk.paths import resolve
from deeplk.utils import seed_everything, write_text_atomic

__all__ = [
    "TrainTask",
    "TrainConfig",
    "TrainResult",
    "CheckpointMismatchError",
    "train",
    "load_latest",
    "learning_rate_at",
    "latest_step",
    "multi_worker_strategy",
    "auto_strategy_name",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "DATA_RESUME_MODES",
    "FINAL_WEIGHTS_NAME",
    "META_NAME",
    "RUN_CONFIG_NAME",
    "RunRecord",
    "as_config",
    "check_keys",
    "check_stage",
    "stage_folder",
    "write_run_config",
    "read_run_config",
    "has_weights",
    "load_run",
]

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine", "exponential")
OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("default", "auto", "mirrored", "multi_worker")
DATA_RESUME_MODES = ("auto", "state", "skip", "restart")
#: File names inside `TrainConfig.checkpoint_dir`.
FINAL_WEIGHTS_NAME = "final.weights.h5"
META_NAME = "train_meta.json"
_CKPT_NAME = "ckpt"
_META_FORMAT = 1


# ------------------------------------------------------------------------------------------
# Public types


@runtime_checkable
class TrainTask(Protocol):
    """The model-specific part of training.

    Required methods:

    - ``build_model() -> keras.Model``: a *built* model (all variables created: functional
      models are; call ``model.build(shape)`` on subclassed ones). Called under the
      distribution strategy's scope, after `deeplk.utils.seed_everything`.
    - ``compute_loss(model, batch, training) -> loss`` or ``(loss, metrics)``: ``batch`` is one
      element of the dataset as it comes (for `deeplk.data.load_dataset`:
      ``(input (B, 192, 192, 3), template (B, 128, 128, 3), corners (B, 4, 2))``); ``loss`` is a
      scalar, the **mean over this (local) batch**; ``metrics`` a dict of scalar tensors, also
      batch means. Runs inside a ``tf.function`` (traced once): use TensorFlow ops, no Python
      side effects per step. The loop calls it with ``training=True``. Under
      ``TrainConfig(mixed_precision=True)`` the model's outputs are float16: cast them to float32
      before the loss (every task of `deeplk.models` does).

    Optional methods:

    - ``trainable_variables(model) -> list``: the variables to train (default
      ``model.trainable_variables``), e.g. to freeze the earlier levels of DLKFM. They must be
      variables of ``model`` (so that they are checkpointed).
    - ``run_config() -> dict``: ``{"family": str, "model": dict, "task": dict}``, the model
      family, its architecture and the task's options; `train` writes it to
      ``<checkpoint_dir>/model_config.json`` (`write_run_config`), which `load_run` reads back.
    """

    def build_model(self) -> keras.Model: ...

    def compute_loss(self, model: keras.Model, batch: Any, training: bool) -> Any: ...


class CheckpointMismatchError(ValueError):
    """`checkpoint_dir` holds a checkpoint of a different model (or different trainable set)."""


@dataclass
class TrainConfig:
    """Settings of `train`. Invalid values raise ``ValueError`` naming the field.

    Attributes:
        steps: total number of training steps (resumed runs continue up to it).
        learning_rate: base (peak) learning rate.
        lr_schedule: ``"constant"``, ``"cosine"`` (to ``learning_rate * lr_min_ratio`` at
            `steps`) or ``"exponential"``
            (``learning_rate * lr_decay_rate ** (t / lr_decay_steps)``), applied after the
            warm-up; see `learning_rate_at`.
        warmup_steps: linear warm-up from ``learning_rate / warmup_steps`` to ``learning_rate``.
        lr_decay_rate: exponential schedule: factor per `lr_decay_steps` steps, in (0, 1].
        lr_decay_steps: exponential schedule: steps per `lr_decay_rate` factor; ``None`` means
            ``steps - warmup_steps`` (the rate is reached at the end of training).
        lr_min_ratio: cosine schedule: final learning rate as a fraction of `learning_rate`.
        clipnorm: clip the gradients by their global norm (after reduction across replicas);
            ``None`` disables clipping.
        optimizer: ``"adam"`` (Keras Adam) or ``"sgd"`` (plain Keras SGD, no momentum).
        checkpoint_dir: where checkpoints, ``final.weights.h5`` and ``train_meta.json`` go
            (relative paths are under the project root); ``None``: no checkpoints, no resume.
        checkpoint_every: save every this many steps (and at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        log_dir: TensorBoard folder (relative paths under the project root), or ``None``.
        log_every: log (history, progress bar, TensorBoard) every this many steps and at the end.
        seed: passed to `deeplk.utils.seed_everything` at the start of `train`.
        strategy: ``"default"`` (``tf.distribute.get_strategy()``), ``"auto"``
            (``tf.distribute.MirroredStrategy()`` over the local GPUs when more than one is
            visible, else the default strategy, see `auto_strategy_name`), ``"mirrored"``
            (``tf.distribute.MirroredStrategy()``: all local GPUs, else the CPU devices),
            ``"multi_worker"`` (``tf.distribute.MultiWorkerMirroredStrategy``, the cluster read
            from ``TF_CONFIG``, see `multi_worker_strategy`), or a ``tf.distribute.Strategy``
            used as is.
        data_resume: how the data position is restored on resume: ``"auto"``, ``"state"``,
            ``"skip"`` or ``"restart"`` (see the module docstring).
        progress: show a tqdm progress bar.
        mixed_precision: build the model under the Keras ``"mixed_float16"`` policy (float16
            computations, float32 weights) with dynamic loss scaling (see the module
            docstring); the LK solve, warps and homography maths stay in float32. Needs a GPU:
            with none visible, `train` logs a warning and trains in float32 (CPU float16 is
            much slower than float32).
    """

    steps: int
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_decay_rate: float = 0.1
    lr_decay_steps: int | None = None
    lr_min_ratio: float = 0.0
    clipnorm: float | None = 1.0
    optimizer: str = "adam"
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_dir: str | os.PathLike | None = None
    log_every: int = 50
    seed: int = 0
    strategy: Any = "default"
    data_resume: str = "auto"
    progress: bool = True
    mixed_precision: bool = False

    def __post_init__(self):
        self.steps = _positive_int("steps", self.steps)
        self.learning_rate = _positive_float("learning_rate", self.learning_rate)
        self.lr_schedule = _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.warmup_steps = _int_at_least("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"`TrainConfig.warmup_steps` must be at most `steps` ({self.steps}), "
                f"got {self.warmup_steps}"
            )
        self.lr_decay_rate = _positive_float("lr_decay_rate", self.lr_decay_rate)
        if self.lr_decay_rate > 1:
            raise ValueError(
                f"`TrainConfig.lr_decay_rate` must be in (0, 1], got {self.lr_decay_rate!r}"
            )
        if self.lr_decay_steps is not None:
            self.lr_decay_steps = _positive_int("lr_decay_steps", self.lr_decay_steps)
        self.lr_min_ratio = _float_in("lr_min_ratio", self.lr_min_ratio, 0.0, 1.0)
        if self.clipnorm is not None:
            self.clipnorm = _positive_float("clipnorm", self.clipnorm)
        self.optimizer = _choice("optimizer", self.optimizer, OPTIMIZERS)
        self.checkpoint_dir = _optional_path("checkpoint_dir", self.checkpoint_dir)
        self.checkpoint_every = _positive_int("checkpoint_every", self.checkpoint_every)
        self.keep_checkpoints = _positive_int("keep_checkpoints", self.keep_checkpoints)
        self.log_dir = _optional_path("log_dir", self.log_dir)
        self.log_every = _positive_int("log_every", self.log_every)
        self.seed = _int_at_least("seed", self.seed, 0)
        if not isinstance(self.strategy, tf.distribute.Strategy):
            self.strategy = _choice("strategy", self.strategy, STRATEGIES)
        self.data_resume = _choice("data_resume", self.data_resume, DATA_RESUME_MODES)
        for name in ("progress", "mixed_precision"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{_field(name)} must be a bool, got {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        steps: the step counter at the end (== `TrainConfig.steps` unless already beyond).
        start_step: the step the run started from (0, or the restored checkpoint's step).
        skipped_steps: non-finite steps skipped, over the whole run including earlier
            (resumed) parts.
        final_loss: mean loss over the last logging window (NaN if every step of it was
            skipped; NaN too if this call ran no step).
        history: ``(step, mean loss over the window ending at step)`` at every log point of
            this call.
        metrics: the task's metrics, means over the last logging window.
        checkpoint_path: prefix of the latest checkpoint (``.../ckpt-<step>``), or ``None``.
        weights_path: ``<checkpoint_dir>/final.weights.h5``, or ``None``.
        seconds: wall-clock time of this call.
        data_resume: how the data position was set: ``"start"`` (fresh run), ``"state"``,
            ``"skip"`` or ``"restart"``.
        model: the trained model.
        replicas: replicas in sync under the strategy used (1: a single device).
        mixed_precision: whether the run used the ``mixed_float16`` policy.
    """

    steps: int
    start_step: int
    skipped_steps: int
    final_loss: float
    history: list[tuple[int, float]]
    metrics: dict[str, float]
    checkpoint_path: str | None
    weights_path: str | None
    seconds: float
    data_resume: str
    model: keras.Model | None = field(default=None, repr=False)
    replicas: int = 1
    mixed_precision: bool = False


# ------------------------------------------------------------------------------------------
# Config checks


def _field(name: str) -> str:
    return f"`TrainConfig.{name}`"


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{_field(name)} must be a positive integer, got {value!r}")
    return int(value)


def _int_at_least(name, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{_field(name)} must be an integer >= {low}, got {value!r}")
    return int(value)


def _positive_float(name, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{_field(name)} must be a finite number > 0, got {value!r}")
    return float(value)


def _float_in(name, value, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not low <= value <= high
    ):
        raise ValueError(f"{_field(name)} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _choice(name, value, choices) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        extra = " or a tf.distribute.Strategy" if name == "strategy" else ""
        raise ValueError(
            f"{_field(name)} must be one of {', '.join(map(repr, choices))}{extra}, got {value!r}"
        )
    return value.lower()


def _optional_path(name, value):
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{_field(name)} must be a path or None, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------
# Learning rate


def _learning_rate(config: TrainConfig, step) -> tf.Tensor:
    """The learning rate at 0-based `step` (int tensor) as float32 (graph-friendly)."""
    t = tf.cast(step, tf.float32)
    base = tf.constant(config.learning_rate, tf.float32)
    warmup = config.warmup_steps
    decay_len = float(max(1, config.steps - warmup))
    u = tf.maximum(t - warmup, 0.0)
    if config.lr_schedule == "constant":
        lr = base
    elif config.lr_schedule == "cosine":
        progress = tf.minimum(u / decay_len, 1.0)
        ratio = config.lr_min_ratio
        lr = base * (ratio + (1.0 - ratio) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
    else:  # exponential
        decay_steps = float(config.lr_decay_steps or decay_len)
        lr = base * tf.pow(tf.constant(config.lr_decay_rate, tf.float32), u / decay_steps)
    if warmup > 0:
        lr = tf.where(t < warmup, base * (t + 1.0) / warmup, lr)
    return lr


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """The learning rate the loop uses at 0-based step `step` (the ``step``-th update).

    With ``w = warmup_steps``, ``T = steps``, ``u = step - w`` and ``D = max(1, T - w)``:
    ``lr * (step + 1) / w`` while ``step < w``; afterwards ``lr`` (constant),
    ``lr * (r + (1 - r) * (1 + cos(pi * min(u / D, 1))) / 2)`` with ``r = lr_min_ratio``
    (cosine), or ``lr * lr_decay_rate ** (u / (lr_decay_steps or D))`` (exponential).
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"`step` must be an integer >= 0, got {step!r}")
    return float(_learning_rate(config, tf.constant(int(step), tf.int64)).numpy())


# ------------------------------------------------------------------------------------------
# Checkpoint helpers


def latest_step(checkpoint_dir) -> int | None:
    """The step of the latest checkpoint in `checkpoint_dir`, or ``None`` if there is none."""
    path = tf.train.latest_checkpoint(str(resolve(checkpoint_dir)))
    return None if path is None else _step_of(path)


def _step_of(prefix: str) -> int:
    m = re.search(r"-(\d+)$", prefix)
    return int(m.group(1)) if m else -1


def _save_weights_atomic(model: keras.Model, path: Path) -> None:
    """`model.save_weights(path)` through a temporary name in the same folder + os.replace."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _model_signature(model: keras.Model, trainable) -> dict:
    train_ids = {id(v) for v in trainable}
    return {
        "model": model.name,
        "weights": [
            {
                "path": v.path,
                "shape": [int(d) for d in v.shape],
                "dtype": str(v.dtype),
                "trained": id(v) in train_ids,
            }
            for v in model.weights
        ],
    }


def _describe(w: dict) -> str:
    flag = ", trained" if w["trained"] else ""
    return f"{w['path']} {tuple(w['shape'])} {w['dtype']}{flag}"


def _signature_difference(saved: dict, current: dict, trained: bool = True) -> str | None:
    """A readable description of the first differences, or None if compatible. `trained`:
    whether the set of trained variables must match too (it must to resume training, since
    the optimiser holds state for each of them)."""
    a, b = saved.get("weights", []), current["weights"]

    def key(w):
        return (tuple(w["shape"]), w["dtype"], bool(w.get("trained")) if trained else None)

    if len(a) == len(b) and all(key(x) == key(y) for x, y in zip(a, b)):
        return None
    lines = [f"the checkpoint's model has {len(a)} weights, the task's model {len(b)}"]
    shown = 0
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x is None or y is None or key(x) != key(y):
            lines.append(
                f"  weight {i}: checkpoint {_describe(x) if x else '-'}; "
                f"model {_describe(y) if y else '-'}"
            )
            shown += 1
            if shown == 5:
                lines.append("  ...")
                break
    return "\n".join(lines)


def _read_meta(ckpt_dir: Path) -> dict | None:
    path = ckpt_dir / META_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return None


def _check_signature(ckpt_dir: Path, signature: dict, task, trained: bool = True) -> None:
    meta = _read_meta(ckpt_dir)
    if meta is None or "signature" not in meta:
        return
    diff = _signature_difference(meta["signature"], signature, trained)
    if diff:
        raise CheckpointMismatchError(
            f"checkpoint_dir {ckpt_dir} holds checkpoints of a different model than the one "
            f"built by {type(task).__name__} (or a different set of trained variables):\n{diff}\n"
            "Use another checkpoint_dir, or delete this one to start afresh."
        )


def _checkpoint_candidates(ckpt_dir: Path) -> list[str]:
    """Checkpoint prefixes listed in the index file that exist, newest first."""
    state = tf.train.get_checkpoint_state(str(ckpt_dir))
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    out = []
    for p in paths:
        p = p if os.path.isabs(p) else str(ckpt_dir / p)
        if Path(p + ".index").is_file() and p not in out:
            out.append(p)
    return sorted(out, key=_step_of, reverse=True)


# Errors that mean "these files are damaged or missing", as opposed to a model mismatch
# (ValueError, AssertionError). TensorFlow's checkpoint reader reports a truncated data file
# as IndexError ("Read less bytes than requested").
_UNREADABLE = (tf.errors.OpError, IndexError, OSError)


def _weight_list(model: keras.Model) -> list:
    """Every weight of `model`, in `model.weights` order, for the checkpoint.

    TensorFlow's object-graph tracking does not reach the weights of Keras 3 layers that a model
    holds in a plain Python list (``self.blocks = [Dense(..), ...]``), so ``Checkpoint(model=...)``
    alone would silently drop them; listing the weights explicitly saves them all (a variable
    reached through two paths is stored once)."""
    return list(model.weights)


def _restore_latest(ckpt: tf.train.Checkpoint, ckpt_dir: Path, task) -> str | None:
    """Restore the newest readable checkpoint into `ckpt`; return its prefix (None if none)."""
    candidates = _checkpoint_candidates(ckpt_dir)
    for i, prefix in enumerate(candidates):
        try:
            status = ckpt.read(prefix)
            status.assert_existing_objects_matched()
            status.expect_partial()
        except _UNREADABLE as e:
            if i + 1 < len(candidates):
                log.warning(
                    "checkpoint %s cannot be read (%s: %s); trying the previous one",
                    prefix, type(e).__name__, str(e).splitlines()[0][:200],
                )
                continue
            raise RuntimeError(
                f"no readable checkpoint in {ckpt_dir}: the last one tried, {prefix}, failed "
                f"with {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            ) from e
        except (ValueError, AssertionError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {prefix} does not match the model built by {type(task).__name__} "
                f"(or its trained variables): {str(e).splitlines()[0][:500]}\n"
                "Use another checkpoint_dir, or delete this one to start afresh."
            ) from e
        return prefix
    return None


def _has_data_state(prefix: str) -> bool:
    try:
        return any(name.startswith("data/") for name, _ in tf.train.list_variables(prefix))
    except tf.errors.OpError:
        return False


def _iterator_is_saveable(iterator, scratch_parent: Path) -> tuple[bool, str]:
    """Whether tf.data can serialise `iterator` (tried by writing it to a scratch folder)."""
    scratch = Path(tempfile.mkdtemp(prefix=".probe-", dir=scratch_parent))
    try:
        tf.train.Checkpoint(data=iterator).write(str(scratch / "probe"))
        return True, ""
    except (tf.errors.OpError, ValueError, TypeError) as e:
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# TensorBoard


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    # What tensorboard.summary.scalar writes (plugin "scalars", empty content = version 0).
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )


def _tag(name: str) -> str:
    return "train/" + re.sub(r"[^A-Za-z0-9_./-]", "_", name)


# ------------------------------------------------------------------------------------------
# The loop


_MULTI_WORKER: list = []  # the process's MultiWorkerMirroredStrategy (TF allows only one)


def multi_worker_strategy() -> tf.distribute.Strategy:
    """The process's ``tf.distribute.MultiWorkerMirroredStrategy`` (created on first call).

    The cluster comes from the ``TF_CONFIG`` environment variable, e.g. on worker 1 of two::

        TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                    "task": {"type": "worker", "index": 1}}'

    Without ``TF_CONFIG`` it is a single local worker. TensorFlow configures its collective ops
    once, before any other TensorFlow work: in a multi-worker job call this first thing in the
    program (before building datasets or models); later calls return the same object.

    Raises:
        RuntimeError: TensorFlow was already initialised in a multi-worker ``TF_CONFIG`` job.
    """
    if not _MULTI_WORKER:
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise RuntimeError(
                f"cannot create the multi-worker strategy ({e}): with TF_CONFIG set, call "
                "deeplk.train.multi_worker_strategy() at the very start of the program, before "
                "any dataset, model or tensor is created; then pass strategy='multi_worker' "
                "(or the returned object) to TrainConfig"
            ) from e
        _MULTI_WORKER.append(strategy)
    return _MULTI_WORKER[0]


def _gpu_count() -> int:
    """The number of GPUs TensorFlow sees (the tests replace it to pretend some)."""
    return len(tf.config.list_physical_devices("GPU"))


def auto_strategy_name(num_gpus: int | None = None) -> str:
    """What ``strategy="auto"`` stands for: ``"mirrored"`` when more than one GPU is visible
    (`num_gpus`; ``None``: count them), else ``"default"``.

    >>> auto_strategy_name(2), auto_strategy_name(1), auto_strategy_name(0)
    ('mirrored', 'default', 'default')
    """
    if num_gpus is None:
        num_gpus = _gpu_count()
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, np.integer)) or num_gpus < 0:
        raise ValueError(f"`num_gpus` must be an integer >= 0 or None, got {num_gpus!r}")
    return "mirrored" if num_gpus > 1 else "default"


def _resolve_strategy(spec) -> tf.distribute.Strategy:
    if isinstance(spec, tf.distribute.Strategy):
        return spec
    if spec == "auto":
        spec = auto_strategy_name()
    if spec == "mirrored":
        return tf.distribute.MirroredStrategy()
    if spec == "multi_worker":
        return multi_worker_strategy()
    return tf.distribute.get_strategy()


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _worker_role(strategy) -> tuple[bool, int]:
    """``(is_chief, task_id)``: the chief is the ``"chief"`` task, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not _is_multi_worker(strategy) or resolver is None:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True, 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, int(task_id or 0)


#: Dynamic loss scaling under mixed precision (the values of keras.optimizers.LossScaleOptimizer).
_INITIAL_LOSS_SCALE = 2.0 ** 15
_LOSS_SCALE_GROWTH_STEPS = 2000


def _mixed_precision_active(config: TrainConfig) -> bool:
    """Whether this run uses ``mixed_float16``: asked for and a GPU visible (else a warning)."""
    if not config.mixed_precision:
        return False
    if _gpu_count() == 0:
        log.warning("mixed_precision=True but no GPU is visible: training in float32 (float16 "
                    "on a CPU is much slower than float32)")
        return False
    return True


@contextlib.contextmanager
def _global_dtype_policy(name: str):
    """Set Keras' global dtype policy to `name` inside the block, the previous one after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _check_task(task) -> None:
    missing = [m for m in ("build_model", "compute_loss") if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(
            f"`task` ({type(task).__name__}) must have the methods build_model() and "
            f"compute_loss(model, batch, training); missing: {', '.join(missing)}"
        )
    extra = getattr(task, "trainable_variables", None)
    if extra is not None and not callable(extra):
        raise TypeError("`task.trainable_variables` must be a method (model) -> list of variables")


def _build(task, strategy):
    """Build the model under `strategy` and pick the variables to train, with checks."""
    with strategy.scope():
        model = task.build_model()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{type(task).__name__}.build_model() must return a keras.Model, got "
            f"{type(model).__name__}"
        )
    if not model.built or not model.weights:
        raise ValueError(
            f"{type(task).__name__}.build_model() returned a model that is not built (no "
            "weights yet): use the functional API or call model.build(input_shape) first"
        )
    if callable(getattr(task, "trainable_variables", None)):
        variables = list(task.trainable_variables(model))
    else:
        variables = list(model.trainable_variables)
    if not variables:
        raise ValueError(f"{type(task).__name__}: there are no variables to train")
    model_ids = {id(v) for v in model.variables}
    if any(id(v) not in model_ids for v in variables):
        raise ValueError(
            f"{type(task).__name__}.trainable_variables(model) returned variables that are not "
            "variables of the model (they would not be checkpointed)"
        )
    return model, variables


def _make_optimizer(config: TrainConfig, step_var, variables, strategy):
    def lr():  # read by keras when someone asks optimizer.learning_rate
        return _learning_rate(config, step_var)

    with strategy.scope():
        if config.optimizer == "adam":
            opt = keras.optimizers.Adam(learning_rate=lr)
        else:
            opt = keras.optimizers.SGD(learning_rate=lr)
        opt.build(variables)
    return opt


def _unpack_loss(out, task):
    if isinstance(out, (tuple, list)):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise ValueError(
                f"{type(task).__name__}.compute_loss must return a scalar loss or "
                f"(loss, dict of scalar metrics), got a {type(out).__name__} of {len(out)} items"
            )
        loss, metrics = out
    else:
        loss, metrics = out, {}
    loss = _scalar(loss, f"{type(task).__name__}.compute_loss must return a scalar loss (the "
                         "mean over the batch)")
    clean = {}
    for name, value in sorted(metrics.items()):
        clean[str(name)] = _scalar(value, f"metric {name!r} of {type(task).__name__}.compute_loss "
                                          "must be a scalar")
    return loss, clean


def _scalar(value, message: str) -> tf.Tensor:
    value = tf.convert_to_tensor(value)
    if value.shape.rank is None:  # unknown statically (e.g. from tf.py_function): check at run
        value = tf.reshape(value, [])
    elif value.shape.rank != 0:
        raise ValueError(f"{message}, got shape {tuple(value.shape)}")
    return tf.cast(value, tf.float32)


def _batch_size(batch) -> tf.Tensor:
    leaves = tf.nest.flatten(batch)
    if not leaves:
        return tf.constant(1.0)
    first = tf.convert_to_tensor(leaves[0])
    if first.shape.rank == 0:
        return tf.constant(1.0)
    return tf.cast(tf.shape(first)[0], tf.float32)


def _make_train_step(task, model, variables, optimizer, strategy, config, step_var, skipped_var,
                     loss_scale=None):
    """The step function; `loss_scale`: ``None``, or ``[scale, good_steps]`` variables of the
    dynamic loss scaling of mixed precision."""
    n_replicas = strategy.num_replicas_in_sync
    clipnorm = config.clipnorm
    # State the forward pass may change (batch-norm statistics, seed-generator states) and that
    # must be put back on a skipped step.
    guarded = list(model.non_trainable_variables)
    # Variables the loss does not depend on (no gradient): left alone by the update, like Keras
    # does. Found when the replica step is traced, before the update is traced.
    no_grad: set[int] = set()

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss, metrics = _unpack_loss(task.compute_loss(model, batch, training=True), task)
            scaled = loss if loss_scale is None else loss * loss_scale[0]
        grads = tape.gradient(scaled, variables, unconnected_gradients="none")
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing and not no_grad:
            log.warning("no gradient for %d variables (left unchanged): %s", len(missing),
                        ", ".join(variables[i].path for i in missing[:10]))
        no_grad.update(missing)
        # Zeros stand in for missing gradients (they are not applied), dense for sparse ones.
        grads = [tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
                 for v, g in zip(variables, grads)]
        if loss_scale is not None:
            grads = [g / tf.cast(loss_scale[0], g.dtype) for g in grads]
        names = sorted(metrics)
        values = [metrics[k] for k in names]
        if n_replicas > 1:
            ctx = tf.distribute.get_replica_context()
            local = _batch_size(batch)
            total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
            weight = local / total
            present = local > 0  # an empty shard has a NaN mean: contribute nothing

            def w(x):
                return tf.where(present, x * tf.cast(weight, x.dtype), tf.zeros_like(x))

            loss, values, grads = ctx.all_reduce(
                tf.distribute.ReduceOp.SUM, [w(loss), [w(x) for x in values], [w(g) for g in grads]]
            )
        norm = tf.linalg.global_norm(grads)
        finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm))
        if clipnorm is not None:
            grads, _ = tf.clip_by_global_norm(grads, clipnorm, use_norm=norm)
        return loss, dict(zip(names, values)), grads, finite, norm

    def first(x):
        return tf.nest.map_structure(lambda t: strategy.experimental_local_results(t)[0], x)

    @tf.function
    def train_step(iterator):
        with strategy.scope():
            batch = next(iterator)
            lr = _learning_rate(config, step_var)
            snapshot = [tf.identity(v.value) for v in guarded]
            loss, metrics, grads, finite, norm = strategy.run(replica_step, args=(batch,))
            finite = first(finite)

            def apply():
                def update(var, grad):
                    optimizer.update_step(grad, var, lr)

                for i, (grad, var) in enumerate(zip(grads, variables)):
                    if i in no_grad:
                        continue
                    strategy.extended.update(var.value, update, args=(grad,), group=False)
                    if var.constraint is not None:
                        var.assign(var.constraint(var.value))
                optimizer.iterations.assign_add(1)
                if loss_scale is not None:  # finite: count, double the scale every N steps
                    scale, good = loss_scale
                    grow = good + 1 >= _LOSS_SCALE_GROWTH_STEPS
                    scale.assign(tf.where(grow, scale * 2.0, scale))
                    good.assign(tf.where(grow, tf.zeros_like(good), good + 1))
                return tf.constant(0, tf.int64)

            def skip():
                for var, value in zip(guarded, snapshot):
                    var.assign(value)
                if loss_scale is not None:  # overflow (or a NaN): halve the scale, not below 1
                    scale, good = loss_scale
                    scale.assign(tf.maximum(scale / 2.0, 1.0))
                    good.assign(tf.zeros_like(good))
                return tf.constant(1, tf.int64)

            skipped_var.assign_add(tf.cond(finite, apply, skip))
            step_var.assign_add(1)
            return first(loss), first(metrics), finite, first(norm), lr

    return train_step


class _Window:
    """Accumulates the per-step outputs between two log points (read at log time only)."""

    def __init__(self):
        self.items = []
        self.t0 = time.perf_counter()

    def add(self, out):
        self.items.append(out)

    def summary(self):
        finite = np.array([bool(o[2]) for o in self.items])
        losses = np.array([float(o[0]) for o in self.items])
        norms = np.array([float(o[3]) for o in self.items])
        names = sorted(self.items[0][1]) if self.items else []
        metrics = {
            k: float(np.mean([float(o[1][k]) for o, f in zip(self.items, finite) if f]))
            if finite.any() else float("nan")
            for k in names
        }
        ok = finite.any()
        out = {
            "loss": float(losses[finite].mean()) if ok else float("nan"),
            "grad_norm": float(norms[finite].mean()) if ok else float("nan"),
            "lr": float(self.items[-1][4]) if self.items else float("nan"),
            "steps_per_second": len(self.items) / max(time.perf_counter() - self.t0, 1e-9),
            "metrics": metrics,
        }
        self.items = []
        self.t0 = time.perf_counter()
        return out


def train(task: TrainTask, dataset: tf.data.Dataset, config: TrainConfig) -> TrainResult:
    """Train `task`'s model on `dataset` as set by `config`; resume from `checkpoint_dir`.

    Args:
        task: a `TrainTask` (``build_model``, ``compute_loss``, optionally
            ``trainable_variables``).
        dataset: a ``tf.data.Dataset`` whose elements are batches (global batches with several
            replicas); any structure, passed to ``compute_loss`` unchanged. The loop repeats it
            as needed (``dataset.repeat()``). For reproducible resumption it should yield the same
            sequence every time it is iterated (seeded shuffles), see the module docstring.
        config: a `TrainConfig`.

    Returns:
        A `TrainResult` (its ``model`` holds the trained weights).

    Raises:
        TypeError: `task` lacks a method, `dataset` is not a ``tf.data.Dataset``, `config` is not
            a `TrainConfig`.
        ValueError: the dataset is empty, the model is not built, the loss is not a scalar,
            ``data_resume="state"`` is impossible (the message says why).
        CheckpointMismatchError: `checkpoint_dir` holds a checkpoint of another model.
    """
    t_start = time.perf_counter()
    _check_task(task)
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`dataset` must be a tf.data.Dataset, got {type(dataset).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}")

    seed_everything(config.seed)
    strategy = _resolve_strategy(config.strategy)
    n_replicas = strategy.num_replicas_in_sync
    # A distributed iterator (several replicas, or several workers) cannot be checkpointed.
    distributed = n_replicas > 1 or _is_multi_worker(strategy)
    is_chief, task_id = _worker_role(strategy)
    mixed = _mixed_precision_active(config)
    with _global_dtype_policy("mixed_float16") if mixed else contextlib.nullcontext():
        model, variables = _build(task, strategy)
    with strategy.scope():
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        skipped_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
        loss_scale = None
        if mixed:
            loss_scale = [tf.Variable(_INITIAL_LOSS_SCALE, dtype=tf.float32, trainable=False,
                                      name="loss_scale"),
                          tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_scale_good_steps")]
    optimizer = _make_optimizer(config, step_var, variables, strategy)
    weights_ids = {id(v) for v in model.weights}
    rng_state = [v for v in model.variables if id(v) not in weights_ids]  # SeedGenerator states
    signature = _model_signature(model, variables)
    state = dict(model=model, weights=_weight_list(model), optimizer=optimizer, step=step_var,
                 skipped=skipped_var, rng=rng_state)

    ckpt_dir = None if config.checkpoint_dir is None else resolve(config.checkpoint_dir)
    restored = None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if _checkpoint_candidates(ckpt_dir):
            _check_signature(ckpt_dir, signature, task)
        restored = _restore_latest(tf.train.Checkpoint(**state), ckpt_dir, task)
        if restored and loss_scale is not None:  # absent from a float32 run's checkpoint
            tf.train.Checkpoint(loss_scale=loss_scale).read(restored).expect_partial()
        if is_chief and hasattr(task, "run_config"):
            write_run_config(ckpt_dir, **task.run_config())
    start_step = int(step_var.numpy())
    if restored:
        log.info("resumed from %s at step %d", restored, start_step)
    if loss_scale is not None:
        state["loss_scale"] = loss_scale

    # The data: where to start, and whether the iterator goes into the checkpoints. Only one
    # iterator is ever made from `source` (a second one would continue the random sequence of
    # a reshuffling `shuffle` instead of starting it afresh, as an uninterrupted run does).
    source = dataset.repeat()
    if config.data_resume == "state" and distributed:
        raise ValueError(
            "`TrainConfig.data_resume` 'state' needs a single replica: a tf.distribute "
            f"distributed iterator cannot be checkpointed ({n_replicas} replicas here"
            f"{', multi-worker' if _is_multi_worker(strategy) else ''}); use 'skip' or 'auto'"
        )
    want_state = ckpt_dir is not None and config.data_resume in ("auto", "state")
    if not restored:
        data_mode = "start"
    elif want_state and not distributed and _has_data_state(restored):
        data_mode = "state"
    else:
        data_mode = "restart" if config.data_resume == "restart" else "skip"

    def make_iterator(ds):
        if _is_multi_worker(strategy):
            # Every worker reads the same global batches and keeps its replicas' share.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA)
            ds = ds.with_options(options)
        if distributed:
            return iter(strategy.experimental_distribute_dataset(ds))
        with strategy.scope():
            return iter(ds)

    iterator = None
    if data_mode == "state":
        iterator = make_iterator(source)
        try:
            tf.train.Checkpoint(data=iterator).read(restored).expect_partial()
        except (tf.errors.OpError, ValueError, IndexError) as e:
            log.warning("cannot restore the dataset position from %s (%s: %s): skipping %d "
                        "batches instead", restored, type(e).__name__,
                        str(e).splitlines()[0][:200], start_step)
            data_mode, iterator = "skip", None
    if iterator is None:
        if data_mode == "skip" and start_step > 0:
            log.info("skipping the first %d batches of the dataset", start_step)
            source = source.skip(start_step)
        iterator = make_iterator(source)
    # Iterator state is saved only for an iterator over `source` itself (not `source.skip(k)`):
    # once a run has skipped, its resumptions keep skipping.
    if want_state and not distributed and data_mode in ("start", "state"):
        ok, why = _iterator_is_saveable(iterator, ckpt_dir)
        if ok:
            state["data"] = iterator
        elif config.data_resume == "state":
            raise ValueError(
                "`TrainConfig.data_resume` is 'state' but TensorFlow cannot save this "
                f"dataset's iterator ({why}); use 'skip' or 'auto'"
            )
        else:
            log.info("the dataset iterator cannot be checkpointed (%s): a resumed run will "
                     "skip the batches already seen", why)

    manager = None
    # Non-chief workers take part in every save (TensorFlow needs all of them) but write to a
    # scratch folder, deleted after each save.
    write_dir = ckpt_dir if is_chief or ckpt_dir is None else ckpt_dir / f".worker-{task_id}"
    if ckpt_dir is not None:
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**state), str(write_dir), max_to_keep=config.keep_checkpoints,
            checkpoint_name=_CKPT_NAME,
        )

    def save_checkpoint(step: int) -> str | None:
        if manager is None:
            return None
        if manager.latest_checkpoint and _step_of(manager.latest_checkpoint) == step:
            return manager.latest_checkpoint
        if step == 0:
            return None
        if not is_chief:
            path = manager.save(checkpoint_number=step)
            shutil.rmtree(write_dir, ignore_errors=True)
            return path
        write_text_atomic(
            ckpt_dir / META_NAME,
            json.dumps({"format": _META_FORMAT, "task": type(task).__name__,
                        "signature": signature, "step": step}, indent=1),
        )
        return manager.save(checkpoint_number=step)

    writer = None
    if config.log_dir is not None and is_chief:
        log_dir = resolve(config.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        writer = tf.summary.create_file_writer(str(log_dir))
    metadata = _scalar_metadata()

    history: list[tuple[int, float]] = []
    last = {"loss": float("nan"), "metrics": {}}
    steps = config.steps
    if start_step >= steps:
        log.info("already at step %d >= steps %d: nothing to train", start_step, steps)

    def write_log(step: int, summary: dict) -> None:
        history.append((step, summary["loss"]))
        last.update(loss=summary["loss"], metrics=summary["metrics"])
        skipped = int(skipped_var.numpy())
        if bar is not None:
            bar.set_postfix(loss=f"{summary['loss']:.4g}", lr=f"{summary['lr']:.2e}",
                            skipped=skipped, refresh=False)
        if writer is not None:
            values = {"loss": summary["loss"], "learning_rate": summary["lr"],
                      "grad_norm": summary["grad_norm"], "skipped_steps": skipped,
                      "steps_per_second": summary["steps_per_second"], **summary["metrics"]}
            with writer.as_default():
                for name, value in values.items():
                    tf.summary.write(_tag(name), tf.constant(value, tf.float32), step=step,
                                     metadata=metadata)
            writer.flush()

    bar = None
    if config.progress and start_step < steps and is_chief:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    checkpoint_path = manager.latest_checkpoint if manager is not None else None
    step = start_step
    try:
        if start_step < steps:
            train_step = _make_train_step(task, model, variables, optimizer, strategy, config,
                                          step_var, skipped_var, loss_scale)
            window = _Window()
            while step < steps:
                try:
                    out = train_step(iterator)
                except tf.errors.OutOfRangeError:
                    raise ValueError("`dataset` is empty: it yielded no batch") from None
                step += 1
                window.add(out)
                if bar is not None:
                    bar.update(1)
                if step % config.log_every == 0 or step == steps:
                    write_log(step, window.summary())
                if manager is not None and (step % config.checkpoint_every == 0 or step == steps):
                    checkpoint_path = save_checkpoint(step)
    except KeyboardInterrupt:
        done = int(step_var.numpy())
        if manager is not None and done > start_step:
            log.warning("interrupted at step %d: saving a checkpoint", done)
            save_checkpoint(done)
        raise
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    weights_path = None
    if ckpt_dir is not None and is_chief:
        weights_path = ckpt_dir / FINAL_WEIGHTS_NAME
        if step > start_step or not weights_path.is_file():
            _save_weights_atomic(model, weights_path)
        weights_path = str(weights_path)
    return TrainResult(
        steps=int(step_var.numpy()),
        start_step=start_step,
        skipped_steps=int(skipped_var.numpy()),
        final_loss=last["loss"],
        history=history,
        metrics=dict(last["metrics"]),
        checkpoint_path=checkpoint_path,
        weights_path=weights_path,
        seconds=time.perf_counter() - t_start,
        data_resume=data_mode,
        model=model,
        replicas=n_replicas,
        mixed_precision=mixed,
    )


def load_latest(task: TrainTask, checkpoint_dir) -> keras.Model:
    """The task's model with the latest weights saved in `checkpoint_dir`, for inference.

    Uses the newest readable checkpoint (``ckpt-<step>``); without any, the exported
    ``final.weights.h5``.

    Raises:
        FileNotFoundError: no checkpoint and no ``final.weights.h5`` in `checkpoint_dir`.
        CheckpointMismatchError: they belong to another model.
    """
    _check_task(task)
    ckpt_dir = resolve(checkpoint_dir)
    model, variables = _build(task, tf.distribute.get_strategy())
    if _checkpoint_candidates(ckpt_dir) or (ckpt_dir / FINAL_WEIGHTS_NAME).is_file():
        _check_signature(ckpt_dir, _model_signature(model, variables), task, trained=False)
    if _checkpoint_candidates(ckpt_dir):
        weights_ids = {id(v) for v in model.weights}
        rng_state = [v for v in model.variables if id(v) not in weights_ids]
        if _restore_latest(tf.train.Checkpoint(model=model, weights=_weight_list(model), rng=rng_state),
                           ckpt_dir, task):
            return model
    final = ckpt_dir / FINAL_WEIGHTS_NAME
    if final.is_file():
        try:
            model.load_weights(str(final))
        except ValueError as e:
            raise CheckpointMismatchError(
                f"{final} does not match the model built by {type(task).__name__}: {e}"
            ) from e
        return model
    raise FileNotFoundError(f"no checkpoint and no {FINAL_WEIGHTS_NAME} in {ckpt_dir}")


# ------------------------------------------------------------------------------------------
# The run folder: weights (above) and ``model_config.json``, one contract for every family

RUN_CONFIG_NAME = "model_config.json"
_RUN_FORMAT = 2


@dataclass(frozen=True)
class RunRecord:
    """What ``<run folder>/model_config.json`` says (`read_run_config`).

    Attributes:
        family: the model family (``"regression"``, ``"homography_net"``, ``"clkn"``,
            ``"dlkfm"``).
        model: the architecture, the keyword arguments of the family's model config.
        task: the training task's options and notes (stage, margins, ...).
        path: the file it was read from.
        legacy: ``None``, or the name of the old layout it was read from.
    """

    family: str
    model: dict
    task: dict
    path: Path
    legacy: str | None = None


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def check_keys(options, known: Sequence[str], name: str, owner: str) -> dict:
    """`options` (a dict, or ``None`` for none) as a new dict, after checking its keys.

    Args:
        options: the keyword options a caller passed (``task_options``, ``model_config`` ...).
        known: the keys `owner` accepts.
        name: the argument's name, for the message.
        owner: what takes them (a class or function name), for the message.

    Raises:
        ValueError: unknown keys (the message lists the known ones and the new spelling of an
            old name, `deeplk._checks.RENAMED`), or `options` is not a dict.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"`{name}` of {owner} must be a dict or None, got {type(options).__name__}")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown `{name}` keys {unknown} for {owner}; known: {list(known)}"
                         f"{renamed_hint(unknown)}")
    return dict(options)


def as_config(cls, value, name: str = "config"):
    """`value` as the architecture dataclass `cls` of a model family (validated on construction,
    like `TrainConfig`): an instance as is, a dict as its keyword arguments, ``None`` the defaults.

    Raises:
        ValueError: unknown keys (the message lists the known ones, `check_keys`), or a value of
            another type.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**check_keys(value, [f.name for f in fields(cls)], name, cls.__name__))
    raise ValueError(f"`{name}` must be a {cls.__name__}, a dict or None, got {type(value).__name__}")


def check_stage(stage: str, stages: Sequence[str], family: str) -> str:
    """`stage` if it is one of `stages`, the stage names of a model family (``STAGE_NAMES``).

    Raises:
        ValueError: `stage` is not one of `stages` (the message lists them).
    """
    if not isinstance(stage, str) or stage not in stages:
        raise ValueError(f"`stage` of the {family} family must be one of {list(stages)}, got {stage!r}")
    return stage


def stage_folder(checkpoint_dir, stage: str, stages: Sequence[str], family: str) -> Path:
    """The run folder ``<checkpoint_dir>/<stage>`` of one training stage of a model family.

    Every family's ``train_stage(stage, dataset, checkpoint_dir, ...)`` names its stages by
    their run folder under `checkpoint_dir` (``"dhn"``, ``"mhn/stage2"``, ``"hnet_sup/rho32"``,
    ``"dlkfm/level3"``, ``"clkn"``; each family lists its own in ``STAGE_NAMES``), so a stage's
    name says where its weights and ``model_config.json`` are.

    Raises:
        ValueError: `stage` is not one of `stages` (`check_stage`).
    """
    return resolve(checkpoint_dir) / check_stage(stage, stages, family)


def write_run_config(folder, family: str, model: dict, task: dict | None = None) -> Path:
    """Write ``<folder>/model_config.json`` atomically; `train` calls it with the task's
    ``run_config()``. Returns the path."""
    if not isinstance(family, str) or not family:
        raise ValueError(f"`family` must be a non-empty string, got {family!r}")
    if not isinstance(model, dict):
        raise ValueError(f"`model` must be a dict of architecture options, got {type(model).__name__}")
    folder = resolve(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": _RUN_FORMAT, "family": family, "model": model, "task": dict(task or {})}
    path = folder / RUN_CONFIG_NAME
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=_json_default) + "\n")
    return path


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return record


def _legacy_record(folder: Path, path: Path, record: dict | None) -> RunRecord | None:
    """Read the layouts written before `write_run_config` existed (None: not one of them).

    - regression (format 1): ``model_config.json`` ``{"format": 1, "model": "dhn"|"mhn",
      "stage": k, "net": {...}}``;
    - HomographyNet: ``model_config.json`` ``{"mode", "rho", ..., "model": {...}}``, no format;
    - CLKN: ``clkn_config.json`` ``{"format": 1, "model": {...}, "training": {...}}``;
    - DLKFM: ``<checkpoint_dir>/dlkfm/config.json`` (the architecture, for every level folder
      ``dlkfm/level<k>``; a missing ``normalize`` meant False).
    """
    if record is not None:
        if record.get("format") == 1 and isinstance(record.get("net"), dict):
            task = {k: record[k] for k in ("model", "stage") if k in record}
            return RunRecord("regression", dict(record["net"]), task, path, "regression format 1")
        if "format" not in record and "mode" in record and isinstance(record.get("model"), dict):
            task = {k: v for k, v in record.items() if k != "model"}
            return RunRecord("homography_net", dict(record["model"]), task, path, "homography_net")
        return None
    clkn = folder / "clkn_config.json"
    if clkn.is_file():
        old = _read_json(clkn)
        if not isinstance(old.get("model"), dict):
            raise ValueError(f"{clkn} is not a CLKN config (no 'model' object)")
        return RunRecord("clkn", dict(old["model"]), dict(old.get("training") or {}), clkn,
                         "clkn_config.json")
    dlkfm = folder.parent / "config.json"
    level = re.fullmatch(r"level([123])", folder.name)
    if level and folder.parent.name == "dlkfm" and dlkfm.is_file():
        return RunRecord("dlkfm", {"normalize": False, **_read_json(dlkfm)},
                         {"level": int(level.group(1))}, dlkfm, "dlkfm/config.json")
    return None


def _new_spelling(model: dict) -> dict:
    """The architecture `model` with the names stored before the project spelt them the British
    way translated (`deeplk._checks.RENAMED`): the keys ``normalize`` (regression, DLKFM) and
    ``standardize`` (CLKN), and HomographyNet's ``input_norm`` value ``"standardize"``."""
    out = {RENAMED.get(key, key): value for key, value in model.items()}
    if isinstance(out.get("input_norm"), str):
        out["input_norm"] = RENAMED.get(out["input_norm"], out["input_norm"])
    return out


def read_run_config(folder, family: str | None = None) -> RunRecord:
    """The `RunRecord` of a run folder (``model_config.json``; older layouts are read too, see
    `_legacy_record`). Architecture names spelt the American way by older code (``normalize``,
    ``standardize``) are read as their British spelling (`_new_spelling`).

    Raises:
        FileNotFoundError: the folder or its config is missing (the message names the folder).
        ValueError: the file cannot be read, has an unknown format (the message says how to
            convert it), or belongs to another `family`.
    """
    folder = resolve(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no trained model in {folder}: the folder does not exist")
    path = folder / RUN_CONFIG_NAME
    record = _read_json(path) if path.is_file() else None
    if record is not None and record.get("format") == _RUN_FORMAT:
        try:
            out = RunRecord(str(record["family"]), dict(record["model"]), dict(record.get("task") or {}), path)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} lacks a field or has a wrong one: {e!r}") from None
    else:
        out = _legacy_record(folder, path, record)
        if out is None and record is not None:
            raise ValueError(
                f"{path} has an unknown layout (format {record.get('format')!r}, expected "
                f"{_RUN_FORMAT}): rewrite it as {{\"format\": {_RUN_FORMAT}, \"family\": ..., "
                "\"model\": {architecture}, \"task\": {...}} with deeplk.train.write_run_config, "
                "or train the model again")
        if out is None:
            raise FileNotFoundError(f"no {RUN_CONFIG_NAME} in {folder}: not a trained model folder")
    if family is not None and out.family != family:
        raise ValueError(f"{out.path} holds a {out.family!r} model, expected {family!r}")
    return replace(out, model=_new_spelling(out.model))


def has_weights(folder) -> bool:
    """Whether `folder` holds a checkpoint (``ckpt-*``) or ``final.weights.h5``."""
    folder = resolve(folder)
    return folder.is_dir() and ((folder / FINAL_WEIGHTS_NAME).is_file() or latest_step(folder) is not None)


def load_run(folder, make_task, family: str | None = None) -> tuple[keras.Model, RunRecord]:
    """The trained model of a run folder and its `RunRecord`: ``make_task(record)`` builds the
    task (hence the model) from the record; weights from `load_latest`.

    Raises:
        FileNotFoundError: no config or no weights (the message names the folder).
        ValueError, CheckpointMismatchError: see `read_run_config`, `load_latest`.
    """
    record = read_run_config(folder, family)
    folder = resolve(folder)
    if not has_weights(folder):
        raise FileNotFoundError(f"no trained weights in {folder}: {RUN_CONFIG_NAME} but no checkpoint "
                                f"and no {FINAL_WEIGHTS_NAME}")
    return load_latest(make_task(record), folder), record
