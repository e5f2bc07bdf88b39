"""The training-free LK methods with and without their divergence flags (``flag_divergence``).

Runs ``lk``, ``hybrid`` and ``lk_mind`` with ``flag_divergence=False`` (raw) and ``True`` (the
default, `deeplk.methods.diverged`) on the samples of a DLK-format folder and prints, per
variant: the share of samples flagged as failed, the median corner error of the results still
reported, the share of reported results worse than the centred guess (a larger corner error
than ``identity`` on the same sample) and over 25 px, the success rate under 1 / 3 / 5 / 10 px
(a flagged sample counts as a miss) and ms per pair (batches of `--batch`, after an untimed
call per batch shape).

    python bench/divergence.py Dataset/SRIF/Optical-Map --max-samples 300   # real map/satellite
    python bench/divergence.py Dataset/Demo                                 # photographs
    python bench/divergence.py Dataset/DemoMultimodal

The demo folders are the offline datasets ``notebooks/00_generate_data.ipynb`` writes
(``dataset="demo"`` / ``"demo_multimodal"``); the SRIF one is ``deeplk-pipeline --profile
srif_map``'s.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import samples

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THRESHOLDS = (1, 3, 5, 10)


def run(inputs, templates, corners, methods, batch: int) -> dict:
    """``{(method, flag): (errors (N,) with inf where flagged, seconds)}`` plus ``"identity"``."""
    from deeplk import evaluate
    from deeplk.geometry_np import centred_corners
    from deeplk.methods import get_method

    centred = np.broadcast_to(centred_corners(inputs.shape[1:3], templates.shape[1:3]), corners.shape)
    out = {"identity": (evaluate.corner_errors(centred, corners, np.zeros(len(corners), bool)), 0.0)}
    for name in methods:
        for flag in (False, True):
            predict = get_method(name, flag_divergence=flag)
            pred, failed, seconds = evaluate.run_predictor(predict, inputs, templates, batch, warm_up=True)
            out[(name, flag)] = (evaluate.corner_errors(pred, corners, failed), seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    samples.add_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=["lk", "hybrid", "lk_mind"])
    args = parser.parse_args()
    inputs, templates, corners = samples.load(args)
    n = len(inputs)
    results = run(inputs, templates, corners, args.methods, args.batch)
    identity = results.pop("identity")[0]
    print(f"identity: median corner error {np.median(identity):.1f} px")
    head = "".join(f"{f'<{t} px':>7s}" for t in THRESHOLDS)
    print(f"{'method':10s} {'flags':>5s} {'flagged':>8s} {'median reported':>16s} {'worse than centred':>19s} "
          f"{'>25 px':>7s}{head} {'ms/pair':>8s}")
    for (name, flag), (errors, seconds) in results.items():
        reported = np.isfinite(errors)
        e = errors[reported]
        median = f"{np.median(e):.1f}" if reported.any() else "-"
        worse = f"{100 * np.mean(e > identity[reported]):.1f}%" if reported.any() else "-"
        over = f"{100 * np.mean(e > 25):.1f}%" if reported.any() else "-"
        rates = "".join(f"{100 * np.mean(errors < t):7.1f}" for t in THRESHOLDS)
        print(f"{name:10s} {'on' if flag else 'off':>5s} {100 * np.mean(~reported):7.1f}% {median:>16s} "
              f"{worse:>19s} {over:>7s}{rates} {1e3 * seconds / n:8.2f}")


if __name__ == "__main__":
    main()
