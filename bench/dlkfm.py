"""Speed of DLKFM: training step per level, inference per pair, feature-extractor GFLOP/s.

Builds a 3-level `deeplk.models.dlkfm.DLKFMNet` (random weights: speed does not depend on them)
and reports, on synthetic 192/128 pairs (smoothed noise, template = the input warped by a random
corner perturbation of up to 32 px, OpenCV):

- the training step time of each level (forward of the frozen levels + the level's loss with
  its convexity perturbations + backward + Adam update), batch `--batch`, or with `--profile`
  of each DLKFM level the profile trains, with its architecture, loss and batch; median of `--repeats`,
  as samples per second and as GFLOP/s (FLOPs counted on the timed step) with its fraction of
  the matmul GFLOP/s measured right before and after (see below);
- inference milliseconds per pair of the ``dlkfm`` method (features of all levels + LK
  3 -> 2 -> 1, centred start) at batch 1 and at batch `--infer-batch` (default 32), without and
  with ``fold_batchnorm``;
- the achieved GFLOP/s of the feature extractors (both branches, all levels, inference mode:
  no special map, no standardisation, no LK) as a fraction of the float32 matmul GFLOP/s
  measured in the same run (`deeplk.perf.matmul_gflops`, 2048 x 2048, measured right before
  and right after each timing; the fraction uses the higher of the two, the conservative choice:
  a cold or loaded first matmul would otherwise inflate the fraction, and a change of load
  during the run shows as a gap between the two). FLOPs are counted by `deeplk.perf.graph_flops` on the very
  ``tf.function`` that `deeplk.perf.time_call` times, and checked against the analytic count of
  the convolutions (``2 * 9 * C_in * C_out`` per output value). Variants (``--variants``):
  ``keras`` (the Keras layers: conv, then batch norm as separate multiply/add passes, then
  LeakyReLU), ``folded`` (`DLKFMNet.extract` with ``fold_batchnorm=True``: batch norm folded
  into the conv weights, conv + bias + LeakyReLU fused by TensorFlow's remapper), each with
  ``-xla`` (``jit_compile=True``) or not; ``convs`` times the bare convolutions of the same
  network (no bias, BN, activation, skip: the ceiling of what the conv kernels give).

Example::

    python bench/dlkfm.py                          # paper size: 64 channels, 3 residual blocks
    python bench/dlkfm.py --channels 8 --blocks 1  # the CPU demo's size
    python bench/dlkfm.py --profile srif_map       # the levels, sizes, losses and batches a profile trains
    python bench/dlkfm.py --only-features --onednn 1   # features only, oneDNN kernels on

``--onednn 0|1`` sets ``TF_ENABLE_ONEDNN_OPTS`` before TensorFlow loads (default: TensorFlow's
own choice, off on CPUs without AVX-512 such as the 2-core AVX2 machine of the CPU demo).

Numbers depend on the machine and its load; compare settings within one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _i, _a in enumerate(sys.argv):  # must precede the TensorFlow import
    if _a.startswith("--onednn"):
        _v = _a.split("=", 1)[1] if "=" in _a else sys.argv[_i + 1]
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = _v

import deeplk  # noqa: E402,F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
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


def train_step(level: int, root: str, arch: dict, batch, repeats: int, task_options: dict) -> dict:
    """One training step of `level` (levels below frozen) with the `dlkfm.DLKFMTask` options
    `task_options` (loss, perturbations): median seconds over `repeats`, samples/s, FLOPs counted
    on the timed step (forward, backward and Adam update) and the fraction of the matmul GFLOP/s
    measured just before and after (the higher one)."""
    task = dlkfm.DLKFMTask(level, root, load_previous=False, **arch, **task_options)
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
    flops = perf.graph_flops(step, *(tf.TensorSpec(a.shape, a.dtype) for a in args))
    before = perf.matmul_gflops()
    seconds = perf.time_call(step, *args, warmup=2, repeats=repeats)
    after = perf.matmul_gflops()
    gflops = flops / seconds / 1e9
    return dict(seconds=seconds, samples_per_second=len(batch[0]) / seconds, flops=flops, gflops=gflops,
                matmul_before=before, matmul_after=after, fraction=gflops / max(before, after))


ARCH_PARAMETERS = ("channels", "num_blocks", "normalise", "input_representation", "feature_type")
TASK_PARAMETERS = ("num_perturbations", "convexity_weight", "perturbation", "loss", "start_perturbation",
                   "unroll_iterations")


def profile_levels(name: str) -> list[dict]:
    """The DLKFM training steps of a pipeline profile (its ``03_train_dlkfm.ipynb`` steps, in
    order): per step ``level``, ``arch`` (the architecture parameters it sets, a later level
    taking the earlier one's), ``task`` (loss settings) and ``batch``."""
    from deeplk.pipeline import load_profile

    out, arch = [], {}
    for step in load_profile(name).steps:
        params = step.parameters
        if not step.notebook.startswith("03_train_dlkfm"):
            continue
        arch = {**arch, **{k: params[k] for k in ARCH_PARAMETERS if k in params}}
        out.append(dict(level=params.get("level", 1), arch=dict(arch), batch=params.get("batch_size", 2),
                        task={k: params[k] for k in TASK_PARAMETERS if k in params}))
    if not out:
        raise SystemExit(f"profile {name!r} has no DLKFM training step")
    return out


VARIANTS = ("keras", "keras-xla", "folded", "folded-xla", "convs")


def conv_flops(model, batch: int) -> int:
    """Analytic FLOPs of every convolution of `model` (both branches, all levels) on batch
    `batch` of 192 / 128 pairs: ``2 * kh * kw * C_in`` per output value."""
    total = 0
    for size0, extractors in ((192, model.input_extractors), (128, model.template_extractors)):
        size = size0
        for ext in extractors:
            out = size if ext.stride == 1 else (size + 1) // 2
            c, c_in = ext.channels, int(ext.stem.kernel.shape[2])  # RGB, the level below, or MIND
            n_convs = 2 + 2 * ext.num_blocks  # mid, head and 2 per block; stem below
            total += 2 * 9 * c_in * c * out * out * batch
            total += n_convs * 2 * 9 * c * c * out * out * batch
            size = out
    return total


def bare_convs(model, x, t):
    """The convolutions of `model` alone, chained (same shapes and weights, nothing else)."""
    out = []
    for y, extractors in ((x, model.input_extractors), (t, model.template_extractors)):
        for ext in extractors:
            if ext.stride == 2:
                y = tf.nn.conv2d(tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]]), ext.stem.kernel, 2,
                                 "VALID")
            else:
                y = tf.nn.conv2d(y, ext.stem.kernel, 1, "SAME")
            for block in ext.blocks:
                y = tf.nn.conv2d(y, block.conv1.kernel, 1, "SAME")
                y = tf.nn.conv2d(y, block.conv2.kernel, 1, "SAME")
            y = tf.nn.conv2d(y, ext.mid.kernel, 1, "SAME")
            y = tf.nn.conv2d(y, ext.head.kernel, 1, "SAME")
            out.append(y)
    return out


def feature_function(model, variant: str):
    """The ``tf.function`` timed for `variant` (see the module docstring)."""
    xla = variant.endswith("-xla")
    kind = variant.removesuffix("-xla")
    if kind == "keras":
        def fn(x, t):
            return model.extract(x, t, training=False)
    elif kind == "folded":
        def fn(x, t):
            return model.extract(x, t, fold_batchnorm=True)
    elif kind == "convs":
        def fn(x, t):
            return bare_convs(model, x, t)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    return tf.function(fn, jit_compile=xla)


def measure_features(model, inputs, templates, variant: str, repeats: int) -> dict:
    """FLOPs (counted on the timed function), seconds, GFLOP/s and the fraction of the matmul
    rate measured just before and just after."""
    b = len(inputs)
    fn = feature_function(model, variant)
    specs = (tf.TensorSpec((b, 192, 192, 3), tf.float32),
             tf.TensorSpec((b, 128, 128, 3), tf.float32))
    flops = perf.graph_flops(fn, *specs)
    x, t = tf.constant(inputs), tf.constant(templates)
    before = perf.matmul_gflops()
    s = perf.time_call(fn, x, t, repeats=repeats)
    after = perf.matmul_gflops()
    achieved = flops / s / 1e9
    peak = max(before, after)
    return dict(flops=flops, seconds=s, gflops=achieved, matmul_before=before,
                matmul_after=after, fraction=achieved / peak)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None,
                        help="time the training steps of this pipeline profile's DLKFM levels, with their "
                             "architecture, loss and batch (e.g. srif_map, demo)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--feature-batch", type=int, default=32,
                        help="batch of the feature-extractor GFLOP/s measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-perturbations", type=int, default=2)
    parser.add_argument("--no-xla", action="store_true", help="LK without XLA at inference")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--only-features", action="store_true",
                        help="skip the training-step and inference timings")
    parser.add_argument("--onednn", choices=("0", "1"), default=None,
                        help="TF_ENABLE_ONEDNN_OPTS (set before TensorFlow loads)")
    args = parser.parse_args(argv)
    arch = dict(channels=args.channels, num_blocks=args.blocks, normalise=True)
    levels = [dict(level=k, arch=arch, batch=args.batch, task=dict(num_perturbations=args.num_perturbations))
              for k in dlkfm.LEVELS]
    if args.profile:
        levels = profile_levels(args.profile)
        arch = levels[0]["arch"]
        print(f"profile {args.profile}: " + "; ".join(
            f"level {s['level']}: {s['arch']}, {s['task']}, batch {s['batch']}" for s in levels))
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}; DLKFM "
          f"{arch.get('channels', 8)} channels, {arch.get('num_blocks', 1)} residual blocks; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    n = max(max(s["batch"] for s in levels), args.infer_batch, args.feature_batch)
    inputs, templates, corners = make_pairs(n)
    model = dlkfm.make_dlkfm_net(3, **arch)

    if not args.only_features:
        with tempfile.TemporaryDirectory() as root:
            for s in levels:
                b = s["batch"]
                batch = (inputs[:b], templates[:b], corners[:b])
                r = train_step(s["level"], root, s["arch"], batch, args.repeats, s["task"])
                print(f"train step level {s['level']}: {r['seconds'] * 1e3:8.1f} ms = "
                      f"{r['samples_per_second']:6.1f} samples/s (batch {b}, "
                      f"{s['task']}); {r['flops'] / 1e9:.2f} GFLOP counted "
                      f"= {r['gflops']:5.1f} GFLOP/s; matmul {r['matmul_before']:.1f} / "
                      f"{r['matmul_after']:.1f} GFLOP/s (before / after); fraction {r['fraction']:.3f}",
                      flush=True)

        for fold in (False, True):
            aligner = dlkfm.DLKFMAligner(model, init="centred", batch_size=args.infer_batch,
                                         jit_compile=not args.no_xla, fold_batchnorm=fold)
            for b in (1, args.infer_batch):
                s = perf.time_call(lambda: aligner(inputs[:b], templates[:b]), warmup=1,
                                   repeats=args.repeats, sync=lambda out: None)
                print(f"inference batch {b:3d}: {s / b * 1e3:8.1f} ms/pair (features + LK "
                      f"3->2->1, fold_batchnorm={fold})", flush=True)

    b = args.feature_batch
    mind = arch.get("input_representation") == "mind"
    expected = None if mind else conv_flops(model, b)  # the analytic count follows the RGB chain
    print(f"feature extractor, batch {b}, all levels, both branches" +
          ("" if mind else f"; convolutions {expected / 1e9:.1f} GFLOP (analytic)"), flush=True)
    for variant in args.variants:
        if variant == "convs" and mind:
            print("  convs     : not for a MIND model (its levels are not a chain of RGB convolutions)")
            continue
        r = measure_features(model, inputs[:b], templates[:b], variant, args.repeats)
        ratio = "" if mind else f" ({r['flops'] / expected:.3f} x convs)"
        print(f"  {variant:10s}: {r['flops'] / 1e9:6.1f} GFLOP counted{ratio} in {r['seconds'] * 1e3:7.1f} ms = "
              f"{r['gflops']:6.1f} GFLOP/s; matmul {r['matmul_before']:.1f} / "
              f"{r['matmul_after']:.1f} GFLOP/s (before / after); fraction "
              f"{r['fraction']:.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
