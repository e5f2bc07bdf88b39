"""Our batched pyramid LK against OpenCV's ECC (and other methods) on MSCOCO-protocol pairs.

Generates pairs in memory from a folder of photographs with the MSCOCO protocol (resize to
240x320, random 192 crop, DLK corner sampling; `pairs-per-image` crops per photograph, fixed seed),
runs the methods on the same pairs in one run and prints the paper's success table, ms per pair
(wall and CPU) and the speed ratio of `lk` over `ecc`. `lk` runs batched (`--batch` pairs per
call, after untimed warm-up calls that compile it, one per batch shape); the OpenCV methods run
pair by pair. Timing is fair under a shared, loaded CPU: the methods are timed alternately, batch
by batch (method A on batch k, method B on batch k, ...), the whole pass is repeated `--repeats`
times and each method keeps its best pass (wall and CPU time, `time.process_time`, separately).
Only the methods' predict calls are timed (the pairs are in memory).

    python bench/lk_vs_ecc.py Dataset/raw/coco2014/val2014 --pairs-per-image 1
    python bench/lk_vs_ecc.py my_photos/ --methods identity sift ecc lk hybrid

Any folder of colour photographs works: MS-COCO's val2014 (`python -m deeplk.data.download
mscoco`), or your own.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_pairs(folder: str, pairs_per_image: int, seed: int):
    """(inputs, templates, corners) float32 arrays: every photograph of `folder`, train and val
    parts of the flat-folder MSCOCO generator together, `pairs_per_image` crops each."""
    from deeplk.data import make_generator
    from deeplk.data.sources import list_images

    n_images = len(list_images(folder))
    gen = make_generator("mscoco", source_dir=folder, seed=seed, crops_per_image=pairs_per_image)
    samples = []
    for split in ("train2014", "val2014"):
        for index in range(n_images * pairs_per_image):
            try:
                gen.prepare(split, index + 1)
            except ValueError:
                break  # this split has no more photographs
            samples.append(gen.sample(split, index))
    inputs = np.stack([s.input for s in samples]).astype(np.float32) / 255.0
    templates = np.stack([s.template for s in samples]).astype(np.float32) / 255.0
    corners = np.stack([s.corners for s in samples]).astype(np.float32)
    return inputs, templates, corners


def time_methods(inputs, templates, methods, batch: int, repeats: int):
    """Run `methods` alternately batch by batch, `repeats` passes; returns per method
    ``(corners, failed, best wall seconds, best CPU seconds)`` (best = smallest pass total)."""
    from deeplk.methods import _info, get_method

    n = len(inputs)
    predictors = {name: get_method(name) for name in methods}
    for name, predict in predictors.items():
        if _info(name).batched:  # compile every batch shape outside the timing
            for size in {min(batch, n), n % batch} - {0}:
                predict(inputs[:size], templates[:size])
    out = {name: [np.full((n, 4, 2), np.nan), np.zeros(n, bool), np.inf, np.inf] for name in methods}
    for _ in range(repeats):
        wall = dict.fromkeys(methods, 0.0)
        cpu = dict.fromkeys(methods, 0.0)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            for name, predict in predictors.items():
                w0, c0 = time.perf_counter(), time.process_time()
                corners, failed = predict(inputs[start:stop], templates[start:stop])
                wall[name] += time.perf_counter() - w0
                cpu[name] += time.process_time() - c0
                out[name][0][start:stop], out[name][1][start:stop] = corners, failed
        for name in methods:
            out[name][2] = min(out[name][2], wall[name])
            out[name][3] = min(out[name][3], cpu[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", help="folder of colour photographs, e.g. Dataset/raw/coco2014/val2014")
    parser.add_argument("--pairs-per-image", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="pairs per call for batched methods")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (best kept)")
    parser.add_argument("--methods", nargs="+", default=["ecc", "lk"])
    args = parser.parse_args()

    import tensorflow as tf

    from deeplk import evaluate

    t0 = time.perf_counter()
    inputs, templates, corners = make_pairs(args.images, args.pairs_per_image, args.seed)
    n = len(inputs)
    print(f"{n} MSCOCO-protocol pairs from {args.images} ({time.perf_counter() - t0:.1f} s to generate)")
    print(f"CPU threads: TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}, "
          f"cores {os.cpu_count()}; load average before timing {os.getloadavg()[0]:.1f}")
    results = time_methods(inputs, templates, args.methods, args.batch, args.repeats)
    load = os.getloadavg()[0]
    summaries = {}
    for name, (pred, failed, wall, _) in results.items():
        summaries[name] = evaluate.summarise(evaluate.corner_errors(pred, corners, failed), seconds=wall)
    print()
    print(evaluate.format_table(summaries))
    print()
    for name, (_, _, wall, cpu) in results.items():
        print(f"{name:8s} {1e3 * wall / n:7.2f} ms/pair wall  {1e3 * cpu / n:7.2f} ms/pair CPU (best of {args.repeats} alternating passes)")
    print(f"load average after timing {load:.1f}")
    if "lk" in results and "ecc" in results:
        lk, ecc = results["lk"], results["ecc"]
        print(f"speed: lk is {ecc[2] / lk[2]:.2f}x faster than ecc in wall time, {ecc[3] / lk[3]:.2f}x in CPU time "
              f"(lk batch {args.batch})")
        worse = [t for t in ("0.1", "0.5", "1", "3") if summaries["lk"]["success"][t] < summaries["ecc"]["success"][t]]
        print("lk success >= ecc at every threshold up to 3 px:", "yes" if not worse else f"no (worse at {worse})")


if __name__ == "__main__":
    main()
