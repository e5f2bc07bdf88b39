"""A tiny training task and data for the tests of `deeplk.train`, also runnable as a script.

The task regresses a known linear map ``y = x @ W + b`` (4 -> 2) with a two-layer dense network
(linear, so the target is reachable and the loss must fall a long way). As a script it runs
training in a separate process, so the tests can kill a run for real or set up two logical CPUs
before TensorFlow initialises its devices::

    python tests/train_helpers.py run --checkpoint-dir D --steps 40 --kill-at 25 --out w.npz
    python tests/train_helpers.py mirrored --workdir D --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

IN_DIM, OUT_DIM = 4, 2
W_TRUE = np.array([[1.0, -2.0], [0.5, 0.0], [-1.5, 1.0], [2.0, 0.5]], dtype=np.float32)
B_TRUE = np.array([0.3, -0.7], dtype=np.float32)


def make_arrays(n: int = 96, seed: int = 1234):
    """``x (n, 4)`` standard normal and ``y = x @ W_TRUE + B_TRUE`` (n, 2), float32."""
    x = np.random.default_rng(seed).normal(size=(n, IN_DIM)).astype(np.float32)
    return x, (x @ W_TRUE + B_TRUE).astype(np.float32)


def make_dataset(n: int = 96, batch: int = 8, shuffle: bool = True, seed: int = 7,
                 nan_batches=(), drop_remainder: bool = False):
    """Batches ``(x, y)``, reshuffled every epoch with a fixed `seed`: a new dataset yields the
    same sequence in any process. The inputs of the batches listed in `nan_batches` (indices in
    the first epoch, unshuffled data only) are NaN."""
    import tensorflow as tf

    x, y = make_arrays(n)
    for i in nan_batches:
        assert not shuffle
        x[i * batch:(i + 1) * batch] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        # tf.data combines the op seed with the global seed current at this call: fix both, so
        # the order does not depend on what ran before in the process.
        tf.random.set_seed(0)
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch, drop_remainder=drop_remainder)


class LinearTask:
    """Two dense layers (optionally batch norm and dropout between) regressing ``y`` from ``x``;
    MSE loss.

    ``kill_at``: the process SIGKILLs itself while computing step ``kill_at`` (0-based), i.e.
    after exactly ``kill_at`` completed steps. ``progress_file``: the number of the step being
    computed is written there at every step. ``sleep``: seconds to wait in every step.
    """

    def __init__(self, hidden: int = 8, batchnorm: bool = False, kill_at: int | None = None,
                 progress_file: str | None = None, sleep: float = 0.0, freeze_first: bool = False,
                 dropout: float = 0.0):
        self.hidden = hidden
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.kill_at = kill_at
        self.progress_file = progress_file
        self.sleep = sleep
        self.freeze_first = freeze_first
        self._calls = 0

    def build_model(self):
        import keras

        inputs = keras.Input((IN_DIM,))
        h = keras.layers.Dense(self.hidden, name="hidden")(inputs)
        if self.batchnorm:
            h = keras.layers.BatchNormalization(name="bn")(h)
        if self.dropout:
            h = keras.layers.Dropout(self.dropout, name="dropout")(h)
        outputs = keras.layers.Dense(OUT_DIM, name="out")(h)
        return keras.Model(inputs, outputs, name="linear")

    def trainable_variables(self, model):
        if self.freeze_first:
            return list(model.get_layer("out").trainable_variables)
        return list(model.trainable_variables)

    def _tick(self):
        step = self._calls
        self._calls += 1
        if self.progress_file:  # atomically: the process may be killed at any moment
            tmp = f"{self.progress_file}.tmp"
            with open(tmp, "w") as f:
                f.write(str(step))
            os.replace(tmp, self.progress_file)
        if self.sleep:
            time.sleep(self.sleep)
        if self.kill_at is not None and step >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.float32(0.0)

    def compute_loss(self, model, batch, training):
        import tensorflow as tf

        x, y = batch
        pred = model(x, training=training)
        loss = tf.reduce_mean(tf.square(pred - y))
        if self.kill_at is not None or self.progress_file or self.sleep:
            tick = tf.py_function(self._tick, [], tf.float32)
            loss = loss + 0.0 * tick
        return loss, {"mae": tf.reduce_mean(tf.abs(pred - y))}


def weights(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


# ------------------------------------------------------------------------------------------
# Script entry points


def _run(args) -> None:
    from deeplk.train import TrainConfig, train

    task = LinearTask(kill_at=args.kill_at, progress_file=args.progress_file, sleep=args.sleep)
    config = TrainConfig(steps=args.steps, learning_rate=1e-2, checkpoint_dir=args.checkpoint_dir,
                         checkpoint_every=args.checkpoint_every, log_every=5, progress=False,
                         data_resume=args.data_resume, keep_checkpoints=10)
    result = train(task, make_dataset(), config)
    np.savez(args.out, *weights(result.model))
    print(json.dumps({"steps": result.steps, "start_step": result.start_step,
                      "data_resume": result.data_resume}))


def _mirrored(args) -> None:
    """Two logical CPUs: train with the default strategy and with MirroredStrategy over both
    devices on the same data and compare; also resume a mirrored run ('skip' data resume)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from deeplk.train import TrainConfig, train

    def cfg(strategy, steps, ckpt=None):
        return TrainConfig(steps=steps, learning_rate=5e-2, strategy=strategy, progress=False,
                           checkpoint_dir=ckpt, checkpoint_every=10, log_every=10)

    def mirrored():
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    # 27 samples in batches of 6: the last batch of every epoch (3) splits 2 + 1.
    data = dict(n=27, batch=6)
    steps = args.steps
    ref = train(LinearTask(), make_dataset(**data), cfg("default", steps))
    mir = train(LinearTask(), make_dataset(**data), cfg(mirrored(), steps))
    w_ref, w_mir = weights(ref.model), weights(mir.model)
    # Mirrored run interrupted at half and resumed (data position by skipping batches).
    ckpt = os.path.join(args.workdir, "mirrored_ckpt")
    half = train(LinearTask(), make_dataset(**data), cfg(mirrored(), steps // 2, ckpt))
    resumed = train(LinearTask(), make_dataset(**data), cfg(mirrored(), steps, ckpt))
    w_res = weights(resumed.model)
    out = {
        "replicas": mirrored().num_replicas_in_sync,
        "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(w_ref, w_mir)),
        "max_abs_weight": max(float(np.abs(a).max()) for a in w_ref),
        "loss_ref": ref.final_loss,
        "loss_mirrored": mir.final_loss,
        "first_loss_mirrored": mir.history[0][1],
        "half_steps": half.steps,
        "resumed_start": resumed.start_step,
        "resumed_steps": resumed.steps,
        "resumed_data_resume": resumed.data_resume,
        "resume_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(w_mir, w_res)),
        "string_mirrored_replicas": tf.distribute.MirroredStrategy().num_replicas_in_sync,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--checkpoint-dir", required=True)
    run.add_argument("--steps", type=int, default=40)
    run.add_argument("--checkpoint-every", type=int, default=10)
    run.add_argument("--kill-at", type=int, default=None)
    run.add_argument("--progress-file", default=None)
    run.add_argument("--sleep", type=float, default=0.0)
    run.add_argument("--data-resume", default="auto")
    run.add_argument("--out", required=True)
    mir = sub.add_parser("mirrored")
    mir.add_argument("--workdir", required=True)
    mir.add_argument("--steps", type=int, default=20)
    mir.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"run": _run, "mirrored": _mirrored}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
