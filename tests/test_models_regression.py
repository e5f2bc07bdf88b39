"""Tests for `deeplk.models.regression`: DHN / MHN packing, corner parametrisation, stage
composition (against float64 NumPy), the network, the training task, checkpoints and methods.

Networks here are tiny (a few channels, small dense layer, often ``input_scale=0.25``) so the
whole file runs in seconds; the architecture does not change what is tested.
"""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk.geometry import centred_homography
from deeplk.models import regression as R
from deeplk.train import RUN_CONFIG_NAME, TrainConfig, read_run_config, train, write_run_config

BASE = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)
TEMPLATE_CORNERS = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], dtype=np.float64)
C = np.array([[1, 0, 32], [0, 1, 32], [0, 0, 1]], dtype=np.float64)
TINY = dict(filters=(2, 2), final_filters=4, dense_units=8, input_scale=0.25)


# ------------------------------------------------------------------------------------------
# float64 NumPy references


def np_homography(src, dst) -> np.ndarray:
    """dst ~ H src from 4 correspondences: the 8x8 DLT solved in float64."""
    A, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    h = np.linalg.solve(np.array(A, np.float64), np.array(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def assert_templates_are_warps(inputs, templates, corners, n) -> None:
    """The first `n` templates are their inputs warped (OpenCV, bilinear) by the labelled H."""
    for i in range(n):
        H = np_homography(TEMPLATE_CORNERS, corners[i])
        want = cv2.warpPerspective(inputs[i], H, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        np.testing.assert_allclose(templates[i], want, atol=2e-3)


def np_apply(H, pts) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


def random_corners(rng, batch) -> np.ndarray:
    return BASE + rng.integers(-32, 32, size=(batch, 4, 2)).astype(np.float64)


def smooth_images(rng, batch, size=192) -> np.ndarray:
    """Random smooth RGB images in [0, 1] (texture a regression net can use)."""
    small = rng.random((batch, 12, 12, 3)).astype(np.float32)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small]).clip(0, 1)


def constant_net(offsets, **config) -> R.RegressionNet:
    """A tiny net whose output is exactly `offsets` (8 pixels) for every pair."""
    net = R._net({**TINY, **config})
    layer = net.stack[-1]
    layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
    layer.bias.assign(np.asarray(offsets, np.float32) / net.offset_scale)
    return net


# ------------------------------------------------------------------------------------------


class TestPackPair:
    def test_known_answer(self, rng):
        inputs = rng.random((2, 192, 192, 3)).astype(np.float32)
        templates = rng.random((2, 128, 128, 3)).astype(np.float32)
        packed = R.pack_pair(inputs, templates).numpy()
        assert packed.shape == (2, 192, 192, 2) and packed.dtype == np.float32
        luma = np.array([0.2989, 0.5870, 0.1140])  # tf.image.rgb_to_grayscale
        np.testing.assert_allclose(packed[..., 0], inputs.astype(np.float64) @ luma, atol=1e-6)
        np.testing.assert_allclose(packed[:, 32:160, 32:160, 1], templates.astype(np.float64) @ luma, atol=1e-6)
        outside = packed[..., 1].copy()
        outside[:, 32:160, 32:160] = 0
        assert np.all(outside == 0)
        # the unperturbed template really sits there: input corners (32, 32)..(159, 159)
        assert packed[0, 32, 32, 1] == pytest.approx(templates[0, 0, 0] @ luma, abs=1e-6)
        assert packed[0, 159, 159, 1] == pytest.approx(templates[0, 127, 127] @ luma, abs=1e-6)

    def test_grey_inputs_accepted(self, rng):
        inputs = rng.random((1, 192, 192, 1)).astype(np.float32)
        templates = rng.random((1, 128, 128, 1)).astype(np.float32)
        packed = R.pack_pair(inputs, templates).numpy()
        np.testing.assert_array_equal(packed[..., 0], inputs[..., 0])

    @pytest.mark.parametrize("inputs, templates, name", [
        ((1, 128, 128, 3), (1, 128, 128, 3), "inputs"),
        ((1, 192, 192, 3), (1, 192, 192, 3), "templates"),
        ((1, 192, 192, 2), (1, 128, 128, 3), "inputs"),
        ((2, 192, 192, 3), (3, 128, 128, 3), "batch size"),
    ])
    def test_bad_shapes(self, inputs, templates, name):
        with pytest.raises(ValueError, match=name):
            R.pack_pair(np.zeros(inputs, np.float32), np.zeros(templates, np.float32))

    def test_integer_images_rejected(self):
        with pytest.raises(ValueError, match="inputs"):
            R.pack_pair(np.zeros((1, 192, 192, 3), np.uint8), np.zeros((1, 128, 128, 3), np.float32))


class TestOffsets:
    def test_layout_known_answer(self):
        offsets = np.arange(8, dtype=np.float64)[None]
        corners = R.offsets_to_corners(offsets).numpy()
        np.testing.assert_array_equal(corners[0], BASE + [[0, 1], [2, 3], [4, 5], [6, 7]])
        assert corners.dtype == np.float64

    def test_round_trip(self, rng):
        corners = random_corners(rng, 5)
        offsets = R.corners_to_offsets(corners)
        assert offsets.shape == (5, 8)
        np.testing.assert_array_equal(R.offsets_to_corners(offsets).numpy(), corners)

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="offsets"):
            R.offsets_to_corners(np.zeros((2, 4, 2)))
        with pytest.raises(ValueError, match="corners"):
            R.corners_to_offsets(np.zeros((2, 8)))

    def test_centred_homography_maps_template_to_base(self):
        C_tf = centred_homography(R.INPUT_SIZE, R.TEMPLATE_SIZE, batch=1, dtype=tf.float64).numpy()[0]
        np.testing.assert_array_equal(np_apply(C_tf, TEMPLATE_CORNERS), BASE)


class TestComposition:
    def test_compose_against_numpy(self, rng):
        prev = random_corners(rng, 4)
        H_prev = np.stack([np_homography(TEMPLATE_CORNERS, c) for c in prev])
        residual = rng.uniform(-6, 6, size=(4, 8))
        got = R.compose_residual(H_prev, residual).numpy()
        for i in range(4):
            # composed homography input_H_template = H_prev C^-1 centred_H_template
            R_i = np_homography(TEMPLATE_CORNERS, BASE + residual[i].reshape(4, 2))
            composed = H_prev[i] @ np.linalg.inv(C) @ R_i
            np.testing.assert_allclose(got[i], np_apply(composed, TEMPLATE_CORNERS), atol=1e-9)

    def test_stage_one_is_base_plus_offsets(self, rng):
        offsets = rng.uniform(-30, 30, size=(3, 8))
        np.testing.assert_array_equal(R.compose_residual(None, offsets).numpy(), BASE + offsets.reshape(3, 4, 2))

    def test_residual_against_numpy(self, rng):
        prev, true = random_corners(rng, 3), random_corners(rng, 3)
        H_prev = np.stack([np_homography(TEMPLATE_CORNERS, c) for c in prev])
        got = R.residual_offsets(H_prev, true).numpy()
        for i in range(3):
            centred_H_input = C @ np.linalg.inv(H_prev[i])
            want = np_apply(centred_H_input, true[i]) - BASE
            np.testing.assert_allclose(got[i], want.reshape(8), atol=1e-9)

    def test_perfect_estimate_leaves_zero_residual(self, rng):
        true = random_corners(rng, 6)
        H = np.stack([np_homography(TEMPLATE_CORNERS, c) for c in true])
        np.testing.assert_allclose(R.residual_offsets(H, true).numpy(), 0.0, atol=1e-9)

    def test_round_trip(self, rng):
        prev, true = random_corners(rng, 3), random_corners(rng, 3)
        H_prev = np.stack([np_homography(TEMPLATE_CORNERS, c) for c in prev])
        back = R.compose_residual(H_prev, R.residual_offsets(H_prev, true)).numpy()
        np.testing.assert_allclose(back, true, atol=1e-9)


class TestLoss:
    def test_known_value(self):
        pred = np.zeros((2, 8), np.float32)
        true = np.zeros((2, 8), np.float32)
        true[0, 0] = 32.0  # (32/32)^2 = 1 in one of 16 numbers
        true[1, 3] = -16.0  # 0.25
        assert float(R.regression_loss(pred, true)) == pytest.approx(1.25 / 16)
        assert float(R.regression_loss(pred, true, offset_scale=16.0)) == pytest.approx(5.0 / 16)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="pred_offsets"):
            R.regression_loss(np.zeros((2, 4, 2)), np.zeros((2, 8)))


class TestRegressionNet:
    @pytest.mark.parametrize("batch", [1, 3])
    def test_shapes_and_zero_init(self, rng, batch):
        net = R._net(TINY)
        out = net(R.pack_pair(rng.random((batch, 192, 192, 3)), rng.random((batch, 128, 128, 3))))
        assert out.shape == (batch, 8)
        np.testing.assert_array_equal(out.numpy(), 0.0)  # untrained: the centred guess

    def test_unknown_batch_in_tf_function(self, rng):
        net = R._net(TINY)
        fn = tf.function(lambda x: net(x), input_signature=[tf.TensorSpec((None, 192, 192, 2))])
        assert fn(tf.zeros((2, 192, 192, 2))).shape == (2, 8)
        assert fn(tf.zeros((5, 192, 192, 2))).shape == (5, 8)

    def test_architecture_default(self):
        net = R._net(None)
        names = [layer.name for layer in net.stack]
        convs = [layer.filters for layer in net.stack if isinstance(layer, keras.layers.Conv2D)]
        assert convs == [32, 32, 64, 64, 64, 64, 128, 128, 128, 128, 256]
        assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in net.stack) == 5
        assert "resize" not in names
        dense = [layer.units for layer in net.stack if isinstance(layer, keras.layers.Dense)]
        assert dense == [1024, 8]
        assert net.get_layer("dropout").rate == pytest.approx(0.2)

    def test_input_scale_resizes_by_area(self):
        net = R._net({**TINY, "input_scale": 0.5})
        resize = net.stack[0]
        x = np.arange(2 * 192 * 192 * 2, dtype=np.float32).reshape(2, 192, 192, 2)
        want = x.reshape(2, 96, 2, 96, 2, 2).mean(axis=(2, 4))
        np.testing.assert_allclose(resize(x).numpy(), want, rtol=1e-6)

    def test_normalise_known_answer(self, rng):
        packed = rng.random((2, 192, 192, 2)).astype(np.float64) * [0.5, 2.0] + [0.2, -1.0]
        packed[:, :, :, 1] *= np.pad(np.ones((128, 128)), 32)[None]
        out = R._standardise(tf.constant(packed, tf.float32)).numpy().astype(np.float64)
        for i in range(2):
            x0, t = packed[i, ..., 0], packed[i, 32:160, 32:160, 1]
            np.testing.assert_allclose(out[i, ..., 0], (x0 - x0.mean()) / np.sqrt(x0.var() + 1e-4), atol=1e-4)
            np.testing.assert_allclose(out[i, 32:160, 32:160, 1], (t - t.mean()) / np.sqrt(t.var() + 1e-4), atol=1e-4)
        outside = out[..., 1].copy()
        outside[:, 32:160, 32:160] = 0
        assert np.all(outside == 0)
        # brightness/contrast changes of either image do not change what the net sees (up to eps)
        scaled = packed * [3.0, 0.5] + [0.1, 0.0]
        scaled[:, :, :, 1] *= np.pad(np.ones((128, 128)), 32)[None]
        np.testing.assert_allclose(R._standardise(tf.constant(scaled, tf.float32)).numpy(), out, atol=1e-2)

    @pytest.mark.parametrize("momentum", [0.99, 0.5])
    def test_bn_momentum_moving_statistics(self, rng, momentum):
        """One training call moves every BN's moving mean to m * 0 + (1 - m) * batch mean."""
        net = R._net({**TINY, "bn_momentum": momentum})
        bns = [layer for layer in net.stack if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(bns) == 5 and all(bn.momentum == momentum for bn in bns)
        assert R._net(TINY).stack[2].momentum == 0.99  # the Keras default stays the default
        x = rng.random((4, 192, 192, 2)).astype(np.float32)
        first_conv = net.stack[1]  # after the resize
        want = first_conv(net.stack[0](x)).numpy().astype(np.float64).mean(axis=(0, 1, 2)) * (1 - momentum)
        net(x, training=True)
        np.testing.assert_allclose(bns[0].moving_mean.numpy(), want, rtol=1e-4, atol=1e-7)

    def _random_weights(self, net, rng):
        for v in net.weights:
            v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32) if "variance" not in v.path
                     else rng.uniform(0.5, 1.5, v.shape).astype(np.float32))

    def test_get_config_round_trip(self, rng):
        net = R._net({**TINY, "dropout": 0.3, "batch_norm": True, "normalise": True, "bn_momentum": 0.9})
        self._random_weights(net, rng)
        config = net.get_config()
        assert config == json.loads(json.dumps(config))
        clone = R.RegressionNet.from_config(config)
        clone.build((None, 192, 192, 2))
        clone.set_weights(net.get_weights())
        x = rng.random((3, 192, 192, 2)).astype(np.float32)
        np.testing.assert_array_equal(clone(x).numpy(), net(x).numpy())
        assert clone.get_config() == config

    def test_keras_save_load_round_trip(self, rng, tmp_path):
        net = R._net(TINY)
        self._random_weights(net, rng)
        path = tmp_path / "net.keras"
        net.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded, R.RegressionNet)
        x = rng.random((2, 192, 192, 2)).astype(np.float32)
        np.testing.assert_array_equal(loaded(x).numpy(), net(x).numpy())

    @pytest.mark.parametrize("kwargs, name", [
        ({"input_scale": 0.0}, "input_scale"), ({"input_scale": 1.5}, "input_scale"),
        ({"input_scale": 0.1}, "input_scale"), ({"dropout": 1.0}, "dropout"),
        ({"filters": ()}, "filters"), ({"offset_scale": 0}, "offset_scale"),
        ({"bn_momentum": 1.0}, "bn_momentum"), ({"bn_momentum": -0.1}, "bn_momentum"),
    ])
    def test_bad_arguments(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            R.RegressionNet(**kwargs)

    def test_bad_input_shape(self):
        with pytest.raises(ValueError, match="input_shape"):
            R.RegressionNet(**TINY).build((None, 128, 128, 2))


class TestCascade:
    def test_constant_stages_against_numpy(self, rng):
        o1 = rng.uniform(-20, 20, 8)
        o2 = rng.uniform(-5, 5, 8)
        inputs = rng.random((2, 192, 192, 3)).astype(np.float32)
        templates = rng.random((2, 128, 128, 3)).astype(np.float32)
        got = R.cascade_corners([constant_net(o1), constant_net(o2)], inputs, templates).numpy()
        H1 = np_homography(TEMPLATE_CORNERS, BASE + o1.astype(np.float32).reshape(4, 2))
        want = np_apply(H1 @ np.linalg.inv(C), BASE + o2.astype(np.float32).reshape(4, 2))
        np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=2e-3)

    def test_empty(self):
        with pytest.raises(ValueError, match="nets"):
            R.cascade_corners([], np.zeros((1, 192, 192, 3), np.float32), np.zeros((1, 128, 128, 3), np.float32))


class TestTask:
    def test_loss_of_known_prediction(self, rng):
        o = np.array([3, -2, 5, 1, -4, 0, 2, 6], np.float64)
        task = R.RegressionTask(TINY)
        model = constant_net(o)
        corners = random_corners(rng, 4).astype(np.float32)
        batch = (rng.random((4, 192, 192, 3)).astype(np.float32), rng.random((4, 128, 128, 3)).astype(np.float32), corners)
        loss, metrics = task.compute_loss(model, batch, training=False)
        target = (corners.astype(np.float64) - BASE).reshape(4, 8)
        assert float(loss) == pytest.approx(np.mean(((o - target) / 32) ** 2), rel=1e-5)
        pe = np.linalg.norm(BASE + o.reshape(4, 2) - corners, axis=-1).mean()
        assert float(metrics["pe"]) == pytest.approx(pe, rel=1e-5)

    def test_perfect_previous_stage_gives_zero_residual_and_centred_template(self, rng):
        o1 = np.array([-20, 12, 17, -9, 25, 30, -15, -28], np.float64)
        corners = np.broadcast_to(BASE + o1.reshape(4, 2), (2, 4, 2)).astype(np.float32)
        inputs = smooth_images(rng, 2)
        _, templates, _ = R.resample_perturbations(inputs, tf.constant([1, 2], tf.int64))
        # cut the templates at the known corners instead of random ones
        H = np_homography(TEMPLATE_CORNERS, corners[0])
        templates = np.stack([cv2.warpPerspective(im, H, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
                              for im in inputs])
        task = R.RegressionTask(TINY, previous=[constant_net(o1)])
        packed, target, H_start = task.stage_inputs(inputs, templates, corners)
        np.testing.assert_allclose(target.numpy(), 0.0, atol=2e-3)
        np.testing.assert_allclose(H_start.numpy()[0], H, atol=1e-4 * np.abs(H).max())
        # the warped input shows the template exactly where channel 1 has it
        inner = packed.numpy()[:, 34:158, 34:158]
        np.testing.assert_allclose(inner[..., 0], inner[..., 1], atol=2e-3)
        loss, metrics = task.compute_loss(constant_net(np.zeros(8)), (inputs, templates, corners), training=False)
        assert float(loss) < 1e-8 and float(metrics["pe"]) < 1e-3

    def test_second_stage_target_against_numpy(self, rng):
        o1 = rng.uniform(-10, 10, 8)
        corners = random_corners(rng, 3).astype(np.float32)
        batch = (rng.random((3, 192, 192, 3)).astype(np.float32), rng.random((3, 128, 128, 3)).astype(np.float32), corners)
        task = R.RegressionTask(TINY, previous=[constant_net(o1)])
        _, target, _ = task.stage_inputs(*batch)
        H1 = np_homography(TEMPLATE_CORNERS, BASE + o1.astype(np.float32).reshape(4, 2))
        for i in range(3):
            want = np_apply(C @ np.linalg.inv(H1), corners[i].astype(np.float64)) - BASE
            np.testing.assert_allclose(target.numpy()[i], want.reshape(8), atol=2e-3)

    def test_no_gradient_into_previous_stage(self, rng):
        prev = R._net(TINY)
        task = R.RegressionTask(TINY, previous=[prev])
        model = task.build_model()
        corners = random_corners(rng, 2).astype(np.float32)
        batch = (rng.random((2, 192, 192, 3)).astype(np.float32), rng.random((2, 128, 128, 3)).astype(np.float32), corners)
        with tf.GradientTape() as tape:
            loss, _ = task.compute_loss(model, batch, training=True)
        grads = tape.gradient(loss, prev.trainable_variables + model.trainable_variables)
        assert all(g is None for g in grads[:len(prev.trainable_variables)])
        assert grads[-1] is not None and np.any(grads[-1].numpy() != 0)

    def test_tiny_training_run_decreases_loss(self, rng):
        inputs = smooth_images(rng, 4)
        batch = R.resample_perturbations(inputs, tf.constant([3, 4], tf.int64))
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        task = R.RegressionTask(dict(filters=(8, 8), final_filters=8, dense_units=32, input_scale=0.25, dropout=0.0))
        result = train(task, ds, TrainConfig(steps=60, learning_rate=3e-3, log_every=10, progress=False,
                                             data_resume="restart"))
        first, last = result.history[0][1], result.history[-1][1]
        assert np.isfinite(last) and last < 0.3 * first


class TestResample:
    def test_matches_opencv_and_protocol(self, rng):
        inputs = smooth_images(rng, 3)
        out_in, templates, corners = (t.numpy() for t in R.resample_perturbations(inputs, tf.constant([5, 6], tf.int64)))
        np.testing.assert_array_equal(out_in, inputs)
        assert templates.shape == (3, 128, 128, 3) and corners.shape == (3, 4, 2)
        origins = np.array([[0, 0], [128, 0], [128, 128], [0, 128]])
        assert np.all(corners >= origins) and np.all(corners <= origins + 63)
        assert np.all(corners == np.round(corners))
        assert_templates_are_warps(inputs, templates, corners, 3)

    def test_seeded(self, rng):
        inputs = smooth_images(rng, 2)
        a = R.resample_perturbations(inputs, tf.constant([1, 1], tf.int64))[2].numpy()
        b = R.resample_perturbations(inputs, tf.constant([1, 1], tf.int64))[2].numpy()
        c = R.resample_perturbations(inputs, tf.constant([1, 2], tf.int64))[2].numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)

    @pytest.mark.parametrize("r", [1, 8, 32])
    def test_max_offset_range_and_templates(self, rng, r):
        inputs = smooth_images(rng, 64)
        seed = tf.constant([2, 3], tf.int64)
        out_in, templates, corners = (t.numpy() for t in R.resample_perturbations(inputs, seed, max_offset=r))
        offsets = corners - BASE
        assert np.all(offsets == np.round(offsets))
        # uniform integers in [-r, r - 1]: with 512 draws every end value shows up
        assert offsets.min() == -r and offsets.max() == r - 1
        assert_templates_are_warps(inputs, templates, corners, 2)

    def test_max_offset_tensor_rounded_and_clipped(self, rng):
        inputs = smooth_images(rng, 32)
        seed = tf.constant([4, 5], tf.int64)
        a = R.resample_perturbations(inputs, seed, max_offset=tf.constant(5.6))[2].numpy()
        b = R.resample_perturbations(inputs, seed, max_offset=6)[2].numpy()
        np.testing.assert_array_equal(a, b)
        big = R.resample_perturbations(inputs, seed, max_offset=100.0)[2].numpy() - BASE
        assert big.min() >= -32 and big.max() <= 31

    def test_curriculum_offset_known_values(self):
        assert R.curriculum_offset(0, 100, 8.0) == 8.0
        assert R.curriculum_offset(50, 100, 8.0) == 20.0
        assert R.curriculum_offset(100, 100, 8.0) == 32.0
        assert R.curriculum_offset(5000, 100, 8.0) == 32.0
        got = R.curriculum_offset(tf.constant(25, tf.int64), 100, 4.0)
        assert got.dtype == tf.float32 and float(got) == pytest.approx(11.0)


def write_dlk_split(root, split, n, rng):
    """A tiny DLK-format split of smooth images with centred labels."""
    from deeplk.data import dlk_format as F

    for i, image in enumerate(smooth_images(rng, n)):
        paths = F.sample_paths(root, split, F.sample_name(i))
        for kind in ("input", "template", "label"):
            paths[kind].parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(paths["input"]), (image * 255).astype(np.uint8))
        cv2.imwrite(str(paths["template"]), (image[32:160, 32:160] * 255).astype(np.uint8))
        F.write_label(paths["label"], BASE)


class TestTrainDataset:
    @pytest.fixture(scope="class")
    def root(self, tmp_path_factory):
        root = tmp_path_factory.mktemp("dlk")
        write_dlk_split(root, "train2014", 4, np.random.default_rng(3))
        return root

    def test_stored_pairs(self, root):
        inputs, templates, corners = next(iter(R.make_train_dataset(root, batch_size=2)))
        assert inputs.shape == (2, 192, 192, 3) and templates.shape == (2, 128, 128, 3)
        np.testing.assert_array_equal(corners.numpy(), np.broadcast_to(BASE, (2, 4, 2)))

    def test_curriculum_grows_the_offsets(self, root):
        ds = R.make_train_dataset(root, batch_size=4, augment="resample", curriculum_steps=6, curriculum_start=2.0)
        spans = [np.abs(c.numpy() - BASE).max() for _, _, c in ds.take(40)]
        assert max(spans[:1]) <= 2  # batch 0: offsets in [-2, 1]
        assert spans[3] <= R.curriculum_offset(3, 6, 2.0)  # 17 px at batch 3
        assert max(spans[6:]) > 20  # the full +-32 range afterwards
        full = R.make_train_dataset(root, batch_size=4, augment="resample")
        assert np.abs(next(iter(full))[2].numpy() - BASE).max() > 2

    @pytest.mark.parametrize("kwargs, name", [
        ({"augment": "flip"}, "augment"),
        ({"curriculum_steps": 10}, "curriculum_steps"),  # needs augment="resample"
        ({"augment": "resample", "curriculum_steps": -1}, "curriculum_steps"),
        ({"augment": "resample", "curriculum_steps": 10, "curriculum_start": 0.5}, "curriculum_start"),
    ])
    def test_bad_arguments(self, root, kwargs, name):
        with pytest.raises(ValueError, match=name):
            R.make_train_dataset(root, **kwargs)


# ------------------------------------------------------------------------------------------
# Checkpoints and methods: stages written by `train_stage` (through `deeplk.train.train`) from
# nets with known constant outputs and a negligible learning rate, so their predictions are known.

O_DHN = np.array([7, -3, -12, 4, 9, 11, -6, -8], np.float64)
O_MHN = np.array([10, -8, -6, 4, 12, 9, -5, -11], np.float64)


def one_batch_dataset():
    batch = (np.zeros((2, 192, 192, 3), np.float32), np.zeros((2, 128, 128, 3), np.float32),
             np.broadcast_to(BASE, (2, 4, 2)).astype(np.float32))
    return tf.data.Dataset.from_tensors(batch).repeat()


def train_constant_stage(checkpoint_dir, model, stage, offsets=None):
    """`train_stage` for one step, lr 1e-12: the stage keeps its initial weights, which output
    `offsets` (stage 1) or, for later MHN stages, those of the previous stage."""
    init = None
    if offsets is not None:
        init = checkpoint_dir / f"init_{model}{stage}.weights.h5"
        constant_net(offsets).save_weights(init)
    name = "dhn" if model == "dhn" else f"mhn/stage{stage}"
    return R.train_stage(name, one_batch_dataset(), checkpoint_dir, steps=1, learning_rate=1e-12,
                         model_config=TINY if stage == 1 else None, task_options=dict(init_weights=init),
                         optimizer="sgd", progress=False, data_resume="restart")


@pytest.fixture(scope="module")
def dhn_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    result = train_constant_stage(root, "dhn", 1, O_DHN)
    assert result.steps == 1
    return root


@pytest.fixture(scope="module")
def mhn_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    train_constant_stage(root, "mhn", 1, O_MHN)
    train_constant_stage(root, "mhn", 2)  # starts from stage 1's weights: the same offsets
    return root


class TestMethods:
    def test_dhn_method_returns_known_corners(self, rng, dhn_dir):
        folder = dhn_dir / "dhn"
        assert (folder / "final.weights.h5").is_file() and (folder / RUN_CONFIG_NAME).is_file()
        from deeplk.methods import get_method

        predict = get_method("dhn", checkpoint_dir=dhn_dir)
        corners, failed = predict(rng.random((3, 192, 192, 3)).astype(np.float32), rng.random((3, 128, 128, 3)).astype(np.float32))
        assert corners.shape == (3, 4, 2) and corners.dtype == np.float64 and not failed.any()
        np.testing.assert_allclose(corners, np.broadcast_to(BASE + O_DHN.reshape(4, 2), (3, 4, 2)), atol=1e-4)

    def test_checkpoint_holds_every_weight(self, dhn_dir, tmp_path):
        # The ckpt-* files `train` writes (and resumes from) alone give the trained net back.
        import shutil

        shutil.copytree(dhn_dir / "dhn", tmp_path / "dhn")
        (tmp_path / "dhn" / "final.weights.h5").unlink()
        net = R.load_stage(tmp_path / "dhn")
        out = net(np.zeros((1, 192, 192, 2), np.float32)).numpy()
        np.testing.assert_allclose(out[0], O_DHN, atol=1e-4)

    def test_mhn_method_composes_stages(self, rng, mhn_dir):
        record = read_run_config(mhn_dir / "mhn" / "stage2", R.FAMILY)
        assert record.task == {"model": "mhn", "stage": 2, "learning_rate": 1e-12} and record.model["input_scale"] == TINY["input_scale"]
        predict = R.build_mhn_method(mhn_dir, stages=2)
        corners, failed = predict(rng.random((2, 192, 192, 3)).astype(np.float32), rng.random((2, 128, 128, 3)).astype(np.float32))
        H1 = np_homography(TEMPLATE_CORNERS, BASE + O_MHN.reshape(4, 2))
        want = np_apply(H1 @ np.linalg.inv(C), BASE + O_MHN.reshape(4, 2))
        np.testing.assert_allclose(corners, np.broadcast_to(want, (2, 4, 2)), atol=2e-3)
        one, _ = R.build_mhn_method(mhn_dir, stages=1)(np.zeros((1, 192, 192, 3), np.float32), np.zeros((1, 128, 128, 3), np.float32))
        np.testing.assert_allclose(one[0], BASE + O_MHN.reshape(4, 2), atol=1e-4)
        with pytest.raises(FileNotFoundError, match="stage3"):
            R.build_mhn_method(mhn_dir)  # stage 3 was never trained

    def test_train_stage_checks(self, tmp_path, mhn_dir):
        with pytest.raises(ValueError, match="model_config"):
            R.train_stage("mhn/stage3", one_batch_dataset(), mhn_dir, steps=1, model_config={**TINY, "dense_units": 4})
        with pytest.raises(FileNotFoundError, match="stage1"):
            R.train_stage("mhn/stage2", one_batch_dataset(), tmp_path, steps=1)
        with pytest.raises(ValueError, match="task_options.*init_weight"):
            R.train_stage("dhn", one_batch_dataset(), tmp_path, steps=1, task_options={"init_weight": "x"})
        with pytest.raises(ValueError, match=r"stage.*\['dhn', 'mhn/stage1'"):
            R.train_stage("mhn", one_batch_dataset(), tmp_path, steps=1)

    def test_missing_checkpoint_names_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dhn")):
            R.build_dhn_method(tmp_path)
        write_run_config(tmp_path / "dhn", **R.RegressionTask(TINY).run_config())
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "dhn")):
            R.build_dhn_method(tmp_path)

    def test_corrupt_config_names_file(self, tmp_path):
        (tmp_path / "dhn").mkdir()
        (tmp_path / "dhn" / RUN_CONFIG_NAME).write_text("{not json")
        with pytest.raises(ValueError, match=RUN_CONFIG_NAME):
            R.build_dhn_method(tmp_path)

    def test_bad_shapes_in_predict(self, dhn_dir):
        predict = R.build_dhn_method(dhn_dir)
        with pytest.raises(ValueError, match="templates"):
            predict(np.zeros((1, 192, 192, 3), np.float32), np.zeros((1, 192, 192, 3), np.float32))

    def test_method_descriptions(self):
        from deeplk import methods

        assert set(R.METHOD_DESCRIPTIONS) == {"dhn", "mhn"}
        assert {"dhn", "mhn"} <= set(methods.available_methods())

    def test_evaluate_stage(self, dhn_dir):
        n = 5
        true = np.broadcast_to(BASE, (n, 4, 2)).copy()
        summaries, corners = R.evaluate_stage("dhn", dhn_dir, np.zeros((n, 192, 192, 3), np.float32),
                                              np.zeros((n, 128, 128, 3), np.float32), true, batch_size=2)
        assert set(summaries) == {"identity", "dhn"}
        assert summaries["identity"]["mean_pe"] == pytest.approx(0.0, abs=1e-9)
        want = np.linalg.norm(O_DHN.reshape(4, 2), axis=-1).mean()
        assert summaries["dhn"]["mean_pe"] == pytest.approx(want, abs=1e-4)
        assert summaries["dhn"]["n"] == n and corners.shape == (n, 4, 2)


class TestHelpers:
    def test_stage_dirs(self, tmp_path):
        assert R.stage_dir(tmp_path, "dhn") == tmp_path / "dhn"
        assert R.stage_dir(tmp_path, "mhn/stage3") == tmp_path / "mhn" / "stage3"
        assert R.STAGE_NAMES == ("dhn", "mhn/stage1", "mhn/stage2", "mhn/stage3")
        for bad in ("mhn/stage4", "cnn", "dhn/stage1", 1):
            with pytest.raises(ValueError, match="stage"):
                R.stage_dir(tmp_path, bad)


def test_config_is_validated():
    config = R.RegressionConfig(**TINY)
    assert config.filters == [2, 2] and config.dropout == 0.2
    # A Keras get_config of the net (older model_config.json files hold one) reads the same.
    net_config = R.RegressionNet(**TINY).get_config()
    assert R.RegressionTask(net_config).net_config == R.RegressionTask(config).net_config == config.to_dict()
    for bad, name in ((dict(dropout=1.0), "dropout"), (dict(filters=[]), "filters"),
                      (dict(input_scale=0.0), "input_scale")):
        with pytest.raises(ValueError, match=name):
            R.RegressionConfig(**bad)
    with pytest.raises(ValueError, match="unknown `model_config` keys .'depth'."):
        R.RegressionTask({"depth": 3})
