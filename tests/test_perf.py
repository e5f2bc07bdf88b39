"""FLOP counting and timing helpers of `deeplk.perf`, against hand counts."""

import keras
import pytest
import tensorflow as tf

from deeplk import perf


def test_graph_flops_conv_and_dense_match_hand_count():
    model = keras.Sequential([keras.Input((16, 20, 3)), keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                              keras.layers.Dense(5, use_bias=False)])
    b = 3
    flops = perf.graph_flops(lambda x: model(x), tf.TensorSpec((b, 16, 20, 3)))
    conv = 2 * b * 16 * 20 * 8 * (3 * 3 * 3)
    dense = 2 * b * 16 * 20 * 5 * 8
    assert flops == conv + dense


def test_graph_flops_matmul_and_scaling_with_batch():
    f = perf.graph_flops(tf.linalg.matmul, tf.TensorSpec((4, 6)), tf.TensorSpec((6, 7)))
    assert f == 2 * 4 * 6 * 7
    dense = keras.layers.Dense(3, use_bias=False)
    one = perf.graph_flops(lambda x: dense(x), tf.TensorSpec((1, 10)))
    four = perf.graph_flops(lambda x: dense(x), tf.TensorSpec((4, 10)))
    assert four == 4 * one


def test_graph_flops_rejects_unknown_shapes():
    with pytest.raises(ValueError, match=r"specs\[0\]"):
        perf.graph_flops(tf.identity, tf.TensorSpec((None, 3)))


def test_time_call_counts_calls_and_validates():
    calls = []
    perf.time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    with pytest.raises(ValueError):
        perf.time_call(lambda: None, repeats=0)


def test_matmul_gflops_is_positive_and_finite():
    g = perf.matmul_gflops(n=256, repeats=2)
    assert 0 < g < 1e6


def test_graph_flops_skips_backward_ops_nobody_asked_for():
    # A frozen first layer is watched by the tape (its variables are trainable for TensorFlow),
    # but only the head's gradient is returned: the frozen conv's backward ops must not count.
    frozen = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    head = keras.layers.Dense(1, use_bias=False)
    x_spec = tf.TensorSpec((2, 8, 8, 1))
    frozen.build(x_spec.shape)
    head.build((2, 8, 8, 4))
    frozen.trainable = False

    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(head(frozen(x)))
        return tape.gradient(loss, head.trainable_variables)

    forward_conv = 2 * 2 * 8 * 8 * 4 * 9
    counted = perf.graph_flops(grads, x_spec)
    # forward conv + head forward + head weight gradient + small element-wise ops; a backward
    # conv (input or filter gradient) would add another forward_conv at least.
    assert forward_conv <= counted < 2 * forward_conv
