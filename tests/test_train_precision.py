"""Tests of the distribution and precision options of `deeplk.train`: ``strategy="auto"``,
MirroredStrategy over the one CPU against the default strategy (a regression net and a DLKFM
level), and ``mixed_precision`` (the LK boundary cast, a DLKFM step under ``mixed_float16``, the
loss scale in checkpoints).

The machine has no GPU: the tests pretend some by replacing `deeplk.train._gpu_count`, which
is what ``"auto"`` and ``mixed_precision`` consult; CPU kernels execute float16, slowly, so
everything is tiny.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry
from deeplk import train as T
from deeplk.lk import LucasKanadeLayer, lucas_kanade
from deeplk.models import dlkfm as D
from deeplk.models import regression as R
from deeplk.train import TrainConfig, auto_strategy_name, load_latest, train

from test_models_dlkfm import smooth_rgb, tiny_dataset

TINY_REGRESSION = dict(filters=(2, 2), final_filters=4, dense_units=8, input_scale=0.25,
                       dropout=0.0)


_REAL_MIRRORED = tf.distribute.MirroredStrategy


def one_cpu_mirrored():
    return _REAL_MIRRORED(["/cpu:0"])


def regression_dataset(n: int = 4, batch: int = 2):
    rng = np.random.default_rng(5)
    small = rng.random((n, 12, 12, 3)).astype(np.float32)
    inputs = tf.image.resize(small, (192, 192), method="bicubic").numpy().clip(0, 1)
    batch_data = R.resample_perturbations(inputs, tf.constant([3, 4], tf.int64))
    return tf.data.Dataset.from_tensor_slices(tuple(x.numpy() for x in batch_data)).batch(batch)


def losses(result):
    return np.array([loss for _, loss in result.history])


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: from now on `deeplk.train` sees `n` GPUs."""

    def set_count(n: int):
        monkeypatch.setattr(T, "_gpu_count", lambda: n)

    return set_count


@pytest.fixture
def float32_policy_after():
    yield
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    assert policy == "float32", f"the global dtype policy was left at {policy}"


# ------------------------------------------------------------------------------------------
# strategy="auto"


class TestAutoStrategy:
    @pytest.mark.parametrize("n, name", [(0, "default"), (1, "default"), (2, "mirrored"),
                                         (8, "mirrored")])
    def test_mirrored_iff_several_gpus(self, n, name, gpus):
        assert auto_strategy_name(n) == name
        gpus(n)
        assert auto_strategy_name() == name

    def test_auto_resolves_through_the_gpu_count(self, gpus, monkeypatch):
        made = []
        monkeypatch.setattr(tf.distribute, "MirroredStrategy",
                            lambda *a, **k: made.append(1) or one_cpu_mirrored())
        gpus(1)
        assert T._resolve_strategy("auto") is tf.distribute.get_strategy() and not made
        gpus(2)
        assert isinstance(T._resolve_strategy("auto"), _REAL_MIRRORED) and made == [1]

    def test_config_accepts_auto_and_names_bad_values(self):
        assert TrainConfig(steps=1, strategy="Auto").strategy == "auto"
        assert TrainConfig(steps=1).strategy == "default" and not TrainConfig(steps=1).mixed_precision
        for bad in ("gpu", "", None, 2):
            with pytest.raises(ValueError, match=r"TrainConfig\.strategy.*'auto'"):
                TrainConfig(steps=1, strategy=bad)
        for bad in ("yes", 1, None):
            with pytest.raises(ValueError, match=r"TrainConfig\.mixed_precision.*bool"):
                TrainConfig(steps=1, mixed_precision=bad)
        with pytest.raises(ValueError, match="num_gpus"):
            auto_strategy_name(-1)

    def test_auto_on_this_machine_is_the_default_path(self):
        ds = regression_dataset()
        task = lambda: R.RegressionTask(TINY_REGRESSION)  # noqa: E731
        cfg = dict(steps=3, learning_rate=1e-3, log_every=1, progress=False, data_resume="restart")
        auto = train(task(), ds, TrainConfig(strategy="auto", **cfg))
        default = train(task(), ds, TrainConfig(**cfg))
        assert auto.replicas == 1 and not auto.mixed_precision
        np.testing.assert_array_equal(losses(auto), losses(default))



# ------------------------------------------------------------------------------------------
# MirroredStrategy over the one CPU device


class TestMirroredOneCpu:
    def test_regression_same_losses_and_resume(self, tmp_path):
        task = lambda: R.RegressionTask(TINY_REGRESSION)  # noqa: E731
        cfg = dict(learning_rate=1e-3, log_every=1, progress=False, checkpoint_every=2)
        ref = train(task(), regression_dataset(), TrainConfig(steps=4, **cfg))
        mir = train(task(), regression_dataset(),
                    TrainConfig(steps=4, strategy=one_cpu_mirrored(), **cfg))
        assert mir.replicas == 1
        np.testing.assert_allclose(losses(mir), losses(ref), rtol=1e-5)
        assert losses(ref)[-1] != losses(ref)[0]  # it trains
        # Interrupted at 2 and resumed under the strategy: the weights of the uninterrupted run.
        ckpt = tmp_path / "dhn"
        half = train(task(), regression_dataset(),
                     TrainConfig(steps=2, strategy=one_cpu_mirrored(), checkpoint_dir=ckpt, **cfg))
        resumed = train(task(), regression_dataset(),
                        TrainConfig(steps=4, strategy=one_cpu_mirrored(), checkpoint_dir=ckpt, **cfg))
        assert (half.steps, resumed.start_step, resumed.steps) == (2, 2, 4)
        np.testing.assert_allclose(losses(resumed), losses(ref)[2:], rtol=1e-5)
        for a, b in zip(resumed.model.weights, ref.model.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)

    def test_dlkfm_level_same_losses(self, tmp_path):
        cfg = dict(steps=3, learning_rate=1e-2, progress=False, log_every=1)

        def run(folder, strategy):
            task = D.DLKFMTask(1, tmp_path / folder, channels=3, num_blocks=0, num_perturbations=1)
            return train(task, tiny_dataset(),
                         TrainConfig(checkpoint_dir=task.checkpoint_dir, strategy=strategy, **cfg))

        ref, mir = run("ref", "default"), run("mir", one_cpu_mirrored())
        assert np.all(np.isfinite(losses(ref)))
        np.testing.assert_allclose(losses(mir), losses(ref), rtol=1e-5)
        for a, b in zip(mir.model.weights, ref.model.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Mixed precision


def lk_problem(batch: int = 2):
    """Smooth 48 x 48 inputs, their 32 x 32 templates at known corners, the centred start."""
    inputs, templates, corners = next(iter(tiny_dataset(n=batch, batch=batch)))
    centre = np.array([[8, 8], [39, 8], [39, 39], [8, 39]], np.float32)
    H0 = geometry.corners_to_homography(np.broadcast_to(centre, (batch, 4, 2)), 32)
    return inputs, templates, corners, H0


class TestLKBoundary:
    def test_float16_features_give_the_float32_answer(self):
        inputs, templates, corners, H0 = lk_problem()
        ref = lucas_kanade(inputs, templates, H0, max_iterations=20, jit_compile=False)
        half = lucas_kanade(tf.cast(inputs, tf.float16), tf.cast(templates, tf.float16),
                            tf.cast(H0, tf.float16), max_iterations=20, jit_compile=False)
        assert half.H.dtype == tf.float32
        # The only difference: the features rounded to float16 on the way in (corners in px).
        err_ref = geometry.homography_to_corners(ref.H, 32).numpy() - corners.numpy()
        err_half = geometry.homography_to_corners(half.H, 32).numpy() - corners.numpy()
        assert np.abs(err_ref).max() < 0.1  # the problem is solved
        np.testing.assert_allclose(err_half, err_ref, atol=0.05)
        rounded = lucas_kanade(tf.cast(tf.cast(inputs, tf.float16), tf.float32),
                               tf.cast(tf.cast(templates, tf.float16), tf.float32),
                               H0, max_iterations=20, jit_compile=False)
        np.testing.assert_allclose(half.H.numpy(), rounded.H.numpy(), rtol=1e-6, atol=1e-6)

    def test_layer_is_float32_under_mixed_policy(self, float32_policy_after):
        inputs, templates, _, H0 = lk_problem()
        keras.mixed_precision.set_global_policy("mixed_float16")
        layer = LucasKanadeLayer(max_iterations=5, tolerance=0.0)
        assert layer.compute_dtype == "float32"
        dense = keras.layers.Dense(3)  # an ordinary layer of the policy: float16 out
        f16 = dense(tf.reshape(inputs, (-1, 3)))
        assert f16.dtype == tf.float16
        fi = tf.reshape(f16, (2, 48, 48, 3))
        ft = tf.image.resize(fi, (32, 32))
        H = layer([fi, tf.cast(ft, tf.float16), tf.cast(H0, tf.float16)])
        assert H.dtype == tf.float32
        keras.mixed_precision.set_global_policy("float32")
        ref = LucasKanadeLayer(max_iterations=5, tolerance=0.0)(
            [tf.cast(fi, tf.float32), tf.cast(tf.cast(ft, tf.float16), tf.float32), H0])
        np.testing.assert_allclose(H.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        assert LucasKanadeLayer(dtype="float64").compute_dtype == "float64"  # explicit wins


class TestMixedPrecision:
    def test_without_gpu_falls_back_to_float32_with_a_warning(self, gpus, caplog,
                                                              float32_policy_after):
        gpus(0)
        ds = regression_dataset()
        cfg = dict(steps=2, learning_rate=1e-3, log_every=1, progress=False, data_resume="restart")
        with caplog.at_level("WARNING", logger="deeplk.train"):
            mixed = train(R.RegressionTask(TINY_REGRESSION), ds,
                          TrainConfig(mixed_precision=True, **cfg))
        assert "no GPU" in caplog.text and not mixed.mixed_precision
        plain = train(R.RegressionTask(TINY_REGRESSION), ds, TrainConfig(**cfg))
        np.testing.assert_array_equal(losses(mixed), losses(plain))

    def test_dlkfm_step_under_mixed_float16(self, gpus, tmp_path, float32_policy_after):
        gpus(1)  # pretend: CPU kernels run the float16 ops
        cfg = dict(learning_rate=1e-2, progress=False, log_every=1, checkpoint_every=2)
        task = D.DLKFMTask(1, tmp_path, channels=3, num_blocks=0, num_perturbations=1)
        result = train(task, tiny_dataset(),
                       TrainConfig(steps=2, checkpoint_dir=task.checkpoint_dir,
                                   mixed_precision=True, **cfg))
        assert result.mixed_precision
        assert keras.mixed_precision.global_policy().name == "float32"  # put back
        model = result.model
        assert model.input_extractors[0].compute_dtype == "float16"
        assert all(v.dtype == "float32" for v in model.weights)
        assert np.isfinite(result.final_loss)
        assert result.skipped_steps == 0  # the initial scale 2^15 did not overflow here
        # The features LK and the loss see are float32.
        inputs, templates, _ = next(iter(tiny_dataset()))
        fi, ft = model.lk_features(model.extract(inputs, templates)[-1])
        assert fi.dtype == ft.dtype == tf.float32
        # The loss scale went into the checkpoint; a resume restores it and continues.
        saved = dict(tf.train.list_variables(result.checkpoint_path))
        assert any(name.startswith("loss_scale/") for name in saved)
        resumed = train(task, tiny_dataset(),
                        TrainConfig(steps=4, checkpoint_dir=task.checkpoint_dir,
                                    mixed_precision=True, **cfg))
        assert (resumed.start_step, resumed.steps) == (2, 4) and np.isfinite(resumed.final_loss)
        # A float32 run resumes from the mixed checkpoint, and inference loads it in float32.
        gpus(0)
        more = train(task, tiny_dataset(),
                     TrainConfig(steps=5, checkpoint_dir=task.checkpoint_dir, **cfg))
        assert more.start_step == 4 and not more.mixed_precision
        loaded = load_latest(D.DLKFMTask(1, tmp_path, channels=3, num_blocks=0), task.checkpoint_dir)
        assert loaded.input_extractors[0].compute_dtype == "float32"

    def test_float32_checkpoint_resumes_under_mixed_precision(self, gpus, tmp_path,
                                                             float32_policy_after):
        cfg = dict(learning_rate=1e-3, log_every=1, progress=False, checkpoint_every=1,
                   checkpoint_dir=tmp_path / "dhn")
        task = lambda: R.RegressionTask(TINY_REGRESSION)  # noqa: E731
        first = train(task(), regression_dataset(), TrainConfig(steps=2, **cfg))
        assert not any(n.startswith("loss_scale/")
                       for n, _ in tf.train.list_variables(first.checkpoint_path))
        gpus(1)
        resumed = train(task(), regression_dataset(),
                        TrainConfig(steps=3, mixed_precision=True, **cfg))
        assert resumed.mixed_precision and (resumed.start_step, resumed.steps) == (2, 3)
        assert np.isfinite(resumed.final_loss) and resumed.skipped_steps == 0
        saved = dict(tf.train.list_variables(resumed.checkpoint_path))
        scale = tf.train.load_variable(resumed.checkpoint_path,
                                       next(n for n in saved if n.startswith("loss_scale/0")))
        assert scale == 2.0 ** 15  # started from the initial scale, one finite step since

    def test_mixed_under_mirrored_matches_mixed_default(self, gpus, float32_policy_after):
        gpus(1)
        cfg = dict(steps=3, learning_rate=1e-3, log_every=1, progress=False, mixed_precision=True,
                   data_resume="restart")
        task = lambda: R.RegressionTask(TINY_REGRESSION)  # noqa: E731
        ref = train(task(), regression_dataset(), TrainConfig(**cfg))
        mir = train(task(), regression_dataset(), TrainConfig(strategy=one_cpu_mirrored(), **cfg))
        assert ref.mixed_precision and mir.mixed_precision
        np.testing.assert_allclose(losses(mir), losses(ref), rtol=1e-4)

    def test_overflow_is_skipped_and_halves_the_scale(self, gpus, float32_policy_after):
        """A loss so large that its scaled gradients overflow: the step is skipped, the weights
        stay, the scale halves; once it is small enough, updates happen."""
        gpus(1)

        class Huge:
            def build_model(self):
                inputs = keras.Input((2,))
                return keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))

            def compute_loss(self, model, batch, training):
                y = tf.cast(model(batch, training=training), tf.float32)
                return tf.reduce_mean(y) * 1e3

        ds = tf.data.Dataset.from_tensors(tf.ones((2, 2)))
        result = train(Huge(), ds, TrainConfig(steps=12, learning_rate=1e-3, progress=False,
                                               log_every=1, mixed_precision=True,
                                               data_resume="restart"))
        # The float16 gradient of the kernel (and bias) sums the two samples' scale * 1e3 / 2:
        # scale * 1e3 overflows float16 (max 65504) for the scales 2^15 .. 2^7 (9 halvings);
        # from 2^6 on the steps succeed.
        assert result.skipped_steps == 9
        assert result.model.get_layer("d").kernel.dtype == "float32"
        # Windows of one skipped step log NaN; the steps after the last halving train.
        assert np.all(np.isnan(losses(result)[:9])) and np.all(np.isfinite(losses(result)[9:]))


def _family_cases():
    """``(name, make_task, make_dataset)`` of every model family, tiny."""
    from deeplk.models import clkn as C
    from deeplk.models import homography_net as hn

    from test_models_clkn import TINY as CLKN_TINY
    from test_models_clkn import synthetic_pairs
    from test_models_homography_net import TINY as HN_TINY

    def hn_data():
        x, t, c = synthetic_pairs(2)  # 96 / 64 pairs: cut to the 48 / 32 of the tiny net
        return tf.data.Dataset.from_tensors((x[:, 24:72, 24:72], t[:, 16:48, 16:48], c - 24))

    return {
        "regression": (lambda: R.RegressionTask(TINY_REGRESSION), regression_dataset),
        "hnet_sup": (lambda: hn.SupervisedTask(HN_TINY), hn_data),
        "hnet_unsup": (lambda: hn.UnsupervisedTask(HN_TINY), hn_data),
        "clkn": (lambda: C.CLKNTask(dict(CLKN_TINY, levels=2)),
                 lambda: tf.data.Dataset.from_tensor_slices(synthetic_pairs(2)).batch(2)),
    }


@pytest.mark.parametrize("family", ["regression", "hnet_sup", "hnet_unsup", "clkn"])
def test_every_family_trains_under_mixed_float16(family, gpus, float32_policy_after):
    """Each task takes float16 model outputs to a float32 loss (no dtype clash), and a step
    gives a finite loss close to the float32 run's."""
    make_task, make_data = _family_cases()[family]
    cfg = dict(steps=1, learning_rate=1e-3, log_every=1, progress=False, data_resume="restart")
    gpus(1)
    mixed = train(make_task(), make_data(), TrainConfig(mixed_precision=True, **cfg))
    gpus(0)
    plain = train(make_task(), make_data(), TrainConfig(**cfg))
    assert mixed.mixed_precision and not plain.mixed_precision
    assert all(v.dtype == "float32" for v in mixed.model.weights)
    assert np.all(np.isfinite(losses(mixed)))
    # The same computation at the same initial weights, the network in float16.
    np.testing.assert_allclose(losses(mixed), losses(plain), rtol=0.05)
