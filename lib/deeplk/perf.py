"""Measuring speed honestly: FLOP counts of TensorFlow graphs and the machine's matmul rate.

The benchmarks in ``bench/`` report how far a model's convolutions are from what the machine can
do: achieved GFLOP/s (counted FLOPs of the graph / measured time) as a fraction of the GFLOP/s of
a large float32 matrix product measured in the same run (`matmul_gflops`).

- `graph_flops(fn, *specs)`: floating-point operations of one call of ``fn`` on tensors of the
  given specs, counted by TensorFlow's graph profiler
  (``tf.compat.v1.profiler.ProfileOptionBuilder.float_operation``): a convolution counts
  ``2 * k_h * k_w * C_in`` per output value, a matmul ``2 * K`` per output value, element-wise
  ops one per value. Training steps are counted as the graph of forward + backward.
- `time_call(fn, *args)`: median seconds per call after warm-up calls (tracing/compilation
  excluded).
- `matmul_gflops()`: the float32 matrix-product rate of this machine, in GFLOP/s.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["graph_flops", "time_call", "matmul_gflops"]


def graph_flops(fn: Callable, *specs) -> int:
    """FLOPs of one call of ``fn`` (a Python function of tensors or a ``tf.function``) traced
    with ``specs`` (``tf.TensorSpec`` with fully defined shapes)."""
    import tensorflow as tf

    for i, s in enumerate(specs):
        if not isinstance(s, tf.TensorSpec) or not s.shape.is_fully_defined():
            raise ValueError(f"specs[{i}] must be a tf.TensorSpec with a fully defined shape, got {s!r}")
    func = fn if isinstance(fn, tf.types.experimental.PolymorphicFunction) else tf.function(fn)
    graph = func.get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def time_call(fn: Callable, *args, warmup: int = 2, repeats: int = 5, sync: Callable | None = None) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over `repeats` calls after `warmup` calls.

    `sync(result)` (default: ``.numpy()`` on the first tensor of the result, if any) makes sure
    the work is finished before the clock stops."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")

    def finish(out):
        if sync is not None:
            return sync(out)
        first = out
        while isinstance(first, (tuple, list)) and first:
            first = first[0]
        if isinstance(first, dict) and first:
            first = next(iter(first.values()))
        if hasattr(first, "numpy"):
            first.numpy()

    for _ in range(warmup):
        finish(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        finish(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` float32 matrix product (``2 n^3`` FLOPs) on this machine."""
    import tensorflow as tf

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    mm = tf.function(tf.linalg.matmul)
    seconds = time_call(mm, a, b, repeats=repeats)
    return 2.0 * n**3 / seconds / 1e9
