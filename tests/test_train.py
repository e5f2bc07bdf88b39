"""Tests for `deeplk.train`: the training loop shared by every model.

Tiny tasks on synthetic data (see `train_helpers`); the runs that must die for real or need two
logical CPUs run in subprocesses (`python tests/train_helpers.py ...`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import train as T
from deeplk.train import CheckpointMismatchError, TrainConfig, learning_rate_at, load_latest, train
from train_helpers import LinearTask, make_arrays, make_dataset, weights

HELPERS = Path(__file__).with_name("train_helpers.py")


def config(**kw) -> TrainConfig:
    base = dict(steps=20, learning_rate=1e-2, progress=False, log_every=5)
    base.update(kw)
    return TrainConfig(**base)


def assert_weights_equal(a, b, atol=0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def run_helper(*args, timeout=120, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(HELPERS), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"helper failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


class ScaledGradTask:
    """Loss ``mean(s) * sum(kernel * c)`` for batches ``s (B, 1)``: the gradient of the
    ``(1, k)`` kernel (initialised to zeros) is exactly ``mean(s) * c``."""

    def __init__(self, c):
        self.c = np.asarray(c, np.float32)

    def build_model(self):
        return keras.Sequential([
            keras.Input((1,)),
            keras.layers.Dense(len(self.c), use_bias=False, kernel_initializer="zeros"),
        ])

    def compute_loss(self, model, batch, training):
        kernel = model.layers[-1].kernel
        return tf.reduce_mean(batch) * tf.reduce_sum(kernel * self.c)


class UnusedVariableTask(ScaledGradTask):
    """Like `ScaledGradTask`, plus a first layer the loss does not depend on."""

    def build_model(self):
        return keras.Sequential([
            keras.Input((1,)),
            keras.layers.Dense(3, use_bias=False, kernel_initializer="ones"),
            keras.layers.Dense(len(self.c), use_bias=False, kernel_initializer="zeros"),
        ])


def scalar_dataset(values):
    return tf.data.Dataset.from_tensor_slices(np.asarray(values, np.float32)[:, None]).batch(1)


def numpy_adam(grads, lr, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """Keras' Adam on a sequence of gradients from w = 0; returns the final w."""
    w = m = v = np.zeros_like(grads[0], dtype=np.float64)
    for t, g in enumerate(grads, start=1):
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        w = w - m * alpha / (np.sqrt(v) + eps)
    return w


# --------------------------------------------------------------------------------------------


class TestTraining:
    def test_loss_decreases_by_a_large_factor(self):
        result = train(LinearTask(), make_dataset(), config(steps=150, log_every=10))
        first, last = result.history[0][1], result.final_loss
        assert first > 1.0  # the untrained net is far from W_TRUE
        assert last < first / 1000
        assert result.steps == 150 and result.start_step == 0 and result.skipped_steps == 0
        assert [s for s, _ in result.history] == list(range(10, 151, 10))
        assert set(result.metrics) == {"mae"} and result.metrics["mae"] < 0.1
        assert result.checkpoint_path is None and result.weights_path is None
        assert result.seconds > 0 and result.data_resume == "start"

    def test_same_seed_same_weights(self):
        a = train(LinearTask(), make_dataset(), config(steps=5, seed=3))
        b = train(LinearTask(), make_dataset(), config(steps=5, seed=3))
        c = train(LinearTask(), make_dataset(), config(steps=5, seed=4))
        assert_weights_equal(weights(a.model), weights(b.model))
        assert not np.allclose(weights(a.model)[0], weights(c.model)[0])

    def test_task_trainable_variables_freeze_the_rest(self):
        task = LinearTask(freeze_first=True)
        keras.utils.set_random_seed(0)
        result = train(task, make_dataset(), config(steps=10, seed=0))
        keras.utils.set_random_seed(0)
        initial = weights(LinearTask().build_model())
        trained = weights(result.model)
        assert_weights_equal(trained[:2], initial[:2])  # hidden kernel, bias: frozen
        assert not np.allclose(trained[2], initial[2])  # output kernel: trained

    def test_strategy_object_is_used_as_is(self):
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        one = train(LinearTask(), make_dataset(), config(steps=10, strategy=strategy))
        default = train(LinearTask(), make_dataset(), config(steps=10, strategy="default"))
        assert_weights_equal(weights(one.model), weights(default.model), atol=1e-7)

    def test_variables_without_gradient_are_left_alone(self, caplog):
        c = np.array([0.3, 0.4], np.float32)
        with caplog.at_level(logging.WARNING, logger="deeplk.train"):
            result = train(UnusedVariableTask(c), scalar_dataset([1.0]),
                           config(steps=2, optimizer="adam", clipnorm=1.0))
        assert "no gradient for 1 variables" in caplog.text
        unused, used = weights(result.model)
        np.testing.assert_array_equal(unused, np.ones((1, 3), np.float32))
        np.testing.assert_allclose(used[0], numpy_adam([c, c], lr=1e-2), rtol=1e-5)

    def test_loss_without_metrics_and_progress_bar(self, capsys):
        result = train(ScaledGradTask([1.0]), scalar_dataset([1.0]),
                       config(steps=4, log_every=2, progress=True))
        assert result.metrics == {}
        assert "loss=" in capsys.readouterr().err


class TestLearningRate:
    @pytest.mark.parametrize(
        "kw, step, expected",
        [
            (dict(), 0, 1e-2),
            (dict(), 99, 1e-2),
            (dict(warmup_steps=4), 0, 0.25e-2),
            (dict(warmup_steps=4), 3, 1e-2),
            (dict(warmup_steps=4), 50, 1e-2),
            (dict(lr_schedule="cosine"), 0, 1e-2),
            (dict(lr_schedule="cosine"), 50, 0.5e-2),
            (dict(lr_schedule="cosine"), 100, 0.0),
            (dict(lr_schedule="cosine"), 150, 0.0),
            (dict(lr_schedule="cosine", lr_min_ratio=0.1), 100, 1e-3),
            (dict(lr_schedule="cosine", warmup_steps=20), 10, 11 / 20 * 1e-2),
            (dict(lr_schedule="cosine", warmup_steps=20), 60, 0.5e-2),
            (dict(lr_schedule="exponential"), 100, 1e-3),
            (dict(lr_schedule="exponential"), 50, 1e-2 * 0.1**0.5),
            (dict(lr_schedule="exponential", lr_decay_rate=0.5, lr_decay_steps=10), 30, 1.25e-3),
            (dict(lr_schedule="exponential", warmup_steps=10, lr_decay_rate=0.5,
                  lr_decay_steps=10), 20, 0.5e-2),
        ],
    )
    def test_known_values(self, kw, step, expected):
        cfg = TrainConfig(steps=100, learning_rate=1e-2, **kw)
        assert learning_rate_at(cfg, step) == pytest.approx(expected, rel=1e-5, abs=1e-9)

    def test_the_optimizer_follows_the_schedule(self):
        # SGD without clipping on a constant gradient c: w_T = -c * sum_t lr_t.
        c = np.array([0.3, -0.2], np.float32)
        cfg = config(steps=7, optimizer="sgd", clipnorm=None, lr_schedule="exponential",
                     warmup_steps=2, lr_decay_rate=0.5, lr_decay_steps=2)
        result = train(ScaledGradTask(c), scalar_dataset([1.0]), cfg)
        total = sum(learning_rate_at(cfg, t) for t in range(7))
        np.testing.assert_allclose(weights(result.model)[0][0], -c * total, rtol=1e-5)
        np.testing.assert_allclose([learning_rate_at(cfg, t) for t in range(5)],
                                   [0.005, 0.01, 0.01, 0.01 * 0.5**0.5, 0.005], rtol=1e-6)

    def test_bad_step(self):
        with pytest.raises(ValueError, match="step"):
            learning_rate_at(TrainConfig(steps=10), -1)


class TestClipping:
    def test_sgd_update_norm_is_clipped(self):
        c = np.array([600.0, 800.0], np.float32)  # gradient norm 1000
        clipped = train(ScaledGradTask(c), scalar_dataset([1.0]),
                        config(steps=1, optimizer="sgd", clipnorm=1.0, learning_rate=0.1))
        update = weights(clipped.model)[0][0]
        assert np.linalg.norm(update) == pytest.approx(0.1 * 1.0, rel=1e-6)
        np.testing.assert_allclose(update, -0.1 * c / 1000, rtol=1e-6)  # direction kept
        free = train(ScaledGradTask(c), scalar_dataset([1.0]),
                     config(steps=1, optimizer="sgd", clipnorm=None, learning_rate=0.1))
        assert np.linalg.norm(weights(free.model)[0]) == pytest.approx(100.0, rel=1e-6)

    def test_small_gradients_are_untouched(self):
        c = np.array([0.3, 0.4], np.float32)  # norm 0.5 < clipnorm
        result = train(ScaledGradTask(c), scalar_dataset([1.0]),
                       config(steps=1, optimizer="sgd", clipnorm=1.0, learning_rate=0.1))
        np.testing.assert_allclose(weights(result.model)[0][0], -0.1 * c, rtol=1e-6)

    def test_adam_sees_the_clipped_gradient(self):
        # Gradients 0.5 * u then a huge 500 * u (u a unit vector): clipped to 1 * u.
        c = np.array([0.3, 0.4], np.float32)
        ds = scalar_dataset([1.0, 1000.0, 1.0])
        clipped = train(ScaledGradTask(c), ds, config(steps=3, clipnorm=1.0, learning_rate=0.1))
        unit = c / 0.5
        expected = numpy_adam([c, unit, c], lr=0.1)
        np.testing.assert_allclose(weights(clipped.model)[0][0], expected, rtol=1e-5)
        free = train(ScaledGradTask(c), ds, config(steps=3, clipnorm=None, learning_rate=0.1))
        np.testing.assert_allclose(weights(free.model)[0][0],
                                   numpy_adam([c, 1000 * c, c], lr=0.1), rtol=1e-5)
        assert not np.allclose(expected, numpy_adam([c, 1000 * c, c], lr=0.1), rtol=1e-2)


class TestNonFiniteGuard:
    def test_nan_steps_are_skipped_and_counted(self):
        # 8 unshuffled batches of 4; the inputs of batches 1 and 4 are NaN (loss, gradients
        # and the batch-norm statistics of the forward pass would all be NaN).
        ds = make_dataset(n=32, batch=4, shuffle=False, nan_batches=(1, 4))
        result = train(LinearTask(batchnorm=True), ds, config(steps=8, log_every=1))
        assert result.skipped_steps == 2
        assert all(np.isfinite(w).all() for w in weights(result.model))
        losses = dict(result.history)
        assert np.isnan(losses[2]) and np.isnan(losses[5])
        assert np.isfinite([losses[s] for s in (1, 3, 4, 6, 7, 8)]).all()
        # Same as training on the six clean batches only: a skipped step changes nothing
        # (weights, batch-norm statistics, Adam moments and its iteration counter).
        x, y = make_arrays(32)
        keep = np.r_[0:4, 8:16, 20:32]
        clean = tf.data.Dataset.from_tensor_slices((x[keep], y[keep])).batch(4)
        reference = train(LinearTask(batchnorm=True), clean, config(steps=6))
        assert_weights_equal(weights(result.model), weights(reference.model))

    def test_weights_after_a_skipped_step_equal_those_before(self):
        ds = make_dataset(n=32, batch=4, shuffle=False, nan_batches=(1,))
        before = train(LinearTask(batchnorm=True), ds, config(steps=1))
        after = train(LinearTask(batchnorm=True), ds, config(steps=2))
        assert after.skipped_steps == 1
        assert_weights_equal(weights(after.model), weights(before.model))

    def test_infinite_gradient_is_skipped(self):
        c = np.array([1.0, 1.0], np.float32)
        result = train(ScaledGradTask(c), scalar_dataset([1.0, np.inf]),
                       config(steps=4, optimizer="sgd", clipnorm=None, learning_rate=0.1))
        assert result.skipped_steps == 2
        np.testing.assert_allclose(weights(result.model)[0][0], [-0.2, -0.2], rtol=1e-6)


class TestCheckpoints:
    def test_files_every_n_steps_and_at_the_end(self, tmp_path):
        ckpt = tmp_path / "ckpt"
        result = train(LinearTask(), make_dataset(),
                       config(steps=25, checkpoint_dir=ckpt, checkpoint_every=10,
                              keep_checkpoints=5))
        names = sorted(p.name for p in ckpt.iterdir())
        for step in (10, 20, 25):
            assert f"ckpt-{step}.index" in names
        assert not [n for n in names if n.startswith("ckpt-") and n.split("-")[1].split(".")[0]
                    not in ("10", "20", "25")]
        assert not [n for n in names if "tmp" in n or "_temp" in n or "probe" in n]
        assert {"checkpoint", T.FINAL_WEIGHTS_NAME, T.META_NAME} <= set(names)
        assert T.latest_step(ckpt) == 25
        assert result.checkpoint_path == str(ckpt / "ckpt-25")
        # The exported weights load into a fresh model (inference code path).
        fresh = LinearTask().build_model()
        fresh.load_weights(result.weights_path)
        assert_weights_equal(weights(fresh), weights(result.model))
        # The checkpoint holds the dataset position, the optimiser and the step.
        keys = {k for k, _ in tf.train.list_variables(result.checkpoint_path)}
        assert any(k.startswith("data/") for k in keys)
        assert "step/.ATTRIBUTES/VARIABLE_VALUE" in keys
        assert tf.train.load_variable(result.checkpoint_path,
                                      "step/.ATTRIBUTES/VARIABLE_VALUE") == 25

    def test_layers_held_in_a_python_list_are_checkpointed(self, tmp_path):
        # TensorFlow's object graph does not reach Keras 3 layers kept in a plain list; the
        # checkpoint must hold their weights anyway (load_latest restores them, not init values).
        @keras.saving.register_keras_serializable(package="deeplk_tests")
        class ListModel(keras.Model):
            def __init__(self, **kw):
                super().__init__(**kw)
                self.blocks = [keras.layers.Dense(3), keras.layers.Dense(2)]

            def call(self, x):
                for b in self.blocks:
                    x = b(x)
                return x

        class ListTask(LinearTask):
            def build_model(self):
                m = ListModel()
                m(tf.zeros((1, 4)))
                return m

        result = train(ListTask(), make_dataset(), config(steps=5, checkpoint_dir=tmp_path))
        (tmp_path / T.FINAL_WEIGHTS_NAME).unlink()  # only the checkpoint can restore them
        restored = load_latest(ListTask(), tmp_path)
        assert len(restored.weights) == 4
        assert_weights_equal(weights(restored), weights(result.model))

    def test_keeps_the_last_k(self, tmp_path):
        train(LinearTask(), make_dataset(),
              config(steps=25, checkpoint_dir=tmp_path, checkpoint_every=5, keep_checkpoints=2))
        assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == ["ckpt-20.index",
                                                                          "ckpt-25.index"]

    @pytest.mark.parametrize("mode", ["state", "skip"])
    def test_resume_equals_uninterrupted(self, tmp_path, mode):
        # Dropout and batch norm: the seed-generator state and the moving statistics are
        # restored too (the order crosses an epoch boundary: 12 batches per epoch).
        def task():
            return LinearTask(batchnorm=True, dropout=0.3)

        full = train(task(), make_dataset(), config(steps=30))
        cfg = dict(checkpoint_dir=tmp_path, checkpoint_every=10, data_resume=mode)
        first = train(task(), make_dataset(), config(steps=20, **cfg))
        second = train(task(), make_dataset(), config(steps=30, **cfg))
        assert first.data_resume == "start" and second.data_resume == mode
        assert (second.start_step, second.steps) == (20, 30)
        assert [s for s, _ in second.history] == [25, 30]
        assert_weights_equal(weights(second.model), weights(full.model))

    def test_restart_mode_reads_the_data_from_its_start(self, tmp_path):
        full = train(LinearTask(), make_dataset(), config(steps=30))
        cfg = dict(checkpoint_dir=tmp_path, checkpoint_every=10, data_resume="restart")
        train(LinearTask(), make_dataset(), config(steps=20, **cfg))
        second = train(LinearTask(), make_dataset(), config(steps=30, **cfg))
        assert second.data_resume == "restart" and second.steps == 30
        assert not np.allclose(weights(second.model)[0], weights(full.model)[0], atol=1e-7)

    def test_finished_run_is_not_retrained(self, tmp_path):
        cfg = config(steps=10, checkpoint_dir=tmp_path, checkpoint_every=10)
        first = train(LinearTask(), make_dataset(), cfg)
        again = train(LinearTask(), make_dataset(), cfg)
        assert (again.start_step, again.steps, again.history) == (10, 10, [])
        assert_weights_equal(weights(again.model), weights(first.model))

    def test_load_latest(self, tmp_path):
        result = train(LinearTask(), make_dataset(),
                       config(steps=12, checkpoint_dir=tmp_path, checkpoint_every=5))
        model = load_latest(LinearTask(), tmp_path)
        assert_weights_equal(weights(model), weights(result.model))
        # Without checkpoints the exported final weights are used.
        for p in list(tmp_path.glob("ckpt-*")) + [tmp_path / "checkpoint"]:
            p.unlink()
        assert_weights_equal(weights(load_latest(LinearTask(), tmp_path)),
                             weights(result.model))
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            load_latest(LinearTask(), tmp_path / "nothing")

    def test_unreadable_latest_checkpoint_falls_back(self, tmp_path, caplog):
        cfg = dict(checkpoint_dir=tmp_path, checkpoint_every=10, keep_checkpoints=5)
        train(LinearTask(), make_dataset(), config(steps=20, **cfg))
        data = tmp_path / "ckpt-20.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:50])  # truncated, as by a dying disk
        # Debris of a save that died before its index update is ignored.
        (tmp_path / "ckpt-30_temp").mkdir()
        (tmp_path / "ckpt-30_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
        with caplog.at_level(logging.WARNING, logger="deeplk.train"):
            result = train(LinearTask(), make_dataset(), config(steps=30, **cfg))
        assert "ckpt-20 cannot be read" in caplog.text
        assert (result.start_step, result.steps) == (10, 30)
        full = train(LinearTask(), make_dataset(), config(steps=30))
        assert_weights_equal(weights(result.model), weights(full.model))

    def test_interrupt_saves_a_checkpoint(self, tmp_path, monkeypatch):
        import tqdm.auto

        class Bar(tqdm.auto.tqdm):
            def update(self, n=1):
                super().update(n)
                if self.n == 7:
                    raise KeyboardInterrupt

        monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
        with pytest.raises(KeyboardInterrupt):
            train(LinearTask(), make_dataset(),
                  config(steps=20, checkpoint_dir=tmp_path, checkpoint_every=5, progress=True))
        assert T.latest_step(tmp_path) == 7


class RecordedTask(LinearTask):
    def run_config(self):
        return {"family": "linear", "model": {"units": np.int64(2), "sizes": (4, 2)},
                "task": {"loss": "mse"}}


class TestRunFolder:
    def test_train_writes_the_task_record_and_load_run_reads_it(self, tmp_path):
        result = train(RecordedTask(), make_dataset(), config(steps=3, checkpoint_dir=tmp_path))
        raw = json.loads((tmp_path / T.RUN_CONFIG_NAME).read_text())
        assert raw == {"format": 2, "family": "linear", "model": {"units": 2, "sizes": [4, 2]},
                       "task": {"loss": "mse"}}
        seen = []

        def make_task(record):
            seen.append(record)
            return RecordedTask()

        model, record = T.load_run(tmp_path, make_task, "linear")
        assert seen == [record] and record.family == "linear" and record.legacy is None
        assert record.model == {"units": 2, "sizes": [4, 2]} and record.task == {"loss": "mse"}
        assert_weights_equal(weights(model), weights(result.model))
        with pytest.raises(ValueError, match="'linear' model, expected 'clkn'"):
            T.load_run(tmp_path, make_task, "clkn")

    def test_a_task_without_record_writes_none(self, tmp_path):
        train(LinearTask(), make_dataset(), config(steps=2, checkpoint_dir=tmp_path))
        assert not (tmp_path / T.RUN_CONFIG_NAME).exists()
        with pytest.raises(FileNotFoundError, match=f"no {T.RUN_CONFIG_NAME} in {tmp_path}"):
            T.read_run_config(tmp_path)

    def test_missing_folder_weights_and_bad_files(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
            T.read_run_config(tmp_path / "nope")
        assert not T.has_weights(tmp_path / "nope") and not T.has_weights(tmp_path)
        path = T.write_run_config(tmp_path, "linear", {"units": 2})
        assert path == tmp_path / T.RUN_CONFIG_NAME and not list(tmp_path.glob("*.tmp"))
        with pytest.raises(FileNotFoundError, match="no trained weights in"):
            T.load_run(tmp_path, lambda record: RecordedTask())
        path.write_text("{broken")
        with pytest.raises(ValueError, match=str(path)):
            T.read_run_config(tmp_path)
        with pytest.raises(ValueError, match="family"):
            T.write_run_config(tmp_path, "", {})
        with pytest.raises(ValueError, match="model"):
            T.write_run_config(tmp_path, "linear", [1, 2])

    def test_check_stage_and_stage_folder(self, tmp_path):
        stages = ("a", "b/stage2")
        assert T.check_stage("b/stage2", stages, "toy") == "b/stage2"
        assert T.stage_folder(tmp_path, "b/stage2", stages, "toy") == tmp_path / "b" / "stage2"
        for bad in ("b", "stage2", None, "../a"):
            with pytest.raises(ValueError, match=r"`stage` of the toy family must be one of \['a', 'b/stage2'\]"):
                T.check_stage(bad, stages, "toy")
            with pytest.raises(ValueError, match="toy family"):
                T.stage_folder(tmp_path, bad, stages, "toy")
        assert not (tmp_path / "b").exists()

    def test_check_keys(self):
        options = {"x": 1}
        out = T.check_keys(options, ("x", "y"), "task_options", "toy.train_stage")
        assert out == options and out is not options
        assert T.check_keys(None, ("x",), "task_options", "toy") == {}
        with pytest.raises(ValueError, match=r"unknown `task_options` keys \['w', 'z'\] for toy.train_stage; "
                                             r"known: \['x', 'y'\]"):
            T.check_keys({"x": 1, "z": 2, "w": 3}, ("x", "y"), "task_options", "toy.train_stage")
        with pytest.raises(ValueError, match="must be a dict or None, got list"):
            T.check_keys([("x", 1)], ("x",), "task_options", "toy")


class TestKillAndResume:
    def test_killed_run_resumes_to_the_same_weights(self, tmp_path):
        ckpt, out = tmp_path / "ckpt", tmp_path / "w.npz"
        # The helper SIGKILLs itself while computing step 25: 25 steps done, ckpt-20 on disk.
        killed = run_helper("run", "--checkpoint-dir", ckpt, "--steps", 40, "--checkpoint-every",
                            10, "--kill-at", 25, "--out", out, check=False)
        assert killed.returncode == -signal.SIGKILL
        assert not out.exists()
        assert T.latest_step(ckpt) == 20  # 5 steps lost (at most checkpoint_every)
        resumed = run_helper("run", "--checkpoint-dir", ckpt, "--steps", 40,
                             "--checkpoint-every", 10, "--out", out)
        info = json.loads(resumed.stdout.strip().splitlines()[-1])
        assert info == {"steps": 40, "start_step": 20, "data_resume": "state"}
        assert T.latest_step(ckpt) == 40
        # Same weights as an uninterrupted run (same data order: the iterator was restored).
        full = train(LinearTask(), make_dataset(), config(steps=40))
        with np.load(out) as z:
            assert_weights_equal([z[k] for k in sorted(z.files, key=lambda k: int(k[4:]))],
                                 weights(full.model), atol=1e-7)

    def test_sigkill_from_outside_after_the_first_checkpoint(self, tmp_path):
        ckpt, out, progress = tmp_path / "ckpt", tmp_path / "w.npz", tmp_path / "progress"
        every, steps = 5, 100  # 20 ms per step: ~2 s left after the first checkpoint
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS), "run", "--checkpoint-dir", str(ckpt), "--steps",
             str(steps), "--checkpoint-every", str(every), "--sleep", "0.02", "--progress-file",
             str(progress), "--out", str(out)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not (ckpt / "checkpoint").exists():
                assert proc.poll() is None, "the run ended before its first checkpoint"
                assert time.monotonic() < deadline, "no checkpoint within 60 s"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)  # may land in the middle of the next save
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Steps 0 .. at_kill were started, so at most at_kill + 1 were done when it died.
        at_kill = int(progress.read_text())
        saved = T.latest_step(ckpt)
        assert saved is not None and saved % every == 0 and saved < steps
        assert saved <= at_kill + 1 and at_kill + 1 - saved <= every  # at most `every` lost
        resumed = run_helper("run", "--checkpoint-dir", ckpt, "--steps", steps,
                             "--checkpoint-every", every, "--out", out)
        info = json.loads(resumed.stdout.strip().splitlines()[-1])
        assert (info["start_step"], info["steps"]) == (saved, steps)
        full = train(LinearTask(), make_dataset(), config(steps=steps))
        with np.load(out) as z:
            assert_weights_equal([z[k] for k in sorted(z.files, key=lambda k: int(k[4:]))],
                                 weights(full.model), atol=1e-7)


class TestMirroredStrategy:
    def test_two_logical_cpus_match_the_default_strategy(self, tmp_path):
        out = tmp_path / "mirrored.json"
        run_helper("mirrored", "--workdir", tmp_path, "--steps", 40, "--out", out, timeout=180)
        r = json.loads(out.read_text())
        assert r["replicas"] == 2
        # Same global batches (the last one of each epoch split unevenly, 2 + 1) and
        # batch-size-weighted reduction: equal up to float32 summation order.
        assert r["max_abs_diff"] < 1e-5 * max(1.0, r["max_abs_weight"])
        assert r["first_loss_mirrored"] > 10 * r["loss_mirrored"]  # it trains
        # Resumed mirrored run (data position restored by skipping batches).
        assert (r["half_steps"], r["resumed_start"], r["resumed_steps"]) == (20, 20, 40)
        assert r["resumed_data_resume"] == "skip"
        assert r["resume_max_abs_diff"] < 1e-6
        assert r["string_mirrored_replicas"] >= 1  # "mirrored": all GPUs, else the CPU


class TestTensorBoard:
    def test_event_files_hold_the_scalars(self, tmp_path):
        ds = make_dataset(n=32, batch=4, shuffle=False, nan_batches=(1, 4))
        result = train(LinearTask(), ds, config(steps=10, log_every=5, log_dir=tmp_path / "tb"))
        files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
        assert files
        from tensorflow.core.util import event_pb2

        scalars = {}
        for record in tf.data.TFRecordDataset([str(f) for f in files]):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
        assert {"train/loss", "train/mae", "train/learning_rate", "train/grad_norm",
                "train/skipped_steps", "train/steps_per_second"} <= set(scalars)
        assert [s for s, _ in scalars["train/loss"]] == [5, 10]
        assert scalars["train/loss"][0][1] == pytest.approx(result.history[0][1], rel=1e-6)
        assert scalars["train/skipped_steps"] == [(5, 2.0), (10, 3.0)]  # batch 1 again at 10
        assert scalars["train/learning_rate"][-1][1] == pytest.approx(1e-2)


class UnbuiltTask(LinearTask):
    def build_model(self):
        return keras.Sequential([keras.layers.Dense(2)])


class VectorLossTask(LinearTask):
    def compute_loss(self, model, batch, training):
        x, y = batch
        return tf.reduce_mean(tf.square(model(x) - y), axis=0)


class ForeignVariablesTask(LinearTask):
    def trainable_variables(self, model):
        return [keras.Variable(np.zeros(2, np.float32))]


class TestErrors:
    @pytest.mark.parametrize(
        "field, value",
        [
            ("steps", 0),
            ("steps", 2.5),
            ("learning_rate", -1.0),
            ("learning_rate", float("nan")),
            ("lr_schedule", "linear"),
            ("warmup_steps", -1),
            ("warmup_steps", 11),
            ("lr_decay_rate", 1.5),
            ("lr_decay_steps", 0),
            ("lr_min_ratio", 2.0),
            ("clipnorm", 0.0),
            ("optimizer", "rmsprop"),
            ("checkpoint_every", 0),
            ("keep_checkpoints", 0),
            ("log_every", -5),
            ("seed", -1),
            ("strategy", "tpu"),
            ("data_resume", "never"),
            ("progress", "yes"),
            ("checkpoint_dir", 3),
        ],
    )
    def test_bad_config_names_the_field(self, field, value):
        kw = {"steps": 10, field: value}
        with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
            TrainConfig(**kw)

    def test_bad_task_dataset_config(self):
        with pytest.raises(TypeError, match="compute_loss"):
            train(object(), make_dataset(), config())
        with pytest.raises(TypeError, match="tf.data.Dataset"):
            train(LinearTask(), [1, 2, 3], config())
        with pytest.raises(TypeError, match="TrainConfig"):
            train(LinearTask(), make_dataset(), {"steps": 3})

    def test_empty_dataset(self):
        with pytest.raises(ValueError, match="empty"):
            train(LinearTask(), make_dataset().take(0), config())

    def test_unbuilt_model_non_scalar_loss_foreign_variables(self):
        with pytest.raises(ValueError, match="not built"):
            train(UnbuiltTask(), make_dataset(), config())
        with pytest.raises(ValueError, match="scalar loss"):
            train(VectorLossTask(), make_dataset(), config())
        with pytest.raises(ValueError, match="not variables of the model"):
            train(ForeignVariablesTask(), make_dataset(), config())

    def test_checkpoint_of_another_model(self, tmp_path):
        train(LinearTask(hidden=8), make_dataset(), config(steps=5, checkpoint_dir=tmp_path))
        with pytest.raises(CheckpointMismatchError, match=r"different model[\s\S]*hidden"):
            train(LinearTask(hidden=16), make_dataset(), config(steps=10, checkpoint_dir=tmp_path))
        with pytest.raises(CheckpointMismatchError, match="different model"):
            load_latest(LinearTask(hidden=16), tmp_path)
        with pytest.raises(CheckpointMismatchError, match="trained variables"):
            train(LinearTask(freeze_first=True), make_dataset(),
                  config(steps=10, checkpoint_dir=tmp_path))
        load_latest(LinearTask(freeze_first=True), tmp_path)  # inference: same weights, fine
        # Without the metadata file the TensorFlow error is still turned into a clear one.
        (tmp_path / T.META_NAME).unlink()
        with pytest.raises(CheckpointMismatchError, match="does not match the model"):
            train(LinearTask(hidden=16), make_dataset(), config(steps=10, checkpoint_dir=tmp_path))

    def test_data_state_needs_a_serialisable_pipeline(self, tmp_path):
        def dataset():  # tf.py_function: TensorFlow cannot serialise the iterator
            return make_dataset().map(lambda x, y: (
                tf.ensure_shape(tf.py_function(lambda a: a, [x], tf.float32), (None, 4)), y))

        with pytest.raises(ValueError, match=r"data_resume.*'state'"):
            train(LinearTask(), dataset(), config(checkpoint_dir=tmp_path, data_resume="state"))
        # "auto" falls back to skipping batches, which reproduces the uninterrupted run.
        cfg = dict(checkpoint_dir=tmp_path, checkpoint_every=10)
        train(LinearTask(), dataset(), config(steps=10, **cfg))
        resumed = train(LinearTask(), dataset(), config(steps=20, **cfg))
        assert resumed.data_resume == "skip"
        full = train(LinearTask(), dataset(), config(steps=20))
        assert_weights_equal(weights(resumed.model), weights(full.model))


# The worker program of the multi-worker test: the strategy first (TensorFlow configures its
# collective ops at startup), then the same training as `train_helpers` runs.
_WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from deeplk.train import multi_worker_strategy
mode, ckpt, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "late":  # TensorFlow already initialised: a clear error
    from train_helpers import make_dataset
    make_dataset()
    try:
        multi_worker_strategy()
    except RuntimeError as e:
        print(json.dumps({{"error": str(e)}}))
    sys.exit(0)
strategy = multi_worker_strategy()
import numpy as np
from deeplk.train import TrainConfig, train
from train_helpers import LinearTask, make_dataset, weights
result = train(LinearTask(), make_dataset(n=27, batch=6), TrainConfig(
    steps=steps, learning_rate=5e-2, strategy="multi_worker", progress=False,
    checkpoint_dir=ckpt, checkpoint_every=5, log_every=5))
np.savez(out, *weights(result.model))
print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "start": result.start_step,
                  "steps": result.steps, "data_resume": result.data_resume,
                  "weights_path": result.weights_path}}))
"""


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TestMultiWorkerStrategy:
    def test_two_workers_resume_and_match_the_default_strategy(self, tmp_path):
        """Two worker processes on localhost (TF_CONFIG), one replica each, resume a run that
        the default strategy checkpointed at step 10 and train to step 20: same weights as 20
        default steps (same global batches, the last one of an epoch split 2 + 1)."""
        data = dict(n=27, batch=6)
        ckpt = tmp_path / "ckpt"
        train(LinearTask(), make_dataset(**data),
              config(steps=10, learning_rate=5e-2, checkpoint_dir=ckpt, checkpoint_every=10))
        ref = train(LinearTask(), make_dataset(**data), config(steps=20, learning_rate=5e-2))
        ports = _free_ports(2)
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        script = _WORKER.format(tests=str(Path(__file__).parent))
        procs = []
        for mode, index in (("train", 0), ("train", 1), ("late", 0)):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
            out = tmp_path / f"w{index}.npz"
            procs.append(subprocess.Popen(
                [sys.executable, "-c", script, mode, str(ckpt), "20", str(out)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        try:
            for p in procs:
                stdout, stderr = p.communicate(timeout=240)
                assert p.returncode == 0, stderr[-3000:]
                results.append(json.loads(stdout.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        chief, other, late = results
        assert "call deeplk.train.multi_worker_strategy() at the very start" in late["error"]
        for r in (chief, other):
            assert (r["replicas"], r["start"], r["steps"]) == (2, 10, 20)
            assert r["data_resume"] == "skip"
        # Only the chief writes checkpoints and the exported weights; no worker scratch left.
        assert chief["weights_path"] == str(ckpt / T.FINAL_WEIGHTS_NAME)
        assert other["weights_path"] is None
        assert T.latest_step(ckpt) == 20
        assert not list(ckpt.glob(".worker-*"))
        w_ref = weights(ref.model)
        scale = max(1.0, max(float(np.abs(w).max()) for w in w_ref))
        for index in (0, 1):
            with np.load(tmp_path / f"w{index}.npz") as z:
                w = [z[f"arr_{k}"] for k in range(len(z.files))]
            assert_weights_equal(w, w_ref, atol=1e-5 * scale)
        # The exported weights are the trained ones.
        fresh = LinearTask().build_model()
        fresh.load_weights(chief["weights_path"])
        assert_weights_equal(weights(fresh), w_ref, atol=1e-5 * scale)

    def test_multi_worker_is_a_valid_strategy_name(self):
        assert TrainConfig(steps=1, strategy="multi_worker").strategy == "multi_worker"
        assert TrainConfig(steps=1, strategy="Multi_Worker").strategy == "multi_worker"
