"""Tests of deeplk.models.clkn: the CLKN baseline (per-level Siamese features, one IC-LK step per
level, hinge loss on corner error), its training task, checkpoints and the ``clkn`` method.

Everything runs on small synthetic mono-modal pairs made here (smooth random RGB images, template
= the input warped by a known homography with `deeplk.warp.warp_image`) and on tiny models.
"""

from __future__ import annotations

import functools
import inspect
import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import geometry, lk, methods
from deeplk.geometry import centred_homography
from deeplk.models import clkn
from deeplk.models.clkn import (
    CLKN,
    CLKNLevelNet,
    CLKNTask,
    build_clkn_method,
    cascade_lucas_kanade,
    clkn_hinge_loss,
    load_clkn,
    train_stage,
)
from deeplk.train import RUN_CONFIG_NAME, write_run_config
from deeplk.utils import seed_everything
from deeplk.warp import warp_image

INPUT, TEMPLATE = 96, 64  # small stand-ins for 192 / 128 (same 1.5 ratio)
TINY = dict(levels=3, filters=4, depth=1, channels=4)


@functools.lru_cache(maxsize=None)
def smooth_rgb(n: int, size: int = INPUT, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` float32 images of blurred noise scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), sigma)
        out.append((img - img.min()) / (img.max() - img.min()))
    return np.stack(out).astype(np.float32)


@functools.lru_cache(maxsize=None)
def synthetic_pairs(n: int, max_shift: float = 6.0, seed: int = 0):
    """Mono-modal pairs: inputs ``(n, 96, 96, 3)``, templates ``(n, 64, 64, 3)`` cut from the
    inputs by a homography whose corners are the centred square plus uniform shifts, corners
    ``(n, 4, 2)`` float32."""
    images = smooth_rgb(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    off = (INPUT - TEMPLATE) / 2
    centred = np.array([[0, 0], [TEMPLATE - 1, 0], [TEMPLATE - 1, TEMPLATE - 1],
                        [0, TEMPLATE - 1]], np.float64) + off
    corners = centred + rng.uniform(-max_shift, max_shift, size=(n, 4, 2))
    H = geometry.corners_to_homography(corners, TEMPLATE)
    templates, _ = warp_image(images, tf.cast(H, tf.float32), TEMPLATE)
    return images, templates.numpy(), corners.astype(np.float32)


def tiny_model(**overrides) -> CLKN:
    model = CLKN(**{**TINY, **overrides})
    model.build()
    return model


def corners_of(H, size=TEMPLATE) -> np.ndarray:
    return geometry.homography_to_corners(tf.cast(H, tf.float64), size).numpy()


# --------------------------------------------------------------------------------------------
# The model


class TestModel:
    @pytest.mark.parametrize("batch", [1, 3])
    def test_shapes_per_level(self, batch):
        x, t, _ = synthetic_pairs(3)
        model = tiny_model()
        out = model((x[:batch], t[:batch]))
        assert out["H"].shape == (batch, 3, 3)
        assert out["level_H"].shape == (3, batch, 3, 3)
        assert out["level_failed"].shape == (3, batch) and out["level_failed"].dtype == tf.bool
        np.testing.assert_array_equal(out["H"].numpy(), out["level_H"][-1].numpy())
        np.testing.assert_allclose(out["H"].numpy()[:, 2, 2], 1.0, rtol=1e-6)
        # Level features on the level's pixel grid, `channels` channels, shared input/template.
        for k, size in enumerate((INPUT // 4, INPUT // 2, INPUT)):
            assert model.level_nets[k](x[:batch, :size, :size]).shape == (batch, size, size, 4)

    def test_default_architecture(self):
        model = CLKN()
        model.build()
        assert model.levels == 4 and model.channels == 4 and model.lk_iterations == 1
        assert len(model.level_nets) == 4
        for net in model.level_nets:
            assert net.project.kernel.shape[:2] == (1, 1) and net.project.kernel.shape[-1] == 4
        # 192 / 128: the coarsest level is 24 / 16 pixels.
        x = np.zeros((1, 192, 192, 3), np.float32)
        pyr = lk.build_pyramid(x, 4)
        assert [p.shape[1] for p in pyr] == [24, 48, 96, 192]

    def test_moves_towards_the_truth_with_grey_like_features(self):
        """Level networks that output the grey image (in every channel): one LK step per level
        brings the centred start from +-4 px much closer to the truth (a working cascade)."""
        x, t, c = synthetic_pairs(2, max_shift=4.0)
        model = tiny_model(standardise=False)
        for net in model.level_nets:
            net.convs[0].kernel.assign(_centre_identity(4)[:, :, :3])
            net.convs[0].bias.assign(np.full(4, 1.0, np.float32))  # stay in the linear part
            net.project.kernel.assign(np.full((1, 1, 4, 4), 1.0 / 3, np.float32)
                                      * np.array([1, 1, 1, 0], np.float32)[:, None])
            net.project.bias.assign(np.zeros(4, np.float32))
        np.testing.assert_allclose(model.level_nets[2](x), np.repeat(x.mean(-1, keepdims=True)
                                                                      + 0.5, 4, -1), atol=1e-5)
        out = model((x, t))
        start = geometry.corner_error(corners_of(centred_homography(INPUT, TEMPLATE, 2)),
                                      c).numpy()
        end = geometry.corner_error(corners_of(out["H"]), c).numpy()
        assert not out["level_failed"].numpy().any()
        assert end.mean() < 0.5 * start.mean(), (start, end)

    def test_bad_inputs(self):
        model = tiny_model()
        x, t, _ = synthetic_pairs(2)
        with pytest.raises(ValueError, match="inputs"):
            model((x[:, :90, :90], t))
        with pytest.raises(ValueError, match="templates"):
            model((x, t[..., :1]))
        with pytest.raises(ValueError, match="inputs, templates"):
            model(x)
        with pytest.raises(ValueError, match="filters"):
            CLKN(levels=4, filters=[8, 8])
        with pytest.raises(ValueError, match="lk_iterations"):
            CLKN(lk_iterations=0)

    def test_get_config_round_trip(self):
        x, t, _ = synthetic_pairs(2)
        model = tiny_model(filters=[3, 4, 5], depth=[1, 2, 1], lk_iterations=2, damping=1e-3)
        config = model.get_config()
        clone = CLKN.from_config(config)
        clone.build()
        assert clone.get_config() == config
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(clone((x, t))["H"], model((x, t))["H"], rtol=1e-6, atol=1e-6)
        net = model.level_nets[1]
        assert CLKNLevelNet.from_config(net.get_config()).get_config() == net.get_config()

    def test_keras_file_round_trip(self, tmp_path):
        x, t, _ = synthetic_pairs(2)
        model = tiny_model()
        model((x, t))  # weights are created at build; a call records nothing needed
        path = tmp_path / "clkn.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded, CLKN) and loaded.get_config() == model.get_config()
        np.testing.assert_allclose(loaded((x, t))["level_H"], model((x, t))["level_H"],
                                   rtol=1e-6, atol=1e-6)


def _centre_identity(c: int) -> np.ndarray:
    """A 3x3 kernel ``(3, 3, c, c)`` that copies its input."""
    k = np.zeros((3, 3, c, c), np.float32)
    k[1, 1] = np.eye(c, dtype=np.float32)
    return k


# --------------------------------------------------------------------------------------------
# The cascade of LK steps


class TestCascade:
    def test_one_step_per_level_matches_pyramid_lk(self):
        """Features = the grey image: the cascade equals `pyramid_lucas_kanade` with one update
        per level, and each level equals `lucas_kanade` with one iteration from the previous
        level's result."""
        x, t, _ = synthetic_pairs(3)
        gi, gt = lk.to_greyscale(x), lk.to_greyscale(t)
        ip, tp = lk.build_pyramid(gi, 3), lk.build_pyramid(gt, 3)
        H0 = centred_homography(INPUT, TEMPLATE, 3)
        level_H, failed = cascade_lucas_kanade(ip, tp, H0, lk_iterations=1)
        assert not np.any(np.stack(failed))
        ref = lk.pyramid_lucas_kanade(ip, tp, H0, max_iterations=1, tolerance=0.0,
                                      jit_compile=False)
        np.testing.assert_allclose(level_H[-1], ref.H, rtol=1e-5, atol=1e-4)
        assert ref.iterations.numpy().tolist() == [3, 3, 3]
        H = H0
        for k in range(3):
            scale = 0.5 ** (2 - k)
            one = lk.lucas_kanade(ip[k], tp[k], geometry.scale_homography(H, scale),
                                  max_iterations=1, tolerance=0.0, jit_compile=False)
            H = geometry.scale_homography(one.H, 1 / scale)
            np.testing.assert_allclose(level_H[k], H, rtol=1e-5, atol=1e-4)
        # The step moved the estimate (not a no-op).
        assert np.abs(corners_of(level_H[-1]) - corners_of(H0)).max() > 0.5

    def test_gradient_float64_finite_differences(self):
        """One LK step per level, float64: the derivative of the final corners along random
        directions of each feature map (input and template, both levels) and of the initial H
        matches central finite differences."""
        rng = np.random.default_rng(3)
        fi = [cv2.GaussianBlur(rng.random((s, s, 2)), (0, 0), 1.5) for s in (12, 24)]
        ft = [f[o:o + s // 3 * 2, o:o + s // 3 * 2] + 0.01 * rng.random((s // 3 * 2,) * 2 + (2,))
              for f, o, s in zip(fi, (2, 4), (12, 24))]
        H0 = np.array([[[1.0, 0.02, 3.3], [-0.01, 1.0, 4.2], [1e-4, 0.0, 1.0]]])
        args = [tf.constant(v[None], tf.float64) for v in fi + ft] + [tf.constant(H0)]

        def corners(*a):
            level_H, failed = cascade_lucas_kanade(a[:2], a[2:4], a[4])
            assert not np.any(np.stack(failed))
            return geometry.homography_to_corners(level_H[-1], ft[1].shape[:2])

        weights = tf.constant(rng.normal(size=(1, 4, 2)), tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = tf.reduce_sum(corners(*args) * weights)
        grads = tape.gradient(value, args)
        eps = 1e-6
        for i, (a, g) in enumerate(zip(args, grads)):
            assert float(tf.reduce_max(tf.abs(g))) > 0, f"argument {i} has no gradient"
            for _ in range(2):
                v = tf.constant(rng.normal(size=a.shape), tf.float64)
                if i == 4:
                    v = v * tf.constant([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1e-3, 1e-3, 0.0]],
                                        tf.float64)
                plus = tf.reduce_sum(corners(*(args[:i] + [a + eps * v] + args[i + 1:]))
                                     * weights)
                minus = tf.reduce_sum(corners(*(args[:i] + [a - eps * v] + args[i + 1:]))
                                      * weights)
                numeric = float(plus - minus) / (2 * eps)
                analytic = float(tf.reduce_sum(g * v))
                np.testing.assert_allclose(analytic, numeric, rtol=1e-4,
                                           atol=1e-7 * max(1.0, abs(numeric)))

    def test_bad_arguments(self):
        a = tf.zeros([1, 12, 12, 1])
        b = tf.zeros([1, 8, 8, 1])
        H0 = centred_homography(12, 8, 1)
        with pytest.raises(ValueError, match="same length"):
            cascade_lucas_kanade([a], [b, b], H0)
        with pytest.raises(ValueError, match="double"):
            cascade_lucas_kanade([a, a], [b, b], H0)
        with pytest.raises(ValueError, match="init_H"):
            cascade_lucas_kanade([a], [b], tf.zeros([1, 3]))
        with pytest.raises(ValueError, match="lk_iterations"):
            cascade_lucas_kanade([a], [b], H0, lk_iterations=0)


# --------------------------------------------------------------------------------------------
# The hinge loss


class TestHingeLoss:
    def test_zero_below_every_margin(self):
        true = np.array([[[10, 10], [50, 10], [50, 50], [10, 50]]], np.float32)
        level = [true + 3.9, true + 1.9, true + 0.4]  # PE 3.9*sqrt2 ... per level
        errs = [3.9 * np.sqrt(2), 1.9 * np.sqrt(2), 0.4 * np.sqrt(2)]
        loss, errors = clkn_hinge_loss(level, true, margins=[6.0, 3.0, 0.6])
        assert float(loss) == 0.0
        np.testing.assert_allclose(errors[:, 0], errs, rtol=1e-5)

    def test_known_value(self):
        """Two samples, two levels: hand-computed hinge sum."""
        true = np.zeros((2, 4, 2), np.float32)
        # Level 0: every corner moved by (3, 4) -> PE 5; sample 1 by (0, 1) -> PE 1.
        l0 = true.copy()
        l0[0] += [3, 4]
        l0[1] += [0, 1]
        # Level 1: sample 0 one corner by (6, 8) -> PE 10/4 = 2.5; sample 1 exact.
        l1 = true.copy()
        l1[0, 2] += [6, 8]
        loss, errors = clkn_hinge_loss(np.stack([l0, l1]), true, margins=[2.0, 0.5],
                                       level_weights=[1.0, 2.0])
        np.testing.assert_allclose(errors, [[5.0, 1.0], [2.5, 0.0]], rtol=1e-6)
        # level 0: mean(max(0, 5-2), max(0, 1-2)) = 1.5; level 1: mean(2.0, 0) = 1.0, weight 2
        np.testing.assert_allclose(float(loss), 1.5 + 2.0 * 1.0, rtol=1e-6)

    def test_gradient_only_above_margin(self):
        true = tf.zeros((2, 4, 2))
        pred = tf.Variable(np.stack([np.full((4, 2), 3.0), np.full((4, 2), 0.1)]).astype(np.float32))
        with tf.GradientTape() as tape:
            loss, _ = clkn_hinge_loss([pred], true, margins=[1.0])
        g = tape.gradient(loss, pred).numpy()
        assert np.abs(g[0]).sum() > 0 and np.all(g[1] == 0)

    def test_bad_arguments(self):
        true = np.zeros((2, 4, 2), np.float32)
        with pytest.raises(ValueError, match="margins"):
            clkn_hinge_loss([true, true], true, margins=[1.0])
        with pytest.raises(ValueError, match="margins"):
            clkn_hinge_loss([true], true, margins=[-1.0])
        with pytest.raises(ValueError, match="level_weights"):
            clkn_hinge_loss([true], true, margins=[1.0], level_weights=[1.0, 1.0])
        with pytest.raises(ValueError, match="true_corners"):
            clkn_hinge_loss([true], true[:, :3], margins=[1.0])
        with pytest.raises(ValueError, match="level_corners"):
            clkn_hinge_loss(true, true, margins=[1.0])
        with pytest.raises(ValueError, match="margins"):
            CLKNTask(dict(TINY), margins=[1.0, 2.0])


# --------------------------------------------------------------------------------------------
# Training task, checkpoints and the method


def _dataset(n=16, batch=4):
    x, t, c = synthetic_pairs(n)
    return tf.data.Dataset.from_tensor_slices((x, t, c)).batch(batch)


def _task():
    return CLKNTask(dict(TINY, filters=8, depth=2), margins=[2.0, 1.0, 0.5])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short `train` run of the tiny CLKN on 16 synthetic pairs, with checkpoints written to
    ``<root>/clkn`` and the config beside them; also the loss on a fixed batch before and after."""
    root = tmp_path_factory.mktemp("checkpoints")
    task = _task()
    batch = tuple(tf.constant(a) for a in synthetic_pairs(16))
    seed_everything(0)
    initial = task.build_model()  # the same initial weights as `train` (seed 0) ...
    seed_everything(0)
    again = task.build_model()  # ... since building after seeding is deterministic
    for a, b in zip(initial.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    before = float(task.compute_loss(initial, batch, training=False)[0])
    folder = root / "clkn"
    result = train_stage("clkn", _dataset(16, 4), root, steps=40, learning_rate=3e-3, seed=0,
                         model_config=task.model_config, task_options=dict(margins=task.margins),
                         log_every=10, checkpoint_every=20, progress=False)
    after = float(task.compute_loss(result.model, batch, training=False)[0])
    return dict(root=root, folder=folder, task=task, result=result, before=before, after=after,
                initial=initial)


class TestTraining:
    def test_gradient_reaches_every_level(self, trained):
        """Every variable of every level network moved during training (Adam leaves a variable
        whose gradient is always zero exactly where it was)."""
        initial, model = trained["initial"], trained["result"].model
        for k in range(model.levels):
            before = [v.numpy() for v in initial.level_nets[k].trainable_variables]
            after = [v.numpy() for v in model.level_nets[k].trainable_variables]
            assert len(before) == len(after) == 2 * 2 + 2  # two 3x3 convs and the 1x1
            for i, (a, b) in enumerate(zip(before, after)):
                assert np.isfinite(b).all()
                assert np.abs(a - b).max() > 1e-5, f"level {k}, variable {i} did not move"
        metrics = trained["result"].metrics
        assert set(metrics) == {f"{m}_level{k}" for m in ("pe", "failed") for k in range(3)}

    def test_short_training_reduces_the_loss(self, trained):
        assert trained["result"].skipped_steps == 0 and trained["result"].steps == 40
        assert trained["after"] < 0.7 * trained["before"], (trained["before"], trained["after"])

    def test_method_loads_checkpoint_written_by_train(self, trained):
        x, t, _ = synthetic_pairs(5)
        model = trained["result"].model
        # The same computation as the method (a graph, chunks of 2) on the in-memory model: a
        # barely trained model's single LK steps amplify float32 rounding, so eager and graph
        # runs of it may differ by more than rounding.
        run = tf.function(lambda a, b: model((a, b), training=False)["H"])
        expected = np.concatenate([corners_of(run(tf.constant(x[i:i + 2]), tf.constant(t[i:i + 2])))
                                   for i in range(0, 5, 2)])
        predict = methods.get_method("clkn", checkpoint_dir=trained["root"], batch_size=2,
                                     jit_compile=False)
        corners, failed = predict(x, t)
        assert corners.shape == (5, 4, 2) and corners.dtype == np.float64
        assert failed.shape == (5,) and not failed.any()
        np.testing.assert_allclose(corners, expected, rtol=1e-5, atol=1e-3)
        # The loaded model has the trained weights, not fresh ones.
        loaded = load_clkn(trained["folder"])
        for a, b in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
        config = json.loads((trained["folder"] / RUN_CONFIG_NAME).read_text())
        assert config["family"] == "clkn" and config["task"]["margins"] == [2.0, 1.0, 0.5]
        assert config["model"] == trained["task"].model_config

    def test_missing_checkpoint_names_the_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "clkn")):
            build_clkn_method(tmp_path)
        write_run_config(tmp_path / "clkn", **clkn.CLKNTask(dict(TINY)).run_config())  # no weights
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "clkn")):
            build_clkn_method(tmp_path)

    def test_registered_and_no_ground_truth(self, trained, monkeypatch):
        assert "clkn" in methods.available_methods()
        assert "clkn" in clkn.METHOD_DESCRIPTIONS
        predict = build_clkn_method(trained["root"], jit_compile=False)
        assert list(inspect.signature(predict).parameters) == ["inputs", "templates"]
        # Labels cannot be read while predicting; the answer depends on the images only.
        from deeplk.data import dlk_format

        def no_labels(*args, **kwargs):
            raise AssertionError("the method read a label")

        monkeypatch.setattr(dlk_format, "read_label", no_labels)
        monkeypatch.setattr(dlk_format, "parse_label", no_labels)
        x, t, _ = synthetic_pairs(3)
        c1, _ = predict(x, t)
        c2, _ = predict(x[::-1], t[::-1])
        np.testing.assert_allclose(c1, c2[::-1], rtol=1e-5, atol=1e-4)
        with pytest.raises(ValueError, match="templates"):
            predict(x, t[:2])


def test_config_is_validated_and_expanded():
    config = clkn.CLKNConfig(levels=3, filters=4, depth=[1, 2, 3])
    assert config.filters == [4, 4, 4] and config.depth == [1, 2, 3]
    assert clkn.CLKNTask(config).model_config == clkn.CLKNTask(config.to_dict()).model_config == config.to_dict()
    with pytest.raises(ValueError, match="channels"):
        clkn.CLKNConfig(channels=0)
    with pytest.raises(ValueError, match="depth"):
        clkn.CLKNConfig(levels=3, filters=4, depth=[1, 2])
    with pytest.raises(ValueError, match="unknown `model_config` keys .'width'."):
        clkn.CLKNTask({"width": 3})
