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
