"""Training-step speed of the learned regression models on this machine.

For each model at its paper batch size (``*_demo`` at the demo profile's): seconds per training
step (forward, backward and the Adam update, compiled with ``tf.function``, tracing excluded,
median of a few steps), samples per second, and the GFLOP/s the step reaches (FLOPs of the step's
graph counted by TensorFlow's profiler: convolutions, their gradients, dense layers, element-wise
ops) as a fraction of the float32 matmul GFLOP/s measured in the same run
(`deeplk.perf.matmul_gflops`).

    python bench/train_step.py                       # every case
    python bench/train_step.py --cases dhn hnet_sup --repeats 3

Untrained weights and synthetic batches (the templates cut from random inputs): the speed does
not depend on the values. HomographyNet runs with ``vgg_weights=None`` (no download), which costs
the same as the ImageNet weights.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deeplk  # noqa: E402,F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cases import homography_net_case, regression_case  # noqa: E402
from deeplk import perf  # noqa: E402
from deeplk.pipeline import load_profile  # noqa: E402

# The HomographyNet options notebook 02 passes to the model (its `model_config`, minus vgg_weights).
HNET_MODEL_KEYS = ("vgg_layer", "input_scale", "inception_filters", "num_inception_blocks", "dense_units", "dropout", "input_norm",
                   "bn_momentum", "train_backbone")


def _demo_case(profile, mode: str, note: str):
    """``(builder, batch size, note)`` of the demo profile's rho-32 HomographyNet step for `mode`."""
    name = f"train_hnet_{mode}_rho32"
    params = next((s.parameters for s in profile.steps if s.name == name), None)
    if params is None:
        raise KeyError(f"{profile.path} has no step {name!r}")
    options = {k: params[k] for k in HNET_MODEL_KEYS if k in params}
    if mode == "unsup" and params.get("loss_pools") is not None:
        options["loss_pools"] = tuple(params["loss_pools"])
    if mode == "unsup" and params.get("outside_weight"):
        options["outside_weight"] = float(params["outside_weight"])
    return (lambda b: homography_net_case(f"hnet_{mode}", batch_size=b, **options),
            int(params["batch_size"]), f"{note}: options and batch of the demo profile's {name}")


_DEMO = load_profile("demo")

# name -> (builder of (task, batch), paper batch size, note)
CASES = {
    "dhn": (lambda b: regression_case("dhn", batch_size=b), 64, "DeTone 2016: batch 64"),
    "dhn_half": (lambda b: regression_case("dhn_half", batch_size=b), 64, "option input_scale=0.5"),
    "dhn_demo": (lambda b: regression_case("dhn_demo", batch_size=b), 16,
                 "demo profile: input_scale=0.25, batch 16 (x steps = its training time)"),
    "mhn_stage2": (lambda b: regression_case("mhn_stage2", batch_size=b), 64, "stage 1 frozen"),
    "mhn_stage3": (lambda b: regression_case("mhn_stage3", batch_size=b), 64, "stages 1-2 frozen"),
    "hnet_sup": (lambda b: homography_net_case("hnet_sup", batch_size=b), 64, "frozen VGG19 + inception"),
    "hnet_unsup": (lambda b: homography_net_case("hnet_unsup", batch_size=b), 64, "photometric L1 through DLT + warp"),
    "hnet_sup_demo": _demo_case(_DEMO, "sup", "supervised"),
    "hnet_unsup_demo": _demo_case(_DEMO, "unsup", "unsupervised"),
}


def _loss(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def measure(name: str, batch_size: int, repeats: int) -> dict:
    build, _, _ = CASES[name]
    task, batch = build(batch_size)
    model = task.build_model()
    variables = task.trainable_variables(model) if hasattr(task, "trainable_variables") else model.trainable_variables
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(variables)

    def gradients(*batch):
        with tf.GradientTape() as tape:
            loss = _loss(task.compute_loss(model, batch, True))
        return loss, tape.gradient(loss, variables)

    @tf.function
    def step(*batch):
        loss, grads = gradients(*batch)
        optimizer.apply(grads, variables)
        return loss

    specs = [tf.TensorSpec(t.shape, t.dtype) for t in batch]
    flops = perf.graph_flops(gradients, *specs)
    seconds = perf.time_call(step, *batch, warmup=2, repeats=repeats)
    return {"seconds": seconds, "samples_per_s": batch_size / seconds, "gflop": flops / 1e9,
            "gflops": flops / seconds / 1e9}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch-size", type=int, default=None, help="override every paper batch size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    peak = perf.matmul_gflops()
    print(f"float32 matmul (2048^2): {peak:.1f} GFLOP/s on {os.cpu_count()} CPU cores\n")
    print("| model | batch | s/step | samples/s | GFLOP/step | GFLOP/s | % of matmul | note |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        b = args.batch_size or CASES[name][1]
        r = measure(name, b, args.repeats)
        print(f"| {name} | {b} | {r['seconds']:.3f} | {r['samples_per_s']:.1f} | {r['gflop']:.1f} | "
              f"{r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f}% | {CASES[name][2]} |", flush=True)
    again = perf.matmul_gflops()
    print(f"\nmatmul again at the end: {again:.1f} GFLOP/s (a large change means the machine was busy)")


if __name__ == "__main__":
    main()
