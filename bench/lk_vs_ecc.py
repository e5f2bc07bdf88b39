"""Our batched pyramid LK against OpenCV's ECC (and other methods) on MSCOCO-protocol pairs.

Generates pairs in memory from a folder of photographs with the MSCOCO protocol (resize to
240x320, random 192 crop, DLK corner sampling; `pairs-per-image` crops per photograph, fixed seed),
runs the methods on the same pairs in one run and prints the paper's success table, ms per pair
and the speed ratio of `lk` over `ecc`. `lk` runs batched (`--batch` pairs per call, after one
untimed warm-up call that compiles it); the OpenCV methods run pair by pair.

    python bench/lk_vs_ecc.py ../shared/data/mscoco_sample
    python bench/lk_vs_ecc.py ../shared/data/mscoco_sample --methods identity sift ecc lk hybrid
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", help="folder of photographs, e.g. ../shared/data/mscoco_sample")
    parser.add_argument("--pairs-per-image", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="pairs per call for batched methods")
    parser.add_argument("--methods", nargs="+", default=["ecc", "lk"])
    args = parser.parse_args()

    import tensorflow as tf

    from deeplk.evaluate import format_table
    from deeplk.methods import evaluate_methods

    t0 = time.perf_counter()
    inputs, templates, corners = make_pairs(args.images, args.pairs_per_image, args.seed)
    print(f"{len(inputs)} MSCOCO-protocol pairs from {args.images} ({time.perf_counter() - t0:.1f} s to generate)")
    print(f"CPU threads: TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}, cores {os.cpu_count()}")
    summaries, _ = evaluate_methods(inputs, templates, corners, args.methods, batch_size=args.batch, progress=False)
    print()
    print(format_table(summaries))
    if "lk" in summaries and "ecc" in summaries:
        lk, ecc = summaries["lk"], summaries["ecc"]
        print(f"speed: lk {lk['ms_per_pair']:.2f} ms/pair (batch {args.batch}), ecc {ecc['ms_per_pair']:.2f} ms/pair "
              f"-> lk is {ecc['ms_per_pair'] / lk['ms_per_pair']:.2f}x faster")
        worse = [t for t in ("0.1", "0.5", "1", "3") if lk["success"][t] < ecc["success"][t]]
        print("lk success >= ecc at every threshold up to 3 px:", "yes" if not worse else f"no (worse at {worse})")


if __name__ == "__main__":
    main()
