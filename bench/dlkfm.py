"""Speed of DLKFM: training step per level, inference per pair, feature-extractor GFLOP/s.

Builds a 3-level `deeplk.models.dlkfm.DLKFMNet` (random weights: speed does not depend on them)
and reports, on synthetic 192/128 pairs (smoothed noise, template = the input warped by a random
corner perturbation of up to 32 px, OpenCV):

- the training step time of each level (forward of the frozen levels + the level's loss with
  its convexity perturbations + backward + Adam update), batch `--batch`, median of `--repeats`;
- inference milliseconds per pair of the ``dlkfm`` method (features of all levels + LK
  3 -> 2 -> 1, centred start) at batch 1 and at batch `--infer-batch` (default 32);
- the achieved GFLOP/s of the feature extractors (both branches, all levels; FLOPs counted by
  `deeplk.perf.graph_flops`, time by `deeplk.perf.time_call`) as a fraction of the float32
  matmul GFLOP/s measured in the same run (`deeplk.perf.matmul_gflops`).

Example::

    python bench/dlkfm.py                          # paper size: 64 channels, 3 residual blocks
    python bench/dlkfm.py --channels 8 --blocks 1  # the CPU demo's size

Numbers depend on the machine and its load; compare settings within one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplk import geometry, perf  # noqa: E402
from deeplk.models import dlkfm  # noqa: E402

CENTRE = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)


def make_pairs(n: int, seed: int = 0):
    """``n`` pairs (inputs (n,192,192,3), templates (n,128,128,3), corners (n,4,2)) of smoothed
    noise, each template corner perturbed by up to 32 px."""
    rng = np.random.default_rng(seed)
    inputs, templates, corners = [], [], []
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for _ in range(n):
        image = cv2.GaussianBlur(rng.random((192, 192, 3)).astype(np.float32), (0, 0), 3.0)
        image = (image - image.min()) / (image.max() - image.min())
        c = CENTRE + rng.uniform(-32, 32, (4, 2))
        H = geometry.corners_to_homography(c[None], 128).numpy()[0]
        templates.append(cv2.warpPerspective(image, H, (128, 128), flags=flags))
        inputs.append(image)
        corners.append(c)
    return (np.stack(inputs).astype(np.float32), np.stack(templates).astype(np.float32),
            np.stack(corners).astype(np.float32))


def train_step_seconds(level: int, root: str, arch: dict, batch, repeats: int) -> float:
    """Median seconds of one training step of `level` (levels below frozen)."""
    task = dlkfm.DLKFMTask(level, root, load_previous=False, **(arch if level == 1 else {}))
    model = task.build_model()
    variables = task.trainable_variables(model)
    optimizer = keras.optimizers.Adam(1e-4, clipnorm=1.0)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(inputs, templates, corners):
        with tf.GradientTape() as tape:
            loss, _ = task.compute_loss(model, (inputs, templates, corners), True)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    args = [tf.constant(a) for a in batch]
    return perf.time_call(step, *args, warmup=2, repeats=repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-perturbations", type=int, default=2)
    parser.add_argument("--no-xla", action="store_true", help="LK without XLA at inference")
    args = parser.parse_args(argv)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; DLKFM {args.channels} channels, "
          f"{args.blocks} residual blocks", flush=True)

    arch = dict(channels=args.channels, num_blocks=args.blocks, normalize=True)
    n = max(args.batch, args.infer_batch)
    inputs, templates, corners = make_pairs(n)

    with tempfile.TemporaryDirectory() as root:
        dlkfm.write_config(root, dict(arch, leaky_alpha=0.2, bn_momentum=0.9,
                                      feature_type="regular"))
        batch = (inputs[:args.batch], templates[:args.batch], corners[:args.batch])
        for level in dlkfm.LEVELS:
            s = train_step_seconds(level, root, arch, batch, args.repeats)
            print(f"train step level {level}: {s * 1e3:8.1f} ms (batch {args.batch}, "
                  f"{args.num_perturbations} perturbations)", flush=True)

    model = dlkfm.make_dlkfm_net(3, **arch)
    aligner = dlkfm.DLKFMAligner(model, init="centred", batch_size=args.infer_batch,
                                 jit_compile=not args.no_xla)
    for b in (1, args.infer_batch):
        s = perf.time_call(lambda: aligner(inputs[:b], templates[:b]), warmup=1,
                           repeats=args.repeats, sync=lambda out: None)
        print(f"inference batch {b:3d}: {s / b * 1e3:8.1f} ms/pair", flush=True)

    @tf.function
    def features(x, t):
        return model(([x, t]), training=False)

    b = args.infer_batch
    specs = (tf.TensorSpec((b, 192, 192, 3), tf.float32), tf.TensorSpec((b, 128, 128, 3), tf.float32))
    flops = perf.graph_flops(features, *specs)
    s = perf.time_call(features, tf.constant(inputs[:b]), tf.constant(templates[:b]),
                       repeats=args.repeats)
    achieved = flops / s / 1e9
    peak = perf.matmul_gflops()
    print(f"feature extractor (batch {b}, all levels, both branches): {flops / 1e9:.2f} GFLOP in "
          f"{s * 1e3:.1f} ms = {achieved:.1f} GFLOP/s; matmul {peak:.1f} GFLOP/s; "
          f"fraction {achieved / peak:.2f}", flush=True)


if __name__ == "__main__":
    main()
