"""Measuring speed honestly: FLOP counts of TensorFlow graphs and the machine's matmul rate.

The benchmarks in ``bench/`` report how far a model's convolutions are from what the machine can
do: achieved GFLOP/s (counted FLOPs of the graph / measured time) as a fraction of the GFLOP/s of
a large float32 matrix product measured in the same run (`matmul_gflops`).

- `graph_flops(fn, *specs)`: floating-point operations of one call of ``fn`` on tensors of the
  given specs, summed over the ops its outputs depend on with TensorFlow's per-op FLOP
  statistics (the ones ``tf.compat.v1.profiler`` uses): a convolution counts
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
    from tensorflow.python.framework import ops as tf_ops  # the profiler's per-op FLOP registry

    func = fn if isinstance(fn, tf.types.experimental.PolymorphicFunction) else tf.function(fn)
    concrete = func.get_concrete_function(*specs)
    graph = concrete.graph
    # Count only the ops the outputs depend on: a GradientTape also records backward ops towards
    # variables that are watched but whose gradients nobody asked for (e.g. a frozen backbone);
    # TensorFlow prunes them when it runs the function, so they must not be counted either.
    outputs = [t.op.name for t in tf.nest.flatten(concrete.outputs)]
    sub = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), outputs) if outputs else None
    needed = {n.name for n in sub.node} if sub is not None else set()
    total = 0
    for op in graph.get_operations():
        if op.name not in needed:
            continue
        try:
            stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:  # no FLOP statistics registered for this op type
            continue
        total += int(stats.value or 0)
    return total


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
