"""The training-free multimodal baseline: `lk` on intensities against `lk` on descriptors.

Runs ``identity``, ``lk``, ``lk_mind`` (LK on the MIND descriptor, the default) and ``lk_mind``
with the doubled-angle orientation field (``lk_mind/orientation``) on the samples of a
DLK-format folder and prints success under 3 / 5 / 10 px, the median corner error, the number of
failures flagged by the method and ms per pair (batches of `--batch`, after an untimed call per
batch shape that compiles the program).

    python bench/lk_mind.py                        # Dataset/DemoMultimodal, val split
    python bench/lk_mind.py Dataset/GoogleMap --split val2014 --max-samples 200

The default folder is the offline multimodal demo that ``notebooks/00_generate_data.ipynb``
writes with ``dataset="demo_multimodal"``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import samples

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: label -> (method name, options of `deeplk.methods.get_method`)
VARIANTS = {
    "identity": ("identity", {}),
    "lk": ("lk", {}),
    "lk_mind": ("lk_mind", {}),
    "lk_mind/orientation": ("lk_mind", {"descriptor": "orientation"}),
}


def run(inputs, templates, corners, batch: int) -> dict:
    """Per variant: (errors (N,), failures, seconds)."""
    from deeplk import evaluate
    from deeplk.methods import get_method

    n = len(inputs)
    out = {}
    for label, (name, options) in VARIANTS.items():
        predict = get_method(name, **options)
        for size in {min(batch, n), n % batch} - {0}:
            predict(inputs[:size], templates[:size])
        pred, failed, seconds = np.full((n, 4, 2), np.nan), np.zeros(n, bool), 0.0
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            t0 = time.perf_counter()
            pred[start:stop], failed[start:stop] = predict(inputs[start:stop], templates[start:stop])
            seconds += time.perf_counter() - t0
        out[label] = (evaluate.corner_errors(pred, corners, failed), int(failed.sum()), seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    samples.add_arguments(parser, max_samples=200)
    args = parser.parse_args()
    inputs, templates, corners = samples.load(args)
    n = len(inputs)
    print(f"{'method':22s} {'<3 px':>6s} {'<5 px':>6s} {'<10 px':>6s} {'median':>8s} {'failed':>6s} {'ms/pair':>8s}")
    for label, (errors, failures, seconds) in run(inputs, templates, corners, args.batch).items():
        e = np.where(np.isfinite(errors), errors, np.inf)
        print(f"{label:22s} {100 * np.mean(e < 3):6.1f} {100 * np.mean(e < 5):6.1f} "
              f"{100 * np.mean(e < 10):6.1f} {np.median(e):8.2f} {failures:6d} {1e3 * seconds / n:8.2f}")


if __name__ == "__main__":
    main()
