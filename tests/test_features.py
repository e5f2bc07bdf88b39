"""Tests of deeplk.features: the DLKFM "special" feature map."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplk.features import SpecialFeatureMap, special_feature_map


def _reference(features: np.ndarray, epsilon: float) -> np.ndarray:
    """Direct per-pixel NumPy float64 implementation of the definition."""
    b, h, w, c = features.shape
    padded = np.zeros((b, h + 2, w + 2, c))
    padded[:, 1:-1, 1:-1] = features
    out = np.zeros((b, h, w, 1))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                patch = padded[n, i:i + 3, j:j + 3, :]  # (3, 3, C)
                M = patch.reshape(9, c).T  # C x 9, one column per neighbour
                M = M - M.mean(axis=0, keepdims=True)  # each column minus its channel mean
                G = M.T @ M  # 9 x 9
                rows = G.sum(axis=1)
                out[n, i, j, 0] = (rows.max() + rows.min()) / 2.0 / (np.trace(G) + epsilon)
    return out


class TestSpecialFeatureMap:
    def test_matches_numpy_loop(self, rng):
        x = rng.normal(size=(2, 5, 6, 4))
        got = special_feature_map(tf.constant(x), epsilon=1e-6).numpy()
        np.testing.assert_allclose(got, _reference(x, 1e-6), rtol=1e-10, atol=1e-12)

    def test_float32_and_single_channel(self, rng):
        x = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
        got = special_feature_map(x)
        assert got.dtype == tf.float32 and got.shape == (1, 4, 4, 1)
        np.testing.assert_allclose(got.numpy(), _reference(x.astype(np.float64), 1e-6),
                                   rtol=2e-4, atol=1e-5)
        # One channel: every column is centred to zero, so G = 0 and the output is 0.
        one = special_feature_map(rng.normal(size=(2, 3, 3, 1)))
        np.testing.assert_array_equal(one.numpy(), 0.0)

    def test_cardinality(self):
        for shape in [(1, 1, 1, 2), (3, 7, 5, 8)]:
            assert special_feature_map(tf.ones(shape)).shape == shape[:3] + (1,)

    def test_constant_across_channels_is_finite_zero(self):
        out = special_feature_map(tf.fill((1, 4, 4, 5), 3.0))
        assert np.all(np.isfinite(out.numpy())) and np.all(out.numpy() == 0.0)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="features"):
            special_feature_map(tf.ones((4, 4, 3)))
        with pytest.raises(ValueError, match="channel"):
            special_feature_map(tf.ones((1, 4, 4, 0)))
        with pytest.raises(ValueError, match="floating"):
            special_feature_map(tf.ones((1, 4, 4, 2), tf.int32))
        with pytest.raises(ValueError, match="epsilon"):
            special_feature_map(tf.ones((1, 4, 4, 2)), epsilon=-1.0)

    def test_gradient_float64(self, rng):
        # Interior outputs only: at the border, zero-padded columns tie the max / min row sums
        # (all 0), where the map is not differentiable.
        x = tf.constant(rng.normal(size=(1, 4, 5, 3)))
        theoretical, numerical = tf.test.compute_gradient(
            lambda t: special_feature_map(t)[:, 1:-1, 1:-1], [x]
        )
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)

    def test_works_in_tf_function_with_unknown_batch(self, rng):
        fn = tf.function(special_feature_map,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
        np.testing.assert_allclose(fn(x).numpy(), special_feature_map(x).numpy(), rtol=1e-6)


class TestSpecialFeatureMapLayer:
    def test_call_and_config_round_trip(self, rng):
        layer = SpecialFeatureMap(epsilon=1e-3, name="special")
        x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
        np.testing.assert_allclose(layer(x).numpy(), special_feature_map(x, 1e-3).numpy())
        clone = SpecialFeatureMap.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert isinstance(revived, SpecialFeatureMap) and revived.epsilon == 1e-3

    def test_in_functional_model(self, rng):
        inputs = keras.Input((6, 6, 4))
        model = keras.Model(inputs, SpecialFeatureMap()(inputs))
        x = rng.normal(size=(3, 6, 6, 4)).astype(np.float32)
        np.testing.assert_allclose(model(x).numpy(), special_feature_map(x).numpy(), rtol=1e-6)
