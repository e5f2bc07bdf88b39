"""HomographyNet (`deeplk.models.homography_net`): backbone, model serialisation, the masked
photometric L1 (known answers, finite differences), frozen training, the rho curriculum and the
evaluation methods. Tiny configurations: 48 / 32 px pairs, or 192 / 128 at ``input_scale=0.25``.
"""

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk import methods
from deeplk.data import generate_dataset
from deeplk.geometry import corners_to_homography
from deeplk.geometry_np import centred_corners
from deeplk.models import homography_net as hn
from deeplk.train import RUN_CONFIG_NAME, TrainConfig, train

TINY = dict(vgg_weights=None, input_size=48, template_size=32, inception_filters=4,
            num_inception_blocks=3, dense_units=16)
# The DLK sizes at a quarter resolution before the backbone (what the demo profile uses).
DLK_TINY = dict(vgg_weights=None, input_scale=0.25, inception_filters=4, num_inception_blocks=2,
                dense_units=16)


def texture(size, seed=0, channels=3, dtype=np.float32):
    """A smooth random texture in [0, 1] (blurred noise), (size, size, channels)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size, channels)), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(dtype)


def randomize_head(model, seed=0):
    """Give the zero-initialised output layer random weights (so outputs depend on the inputs)."""
    rng = np.random.default_rng(seed)
    model.out.kernel.assign(rng.normal(0, 0.05, model.out.kernel.shape).astype(np.float32))
    model.out.bias.assign(rng.normal(0, 0.05, model.out.bias.shape).astype(np.float32))


@pytest.fixture(scope="module")
def tiny_model():
    model = hn.HomographyNet(**TINY).build_for_inputs()
    randomize_head(model)
    return model


@pytest.fixture(scope="module")
def tiny_pairs():
    """Three 48 / 32 pairs with known corners (offsets up to 6 px)."""
    rng = np.random.default_rng(3)
    inputs = np.stack([texture(48, seed=s) for s in range(3)])
    base = centred_corners(48, 32).astype(np.float32)
    corners = base + rng.uniform(-6, 6, (3, 4, 2)).astype(np.float32)
    templates = hn.warp_image(inputs, corners_to_homography(corners, 32), 32, return_mask=False).numpy()
    return inputs, templates, corners


# ------------------------------------------------------------------------------------------
# Backbone


class TestBackbone:
    def test_preprocess_matches_keras(self):
        x = np.random.default_rng(0).random((2, 5, 6, 3)).astype(np.float32)
        ref = keras.applications.vgg19.preprocess_input(x * 255.0)
        np.testing.assert_allclose(hn.vgg_preprocess(x).numpy(), ref, atol=1e-4)

    def test_cut_frozen_and_local_weights_file(self, tmp_path):
        vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        path = tmp_path / "vgg19_notop.weights.h5"
        vgg.save_weights(str(path))
        backbone = hn.vgg19_backbone(str(path))
        assert backbone.output_shape == (None, None, None, 256)
        assert backbone.layers[-1].name == hn.VGG_LAYER
        assert not backbone.trainable and backbone.trainable_weights == []
        for layer in backbone.layers[1:]:
            for mine, ref in zip(layer.weights, vgg.get_layer(layer.name).weights):
                np.testing.assert_array_equal(mine.numpy(), ref.numpy())
        assert backbone(tf.zeros((1, 16, 24, 3))).shape == (1, 4, 6, 256)
        # vgg_weights=None builds the same layers directly (no blocks 4-5): same outputs with
        # the same weights.
        random = hn.vgg19_backbone(None)
        assert [l.name for l in random.layers[1:]] == [l.name for l in backbone.layers[1:]]
        assert not random.trainable
        random.set_weights(backbone.get_weights())
        x = np.random.default_rng(1).random((2, 20, 20, 3)).astype(np.float32)
        np.testing.assert_allclose(random(x).numpy(), backbone(x).numpy(), rtol=1e-5, atol=1e-4)

    @pytest.mark.parametrize("layer", ["block1_conv1", "block1_conv2", "block2_conv2"])
    def test_earlier_cut_is_the_same_vgg_prefix(self, layer, tmp_path):
        vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        path = tmp_path / "vgg19_notop.weights.h5"
        vgg.save_weights(str(path))
        backbone = hn.vgg19_backbone(str(path), layer)
        channels, stride = hn.VGG_LAYERS[layer]
        assert backbone.layers[-1].name == layer and not backbone.trainable_weights
        x = np.random.default_rng(2).random((2, 16, 16, 3)).astype(np.float32)
        reference = keras.Model(vgg.input, vgg.get_layer(layer).output)(x).numpy()
        assert reference.shape == (2, 16 // stride, 16 // stride, channels)
        np.testing.assert_allclose(backbone(x).numpy(), reference, rtol=1e-5, atol=1e-4)
        random = hn.vgg19_backbone(None, layer)
        assert [w.shape for w in random.weights] == [w.shape for w in backbone.weights]
        assert [l.name for l in random.layers[1:]] == [l.name for l in backbone.layers[1:]]
        with pytest.raises(ValueError, match="vgg_layer"):
            hn.vgg19_backbone(None, "block4_conv1")

    def test_missing_file_and_no_network(self, tmp_path, monkeypatch):
        with pytest.raises(FileNotFoundError, match="nope.h5"):
            hn.vgg19_backbone(tmp_path / "nope.h5")

        def offline(*args, **kwargs):
            raise Exception("URL fetch failure: no network")

        monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
        with pytest.raises(RuntimeError, match=hn.VGG_NOTOP_FILE) as info:
            hn.vgg19_backbone("imagenet")
        assert "vgg_weights=None" in str(info.value) and "storage.googleapis.com" in str(info.value)


# ------------------------------------------------------------------------------------------
# Model


class TestModel:
    def test_any_batch_size_and_independent_samples(self, tiny_model, tiny_pairs):
        inputs, templates, _ = tiny_pairs
        full = tiny_model((inputs, templates), training=False).numpy()
        assert full.shape == (3, 4, 2) and full.dtype == np.float32
        for b in (1, 2):
            part = tiny_model((inputs[:b], templates[:b]), training=False).numpy()
            np.testing.assert_allclose(part, full[:b], atol=1e-5)
        assert np.abs(full[0] - full[1]).max() > 1e-4  # outputs depend on the pair

    def test_fresh_model_predicts_the_centred_guess(self, tiny_pairs):
        inputs, templates, _ = tiny_pairs
        model = hn.HomographyNet(**TINY).build_for_inputs()
        np.testing.assert_array_equal(model((inputs, templates)).numpy(), 0.0)
        np.testing.assert_array_equal(model.predict_corners(inputs, templates).numpy(),
                                      np.broadcast_to(centred_corners(48, 32), (3, 4, 2)))

    def test_config_and_save_load_round_trip(self, tiny_model, tiny_pairs, tmp_path):
        inputs, templates, _ = tiny_pairs
        expected = tiny_model((inputs, templates), training=False).numpy()
        config = tiny_model.get_config()
        assert {k: config[k] for k in TINY} == TINY
        clone = hn.HomographyNet.from_config(config).build_for_inputs()
        clone.set_weights(tiny_model.get_weights())
        np.testing.assert_array_equal(clone((inputs, templates), training=False).numpy(), expected)
        path = tmp_path / "hnet.keras"
        tiny_model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, hn.HomographyNet)
        np.testing.assert_array_equal(loaded((inputs, templates), training=False).numpy(), expected)
        block = hn.InceptionBlock(3, name="b")
        assert hn.InceptionBlock.from_config(block.get_config()).filters == 3
        assert block.compute_output_shape((None, 5, 5, 7)) == (None, 5, 5, 12)

    def test_paper_defaults(self):
        model = hn.HomographyNet(vgg_weights=None)
        assert (model.input_size, model.template_size, model.input_scale, model.inception_filters,
                model.num_inception_blocks, model.dense_units, model.vgg_layer) == (192, 128, 1.0, 64, 7, 1024,
                                                                                     "block3_conv4")

    def test_fc_batch_norm_keeps_every_hidden_unit_alive(self, tiny_pairs):
        """Default: dense -> batch norm -> ReLU, so in training mode every hidden unit is
        normalised over the batch (zero mean: active on some samples, never all dead); the
        option False is the plain dense + ReLU (no fc_bn)."""
        inputs, templates, _ = tiny_pairs
        model = hn.HomographyNet(**TINY).build_for_inputs()
        assert model.fc_batch_norm and model.get_config()["fc_batch_norm"] is True
        # Push every unit's pre-activation far negative (what a dead layer looks like).
        model.hidden.kernel.assign(-np.abs(model.hidden.kernel.numpy()) - 0.1)
        s_in, s_t, s_off = model._sizes
        h = tf.concat([model._features(inputs, s_in),
                       tf.pad(model._features(templates, s_t), [[0, 0], [s_off // 4] * 2, [s_off // 4] * 2, [0, 0]])], -1)
        for layer in model.blocks:
            h = layer(h, training=True) if isinstance(layer, hn.InceptionBlock) else layer(h)
        z = model.hidden(tf.reshape(h, [3, -1]))
        assert np.all(z.numpy() < 0)
        active = tf.nn.relu(model.fc_bn(z, training=True)).numpy() > 0
        assert active.any(axis=0).mean() > 0.9  # most units active on some sample despite z < 0
        plain = hn.HomographyNet(**TINY, fc_batch_norm=False).build_for_inputs()
        assert not hasattr(plain, "fc_bn") and len(plain.weights) == len(model.weights) - 3
        with pytest.raises(ValueError, match="fc_batch_norm"):
            hn.HomographyNet(**TINY, fc_batch_norm="yes")

    def test_bn_momentum_reaches_every_batch_norm_and_round_trips(self):
        model = hn.HomographyNet(**TINY, bn_momentum=0.9).build_for_inputs()
        bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(bns) == 7 * TINY["num_inception_blocks"] + 1  # 7 per inception block + fc_bn
        assert all(layer.momentum == pytest.approx(0.9) for layer in bns)
        again = hn.HomographyNet.from_config(model.get_config())
        assert again.bn_momentum == pytest.approx(0.9)
        default = hn.HomographyNet(**TINY).build_for_inputs()
        assert default.fc_bn.momentum == pytest.approx(0.99)
        for bad in (1.0, -0.1, True, "0.9"):
            with pytest.raises(ValueError, match="bn_momentum"):
                hn.HomographyNet(**TINY, bn_momentum=bad)

    def test_standardise_images_matches_numpy(self):
        """float64 reference; the third image is nearly flat (variance below the 1e-4 floor)."""
        rng = np.random.default_rng(0)
        images = rng.random((3, 9, 7, 3)) * np.array([1.0, 40.0, 1e-3]).reshape(3, 1, 1, 1) + 3.0
        got = hn.standardise_images(tf.constant(images)).numpy()
        flat = images.reshape(3, -1)
        assert flat.var(1)[2] < 1e-4 < flat.var(1)[0]
        std = np.sqrt(np.maximum(flat.var(1), 1e-4))[:, None, None, None]
        want = (images - flat.mean(1)[:, None, None, None]) / std
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hn.standardise_images(tf.constant(0.4 * images[:2] + 0.3)).numpy(),
                                   got[:2], rtol=1e-9, atol=1e-9)

    def test_input_norm_standardise_ignores_brightness_and_contrast(self, tiny_pairs):
        """With per-image standardisation the prediction is the same when both images are
        rescaled to another brightness / contrast (a * x + b); with ImageNet preprocessing (the
        default) it is not."""
        inputs, templates, _ = tiny_pairs
        changed = (0.4 * inputs + 0.3, 0.4 * templates + 0.3)
        model = hn.HomographyNet(**TINY, input_norm="standardise").build_for_inputs()
        randomize_head(model)
        a = model((inputs, templates), training=False).numpy()
        b = model(changed, training=False).numpy()
        assert np.abs(a).max() > 0.1
        np.testing.assert_allclose(a, b, atol=2e-3 * np.abs(a).max())
        vgg = hn.HomographyNet(**TINY).build_for_inputs()
        randomize_head(vgg)
        a = vgg((inputs, templates), training=False).numpy()
        b = vgg(changed, training=False).numpy()
        assert np.abs(a - b).max() > 0.05 * np.abs(a).max()
        assert hn.HomographyNet.from_config(model.get_config()).input_norm == "standardise"
        with pytest.raises(ValueError, match="input_norm"):
            hn.HomographyNet(**TINY, input_norm="imagenet")

    def test_block2_cut_aligns_template_features_on_the_finer_grid(self, tiny_pairs):
        """48 / 32 at input_scale 0.25: 12 / 8 px, offset 2 px; fine for stride 2, not for 4."""
        options = dict(TINY, input_scale=0.25, num_inception_blocks=2)
        with pytest.raises(ValueError, match="multiple of 4"):
            hn.HomographyNet(**options)
        model = hn.HomographyNet(**options, vgg_layer="block2_conv2").build_for_inputs()
        assert model.backbone.layers[-1].name == "block2_conv2"
        inputs = tiny_pairs[0]
        templates = inputs[:, 8:40, 8:40]
        assert model._sizes == (12, 8, 2)  # template offset 2 px = 1 cell of the stride-2 grid
        assert model._features(inputs, 12).shape == (3, 6, 6, 128)
        assert model._features(templates, 8).shape == (3, 4, 4, 128)
        config = model.get_config()
        assert config["vgg_layer"] == "block2_conv2"
        assert hn.HomographyNet.from_config(config).vgg_layer == "block2_conv2"
        randomize_head(model)
        assert model((inputs, templates)).shape == (3, 4, 2)

    def test_bad_options_and_inputs(self, tiny_model, tiny_pairs):
        with pytest.raises(ValueError, match="input_scale"):
            hn.HomographyNet(vgg_weights=None, input_scale=0.3)
        with pytest.raises(ValueError, match="inception_filters"):
            hn.HomographyNet(vgg_weights=None, inception_filters=0)
        with pytest.raises(ValueError, match="vgg_layer"):
            hn.HomographyNet(vgg_weights=None, vgg_layer="block5_conv4")
        with pytest.raises(ValueError, match="input_size"):
            hn.HomographyNet(vgg_weights=None, input_size=129)
        with pytest.raises(ValueError, match="templates"):
            tiny_model((tiny_pairs[0], tiny_pairs[0]))


# ------------------------------------------------------------------------------------------
# Photometric loss


def translation(tx, ty, batch=1, dtype=np.float32):
    H = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype)
    return np.broadcast_to(H, (batch, 3, 3)).copy()


def check_loss_gradient(loss_fn):
    """Finite-difference check of ``loss_fn(img, template, H)`` with respect to the corner offsets
    that define H: a smooth float64 image, sampling positions away from integers."""
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float64)
    img = np.stack([0.5 + 0.4 * np.sin(0.37 * xx + 0.21 * yy), 0.5 + 0.3 * np.cos(0.29 * yy - 0.13 * xx)], -1)[None]
    base = centred_corners(24, 16)[None]
    truth = base + np.array([[[0.7, -0.4], [-0.3, 0.6], [0.5, 0.5], [-0.6, -0.2]]])
    template = hn.warp_image(img, corners_to_homography(truth, 16), 16, return_mask=False).numpy()
    offsets0 = np.array([[[0.31, 0.17], [-0.23, 0.41], [0.13, -0.37], [0.27, 0.19]]])

    def loss(offsets):
        return loss_fn(img, template, corners_to_homography(base + offsets, 16))

    theoretical, numerical = tf.test.compute_gradient(loss, [tf.constant(offsets0)], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-3, atol=1e-6)
    assert np.abs(theoretical[0]).max() > 1e-3


class TestPhotometricLoss:
    def test_identity_is_exactly_zero_and_does_not_shrink(self):
        img = texture(48)[None]
        crop = img[:, 8:40, 8:40]
        loss, per_sample, valid = hn.masked_photometric_l1(img, crop, translation(8, 8), return_per_sample=True)
        assert float(loss) == 0.0 and float(valid[0]) == 1.0
        # The same through the corners and TensorDLT (float64): no shrinking of the identity.
        H = corners_to_homography(centred_corners(48, 32)[None], 32)
        warped, _ = hn.warp_image(img.astype(np.float64), H, 32)
        np.testing.assert_allclose(warped.numpy(), crop, atol=1e-6)
        assert float(hn.masked_photometric_l1(img.astype(np.float64), crop, H)) < 1e-6

    def test_true_homography_beats_perturbed(self, tiny_pairs):
        inputs, templates, corners = tiny_pairs
        true = hn.masked_photometric_l1(inputs, templates, corners_to_homography(corners, 32), True)[1]
        for shift in (1.0, 3.0):
            off = corners + np.float32(shift) * np.array([[1, -1], [-1, 1], [1, 1], [-1, -1]], np.float32)
            worse = hn.masked_photometric_l1(inputs, templates, corners_to_homography(off, 32), True)[1]
            assert np.all(worse.numpy() > true.numpy() + 1e-3), (true, worse)
        assert np.all(true.numpy() < 1e-5)

    def test_masked_pixels_do_not_contribute(self):
        """Known answer: the template's left half samples outside the input (mask 0); it holds
        garbage there and (input + 0.1) elsewhere: the loss is exactly 0.1."""
        img = texture(16, channels=2, dtype=np.float64)[None]
        H = translation(-4, 0, dtype=np.float64)  # template x in [0, 7] reads input x - 4
        warped, mask = hn.warp_image(img, H, 8)
        mask = mask.numpy()
        assert 0 < mask.mean() < 1
        template = np.where(mask > 0, warped.numpy() + 0.1, 7.0)
        loss = hn.masked_photometric_l1(img, template, H)
        np.testing.assert_allclose(float(loss), 0.1, atol=1e-12)
        # An all-invalid sample counts as 0 in the batch mean, without NaN.
        far = np.concatenate([H, translation(100, 100, dtype=np.float64)])
        both = hn.masked_photometric_l1(np.concatenate([img, img]), np.concatenate([template, template]),
                                        far, return_per_sample=True)
        np.testing.assert_allclose(both[1].numpy(), [0.1, 0.0], atol=1e-12)
        np.testing.assert_allclose(float(both[0]), 0.05, atol=1e-12)
        assert both[2].numpy()[1] == 0.0

    def test_gradient_wrt_offsets_finite_differences(self):
        check_loss_gradient(lambda img, template, H: hn.masked_photometric_l1(img, template, H))

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="input_H_template"):
            hn.masked_photometric_l1(np.zeros((1, 8, 8, 1)), np.zeros((1, 4, 4, 1)), np.eye(3))
        with pytest.raises(ValueError, match="templates"):
            hn.masked_photometric_l1(np.zeros((1, 8, 8, 1)), np.zeros((1, 4, 4, 3)), np.eye(3)[None])


def _reference_pyramid_l1(inputs, templates, H, pools):
    """Float64 NumPy/OpenCV reference: INTER_AREA resize, H' = S H S^-1 with the half-pixel map
    x' = (x + 0.5) / k - 0.5, cv2.warpPerspective (inverse map), mask computed from the
    sampling positions, per-sample L1 over valid pixels, mean over the levels."""
    per_level = []
    for k in pools:
        S = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]])
        losses = []
        for img, tpl, h in zip(inputs, templates, H):
            size, tsize = img.shape[0] // k, tpl.shape[0] // k
            xi = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) if k > 1 else img
            ti = cv2.resize(tpl, (tsize, tsize), interpolation=cv2.INTER_AREA) if k > 1 else tpl
            hk = S @ h @ np.linalg.inv(S)
            warped = cv2.warpPerspective(xi, hk, (tsize, tsize), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            yy, xx = np.mgrid[0:tsize, 0:tsize].astype(np.float64)
            p = np.einsum("ij,jhw->ihw", hk, np.stack([xx, yy, np.ones_like(xx)]))
            u, v = p[0] / p[2], p[1] / p[2]
            mask = (u >= 0) & (u <= size - 1) & (v >= 0) & (v <= size - 1)
            losses.append(np.abs(warped - ti)[mask].mean())
        per_level.append(losses)
    return np.mean(per_level, axis=0)


class TestPyramidPhotometricLoss:
    def test_matches_opencv_reference(self, tiny_pairs):
        inputs, templates, corners = tiny_pairs
        off = corners + np.float32(3.0) * np.array([[1, -1], [-1, 1], [1, 1], [-1, -1]], np.float32)
        H = corners_to_homography(off.astype(np.float64), 32).numpy()
        for pools in ((1,), (4,), (1, 2, 8)):
            loss, per_sample, valid = hn.pyramid_photometric_l1(inputs, templates, H, pools, return_per_sample=True)
            ref = _reference_pyramid_l1(inputs, templates, H, pools)
            np.testing.assert_allclose(per_sample.numpy(), ref, atol=2e-4)
            np.testing.assert_allclose(float(loss), ref.mean(), atol=2e-4)
        # pools=(1,) is exactly the plain masked L1.
        np.testing.assert_array_equal(float(hn.pyramid_photometric_l1(inputs, templates, H)),
                                      float(hn.masked_photometric_l1(inputs, templates, H)))

    def test_coarse_level_widens_the_basin(self, tiny_pairs):
        """Shifting the true corners by up to 12 px (a third of the 32 px template): at k = 8 (4x4
        pixels left) the loss still grows monotonically with the error."""
        inputs, templates, corners = tiny_pairs
        direction = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], np.float32)
        coarse = [float(hn.pyramid_photometric_l1(inputs, templates, corners_to_homography(corners + d * direction, 32), (8,)))
                  for d in (0.0, 4.0, 8.0, 12.0)]
        assert all(b > a for a, b in zip(coarse, coarse[1:])), coarse

    def test_gradient_finite_differences(self):
        check_loss_gradient(lambda img, template, H: hn.pyramid_photometric_l1(img, template, H, (1, 2)))

    def test_errors(self):
        img, tpl, H = np.zeros((1, 48, 48, 3)), np.zeros((1, 32, 32, 3)), np.eye(3)[None]
        for bad in ((), (0,), (1.5,), (True,)):
            with pytest.raises(ValueError, match="pools"):
                hn.pyramid_photometric_l1(img, tpl, H, bad)
        with pytest.raises(ValueError, match="must divide"):
            hn.pyramid_photometric_l1(img, tpl, H, (1, 3))
        with pytest.raises(ValueError, match="loss_pools"):
            hn.make_task("supervised", TINY, loss_pools=(1, 8))
        with pytest.raises(ValueError, match="pools"):
            hn.UnsupervisedTask(TINY, loss_pools=(5,))


# ------------------------------------------------------------------------------------------
# Tasks and training


class TestTasks:
    def test_supervised_loss_known_answer(self, tiny_pairs):
        inputs, templates, corners = tiny_pairs
        task = hn.SupervisedTask(TINY)
        model = task.build_model()  # zero head: predicts offset 0
        loss, metrics = task.compute_loss(model, tiny_pairs, training=False)
        target = corners - centred_corners(48, 32)
        np.testing.assert_allclose(float(loss), np.mean((target / 32.0) ** 2), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["mace"]), np.linalg.norm(target, axis=-1).mean(), rtol=1e-5)

    def test_unsupervised_loss_is_photometric_at_prediction(self, tiny_pairs):
        inputs, templates, corners = tiny_pairs
        task = hn.UnsupervisedTask(TINY)
        model = task.build_model()
        loss, metrics = task.compute_loss(model, tiny_pairs, training=False)
        H = corners_to_homography(np.broadcast_to(centred_corners(48, 32), (3, 4, 2)), 32)
        np.testing.assert_allclose(float(loss), float(hn.masked_photometric_l1(inputs, templates, H)), rtol=1e-5)
        assert float(metrics["valid"]) == 1.0
        pyramid = hn.UnsupervisedTask(TINY, loss_pools=(1, 4))
        loss4, _ = pyramid.compute_loss(model, tiny_pairs, training=False)
        np.testing.assert_allclose(float(loss4), float(hn.pyramid_photometric_l1(inputs, templates, H, (1, 4))), rtol=1e-5)
        assert abs(float(loss4) - float(loss)) > 1e-4  # the option changes the loss
        with pytest.raises(ValueError, match="mode"):
            hn.make_task("semi", TINY)
        with pytest.raises(ValueError, match="unknown `model_config` keys .'filters'. for HomographyNetConfig"):
            hn.SupervisedTask({"filters": 3})

    def test_outside_penalty_known_answer_and_direction(self):
        # Input 48 px: pixel centres 0..47. Corner (-3, 10) is 3 px left, (50, 47) 3 px right.
        corners = np.array([[[-3.0, 10.0], [20.0, 20.0], [50.0, 47.0], [0.0, 47.0]],
                            [[5.0, 5.0], [40.0, 5.0], [40.0, 40.0], [5.0, 40.0]]], np.float32)
        expected = (3.0 + 3.0) / corners.size / 2.0
        np.testing.assert_allclose(float(hn.outside_penalty(corners, 48, scale=2.0)), expected, rtol=1e-6)
        assert float(hn.outside_penalty(corners[1:], 48)) == 0.0  # inside (and on the border): free
        c = tf.Variable(corners)
        with tf.GradientTape() as tape:
            penalty = hn.outside_penalty(c, 48)
        grad = tape.gradient(penalty, c).numpy()
        # Gradient descent moves the outside coordinates back in, and nothing else.
        assert grad[0, 0, 0] < 0 and grad[0, 2, 0] > 0
        assert np.count_nonzero(grad) == 2
        with pytest.raises(ValueError, match="corners"):
            hn.outside_penalty(np.zeros((2, 3, 2)), 48)

    def test_unsupervised_outside_weight_adds_the_penalty(self, tiny_pairs):
        inputs, templates, _ = tiny_pairs
        task = hn.UnsupervisedTask(TINY, outside_weight=0.5)
        model = task.build_model()
        offsets = np.tile([[-20.0, 0.0]], (4, 1))  # every corner 20 px left: two leave the input
        model.out.bias.assign(offsets.reshape(8).astype(np.float32) / model.offset_scale)
        loss, metrics = task.compute_loss(model, tiny_pairs, training=False)
        pred = np.broadcast_to(centred_corners(48, 32) + offsets, (3, 4, 2)).astype(np.float32)
        photometric = float(hn.masked_photometric_l1(inputs, templates, corners_to_homography(pred, 32)))
        outside = (20.0 - 8.0) * 2 / 8 / model.offset_scale  # x of the left corners: 8 - 20 = -12
        np.testing.assert_allclose(float(metrics["outside"]), outside, rtol=1e-5)
        np.testing.assert_allclose(float(loss), photometric + 0.5 * outside, rtol=1e-5)
        assert task.run_config()["task"]["outside_weight"] == 0.5
        plain, _ = hn.UnsupervisedTask(TINY).compute_loss(model, tiny_pairs, training=False)
        np.testing.assert_allclose(float(plain), photometric, rtol=1e-5)  # default: no penalty
        for bad in (-1.0, float("nan"), True, "1"):
            with pytest.raises(ValueError, match="outside_weight"):
                hn.UnsupervisedTask(TINY, outside_weight=bad)
        with pytest.raises(ValueError, match="outside_weight.*unsupervised"):
            hn.make_task("supervised", TINY, outside_weight=0.1)

    def test_training_moves_the_head_not_the_backbone(self, tiny_pairs):
        task = hn.SupervisedTask(TINY)
        ds = tf.data.Dataset.from_tensors(tuple(tf.constant(x) for x in tiny_pairs))
        keras.utils.set_random_seed(0)  # as train() does: the same initial weights
        reference = task.build_model()
        trainable_ids = {id(v) for v in task.trainable_variables(reference)}
        assert not any(id(v) in trainable_ids for v in reference.backbone.weights)
        result = train(task, ds, TrainConfig(steps=3, learning_rate=1e-2, progress=False, seed=0))
        model = result.model
        for before, after in zip(reference.backbone.weights, model.backbone.weights):
            np.testing.assert_array_equal(before.numpy(), after.numpy())
        assert np.abs(model.out.kernel.numpy()).max() > 0  # was zero
        changed = [np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in
                   zip(reference.blocks[0].trainable_weights, model.blocks[0].trainable_weights)]
        assert any(changed)
        assert np.isfinite(result.final_loss)


    def test_train_backbone_option_trains_the_backbone(self, tiny_pairs):
        """``train_backbone=True`` (for a backbone without pretrained weights): its variables are
        trained with the head; the config round-trips."""
        config = dict(TINY, train_backbone=True)
        task = hn.SupervisedTask(config)
        ds = tf.data.Dataset.from_tensors(tuple(tf.constant(x) for x in tiny_pairs))
        keras.utils.set_random_seed(0)
        reference = task.build_model()
        trainable_ids = {id(v) for v in task.trainable_variables(reference)}
        assert all(id(v) in trainable_ids for v in reference.backbone.weights)
        model = train(task, ds, TrainConfig(steps=3, learning_rate=1e-2, progress=False, seed=0)).model
        moved = [np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in
                 zip(reference.backbone.weights, model.backbone.weights)]
        assert all(moved)
        assert hn.HomographyNet.from_config(model.get_config()).train_backbone is True
        with pytest.raises(ValueError, match="train_backbone"):
            hn.HomographyNet(**TINY, train_backbone=1)

# ------------------------------------------------------------------------------------------
# Curriculum and methods (DLK sizes at input_scale 0.25)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hnet") / "Demo"
    generate_dataset("demo", root, num_train=6, num_val=3, seed=0, progress=False)
    return root


def train_hnet(stage, root, ckpt, config, steps, batch_size, learning_rate, pairs=None, rho_start=None,
               ramp_steps=0, loss_pools=None, outside_weight=None, **train_options):
    """`make_train_dataset` + `train_stage`, as notebook 02 calls them."""
    ds = hn.make_train_dataset(root, stage, batch_size=batch_size, pairs=pairs, rho_start=rho_start,
                               ramp_steps=ramp_steps)
    return hn.train_stage(stage, ds, ckpt, steps=steps, learning_rate=learning_rate, model_config=config,
                          task_options=dict(loss_pools=loss_pools, outside_weight=outside_weight),
                          notes=dict(rho_start=rho_start),
                          **train_options)


class TestCurriculum:
    def test_rho32_starts_from_rho16(self, demo_root, tmp_path):
        ckpt = tmp_path / "ckpt"
        kw = dict(steps=2, batch_size=3, learning_rate=1e-2, progress=False, log_every=1)
        r16 = train_hnet("hnet_sup/rho16", demo_root, ckpt, DLK_TINY, **kw)
        assert r16.steps == 2
        folder = ckpt / "hnet_sup" / "rho16"
        assert hn.stage_dir(ckpt, "hnet_sup/rho16") == folder
        meta = json.loads((folder / RUN_CONFIG_NAME).read_text())
        assert meta["family"] == hn.FAMILY and meta["model"] == hn.HomographyNetConfig(**DLK_TINY).to_dict()
        assert meta["task"]["rho"] == 16 and meta["task"]["learning_rate"] == 1e-2
        model16, _ = hn.load_stage_model(ckpt, "supervised", 16)
        w16 = [w.numpy() for w in model16.weights]
        # The task of stage 32 builds its model from stage 16's weights ...
        task = hn.make_task("supervised", DLK_TINY, init_from=folder)
        for a, b in zip(task.build_model().weights, w16):
            np.testing.assert_array_equal(a.numpy(), b)
        fresh = hn.make_task("supervised", DLK_TINY).build_model()
        assert np.abs(fresh.out.kernel.numpy() - model16.out.kernel.numpy()).max() > 0  # not scratch
        # ... and train_stage wires it: one tiny SGD step away from stage 16's head.
        r32 = train_hnet("hnet_sup/rho32", demo_root, ckpt, DLK_TINY, optimizer="sgd",
                         **{**kw, "steps": 1, "learning_rate": 1e-6})
        meta32 = json.loads((ckpt / "hnet_sup" / "rho32" / RUN_CONFIG_NAME).read_text())["task"]
        assert meta32["init_from"] == str(folder) and meta32["rho"] == 32
        w32 = [w.numpy() for w in r32.model.trainable_weights]
        t16 = [w.numpy() for w in model16.trainable_weights]
        assert max(np.abs(a - b).max() for a, b in zip(w32, t16)) < 1e-4
        assert max(np.abs(a - b).max() for a, b in zip(w32, t16)) > 0
        # Resuming stage 32 continues from its own checkpoint, not from stage 16 again.
        again = train_hnet("hnet_sup/rho32", demo_root, ckpt, DLK_TINY, optimizer="sgd",
                           **{**kw, "steps": 2, "learning_rate": 1e-6})
        assert again.start_step == 1 and again.steps == 2
        assert hn.latest_stage(ckpt, "supervised") == 32
        with pytest.raises(ValueError, match="other model options"):
            train_hnet("hnet_sup/rho32", demo_root, ckpt, {**DLK_TINY, "dense_units": 8}, **kw)

    def test_default_pairs(self, demo_root):
        """Stage rho 16 cuts fresh pairs with offsets up to 16 px; rho 32 reads the stored DLK pairs."""
        base = np.asarray(centred_corners(192, 128))
        stored = next(iter(hn.make_train_dataset(demo_root, "hnet_sup/rho32", batch_size=6, pairs="dlk")))[2]
        rho32 = next(iter(hn.make_train_dataset(demo_root, "hnet_sup/rho32", batch_size=6)))[2]
        np.testing.assert_array_equal(rho32.numpy(), stored.numpy())
        rho16 = next(iter(hn.make_train_dataset(demo_root, "hnet_unsup/rho16", batch_size=6)))[2].numpy()
        assert np.abs(rho16 - base).max() <= 16 + 1e-4
        assert np.abs(stored.numpy() - base).max() > 16  # the stored pairs reach beyond 16 px

    def test_unsupervised_stage_runs(self, demo_root, tmp_path):
        r = train_hnet("hnet_unsup/rho16", demo_root, tmp_path, DLK_TINY, steps=2, batch_size=2,
                       learning_rate=1e-2, progress=False)
        assert np.isfinite(r.final_loss) and 0 < r.metrics["valid"] <= 1
        keras.utils.set_random_seed(0)  # as train() does: the initial weights
        initial = hn.UnsupervisedTask(DLK_TINY).build_model()
        for before, after in zip(initial.backbone.weights, r.model.backbone.weights):
            np.testing.assert_array_equal(before.numpy(), after.numpy())
        assert np.abs(r.model.out.kernel.numpy()).max() > 0  # the head moved (zero at the start)
        assert hn.latest_stage(tmp_path, "unsupervised") == 16
        assert hn.latest_stage(tmp_path, "supervised") is None

    def test_pyramid_loss_and_block2_cut_through_the_stage(self, demo_root, tmp_path):
        config = dict(DLK_TINY, vgg_layer="block2_conv2")
        kw = dict(steps=1, batch_size=2, learning_rate=1e-2, progress=False)
        r = train_hnet("hnet_unsup/rho16", demo_root, tmp_path, config, loss_pools=(1, 8), rho_start=4,
                       ramp_steps=2, outside_weight=0.25, **kw)
        meta = json.loads((hn.stage_dir(tmp_path, "hnet_unsup/rho16") / RUN_CONFIG_NAME).read_text())
        assert meta["task"]["loss_pools"] == [1, 8] and meta["model"]["vgg_layer"] == "block2_conv2"
        assert meta["task"]["outside_weight"] == 0.25
        assert meta["task"]["rho_start"] == 4  # the notes
        # The first batch had offsets of at most rho_start = 4 px: its logged mace is below 4 * sqrt(2).
        assert r.history[0][0] == 1 and r.metrics["mace"] <= 4 * np.sqrt(2)
        with pytest.raises(ValueError, match="rho_start"):
            train_hnet("hnet_sup/rho16", demo_root, tmp_path / "d", config, pairs="dlk", rho_start=4,
                       ramp_steps=2, **kw)
        # The logged loss is the pyramid loss of the initial (centred) prediction on the batch.
        assert np.isfinite(r.final_loss)
        model, rho = hn.load_stage_model(tmp_path, "unsupervised")
        assert rho == 16 and model.vgg_layer == "block2_conv2"
        with pytest.raises(ValueError, match="loss_pools"):
            train_hnet("hnet_sup/rho16", demo_root, tmp_path / "s", config, loss_pools=(1, 8), **kw)
        with pytest.raises(ValueError, match="outside_weight"):
            train_hnet("hnet_sup/rho16", demo_root, tmp_path / "s", config, outside_weight=0.1, **kw)
        with pytest.raises(ValueError, match="pools"):
            train_hnet("hnet_unsup/rho16", demo_root, tmp_path / "u", config, loss_pools=(7,), **kw)

    def test_bad_arguments(self, demo_root, tmp_path):
        kw = dict(steps=1, batch_size=2, learning_rate=1e-2)
        with pytest.raises(ValueError, match="stage.*hnet_sup/rho16"):
            train_hnet("hnet_sup/rho24", demo_root, tmp_path, DLK_TINY, **kw)
        with pytest.raises(ValueError, match="pairs"):
            train_hnet("hnet_sup/rho16", demo_root, tmp_path, DLK_TINY, pairs="coco", **kw)
        with pytest.raises(ValueError, match="input_scale"):
            train_hnet("hnet_sup/rho16", demo_root, tmp_path, {**DLK_TINY, "input_scale": 0.3}, **kw)
        with pytest.raises(ValueError, match="task_options"):
            hn.train_stage("hnet_sup/rho16", None, tmp_path, task_options={"pools": (1,)})


def write_stage(ckpt, mode, rho, offsets):
    """A stage folder by hand: a model whose output is the constant `offsets` (bias only). The
    config is in the layout written before `deeplk.train.write_run_config` (still read)."""
    folder = hn.stage_dir(ckpt, f"{hn.MODES[mode]}/rho{rho}")
    folder.mkdir(parents=True)
    (folder / RUN_CONFIG_NAME).write_text(json.dumps({"mode": mode, "rho": rho, "model": DLK_TINY}))
    model = hn.HomographyNet(**DLK_TINY).build_for_inputs()
    model.out.bias.assign(np.asarray(offsets, np.float32).reshape(8) / model.offset_scale)
    model.save_weights(str(folder / "final.weights.h5"))


class TestMethods:
    def test_latest_stage_and_corner_frame(self, tmp_path):
        inputs = np.random.default_rng(0).random((5, 192, 192, 3), dtype=np.float32)
        templates = inputs[:, 32:160, 32:160]
        off16 = np.arange(8, dtype=np.float32).reshape(4, 2) - 4
        off32 = -2 * off16
        write_stage(tmp_path, "unsupervised", 16, off16)
        pred, failed = methods.get_method("hnet_unsup", checkpoint_dir=tmp_path)(inputs, templates)
        assert pred.shape == (5, 4, 2) and pred.dtype == np.float64 and not failed.any()
        centred = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], np.float64)
        np.testing.assert_allclose(pred, np.broadcast_to(centred + off16, (5, 4, 2)), atol=1e-4)
        write_stage(tmp_path, "unsupervised", 32, off32)
        predict = hn.build_hnet_unsup_method(checkpoint_dir=tmp_path, batch_size=2)  # 2 + 2 + 1
        pred, _ = predict(inputs, templates)
        np.testing.assert_allclose(pred, np.broadcast_to(centred + off32, (5, 4, 2)), atol=1e-4)
        pred16, _ = hn.build_hnet_unsup_method(checkpoint_dir=tmp_path, rho=16)(inputs[:1], templates[:1])
        np.testing.assert_allclose(pred16[0], centred + off16, atol=1e-4)

    def test_missing_checkpoint(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="no trained hnet_sup"):
            methods.get_method("hnet_sup", checkpoint_dir=tmp_path)
        assert "hnet_sup" in methods.available_methods()
        assert set(hn.METHOD_DESCRIPTIONS) == {"hnet_sup", "hnet_unsup"}


def test_config_is_validated():
    config = hn.HomographyNetConfig(**DLK_TINY)
    assert config.input_scale == 0.25 and config.dropout == 0.5 and config.vgg_layer == hn.VGG_LAYER
    assert hn.SupervisedTask(DLK_TINY).model_config == hn.SupervisedTask(config).model_config == config.to_dict()
    for bad, name in ((dict(input_scale=0.3), "input_scale"), (dict(vgg_layer="block9"), "vgg_layer"),
                      (dict(dense_units=0), "dense_units")):
        with pytest.raises(ValueError, match=name):
            hn.HomographyNetConfig(**bad)
