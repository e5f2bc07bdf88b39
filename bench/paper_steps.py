"""FLOPs per training step of every training step of the paper profiles, and the time per step
they imply on a GPU (an estimate: FLOPs / an assumed achieved rate, not a measurement).

For each training step of ``notebooks/profiles/<profile>.yaml`` (its model options and batch size)
the FLOPs of one forward and backward pass are counted on the traced graph
(`deeplk.perf.graph_flops`, TensorFlow's per-op FLOP registry: convolutions, their gradients,
dense layers, element-wise ops; the LK solves and warps of DLKFM and CLKN count only their
arithmetic ops); the Adam update is negligible beside them. The estimate divides them by
``--gpu-tflops`` (default 10: float32 on a current data-centre GPU at about half its peak; the
project's CPU benchmarks reach 40-90% of the matmul rate on the large convolutions).

    python bench/paper_steps.py --profile googlemap
    python bench/paper_steps.py --profile mscoco --gpu-tflops 20
    python bench/paper_steps.py --profile srif_map_paper   # DLKFM on MIND, unrolled loss

Untrained weights and random batches: the FLOPs do not depend on the values; nothing is
downloaded (HomographyNet's VGG19 is counted with random weights, the same cost).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import deeplk  # noqa: E402,F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
import tensorflow as tf  # noqa: E402

from cases import homography_net_case  # noqa: E402
from deeplk import perf  # noqa: E402
from deeplk.models import clkn, dlkfm, regression  # noqa: E402
from deeplk.pipeline import load_profile  # noqa: E402


def _batch(b: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = tf.constant(rng.random((b, 192, 192, 3), dtype=np.float32))
    return regression.resample_perturbations(inputs, tf.constant([seed, 0], tf.int64))


def _task(step, arch: dict):
    """``(task, batch)`` of a profile's training step; `arch` carries DLKFM level 1's
    architecture to its later levels."""
    p, nb = step.parameters, step.notebook
    b = int(p["batch_size"])
    if nb.startswith("01_"):
        options = {k: p[k] for k in ("input_scale", "normalise", "dropout", "bn_momentum") if k in p}
        stage = int(p["stage"]) if p["model"] == "mhn" else 1
        if stage == 1:
            arch["regression"] = options
        options = arch.get("regression", options)
        previous = [regression.RegressionTask(options).build_model() for _ in range(stage - 1)]
        return regression.RegressionTask(options, previous=previous), _batch(b)
    if nb.startswith("02_"):
        keys = ("vgg_layer", "input_scale", "inception_filters", "num_inception_blocks", "dense_units", "dropout",
                "input_norm", "bn_momentum", "train_backbone")
        name = "hnet_sup" if p["mode"] == "supervised" else "hnet_unsup"
        pools = tuple(p["loss_pools"]) if p.get("loss_pools") else None
        return homography_net_case(name, batch_size=b, loss_pools=pools, outside_weight=p.get("outside_weight"),
                                   **{k: p[k] for k in keys if k in p})
    if nb.startswith("03_"):
        level = int(p["level"])
        if level == 1:
            keys = ("channels", "num_blocks", "feature_type", "normalise", "input_representation")
            arch["dlkfm"] = {k: p[k] for k in keys if k in p}
        keys = ("num_perturbations", "convexity_weight", "loss", "start_perturbation", "unroll_iterations")
        task = dlkfm.DLKFMTask(level, "/nonexistent", load_previous=False, **arch["dlkfm"],
                               **{k: p[k] for k in keys if k in p})
        return task, _batch(b)
    if nb.startswith("04_"):
        return clkn.CLKNTask({"filters": p["filters"], "depth": p["depth"]}, margins=p["margins"]), _batch(b)
    raise ValueError(f"{step.name}: {nb} is not a training notebook")


def step_gflop(task, batch) -> float:
    model = task.build_model()
    variables = task.trainable_variables(model) if hasattr(task, "trainable_variables") else model.trainable_variables

    def gradients(*args):
        with tf.GradientTape() as tape:
            out = task.compute_loss(model, args, True)
            loss = out[0] if isinstance(out, (tuple, list)) else out
        return loss, tape.gradient(loss, variables)

    return perf.graph_flops(gradients, *[tf.TensorSpec(t.shape, t.dtype) for t in batch]) / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="googlemap")
    parser.add_argument("--gpu-tflops", type=float, default=10.0, help="achieved float32 TFLOP/s assumed")
    args = parser.parse_args(argv)
    prof = load_profile(args.profile)
    arch: dict = {}
    total = 0.0
    print(f"{prof.name}: GFLOP per training step, and hours at {args.gpu_tflops:g} TFLOP/s achieved\n")
    print("| step | batch | steps | GFLOP/step | GPU s/step (est.) | GPU hours (est.) |")
    print("|---|---|---|---|---|---|")
    for step in prof.steps:
        if step.notebook[:3] not in ("01_", "02_", "03_", "04_"):
            continue
        gflop = step_gflop(*_task(step, arch))
        seconds = gflop / (1e3 * args.gpu_tflops)
        hours = seconds * int(step.parameters["steps"]) / 3600
        total += hours
        print(f"| {step.name} | {step.parameters['batch_size']} | {step.parameters['steps']} | {gflop:.1f} | "
              f"{seconds:.3f} | {hours:.2f} |", flush=True)
    print(f"\ntraining in all: {total:.1f} GPU hours (est.), one step at a time")


if __name__ == "__main__":
    main()
