"""Benchmark: pairs per second written to disk by `deeplk.data.generate_dataset`.

Generates N train pairs into a temporary folder (deleted afterwards unless --keep) and prints
the throughput for each worker count, then a single-thread per-stage breakdown (synthesis,
JPEG/PNG/JSON encoding, file writes) on a subset. Goal: >= 500 pairs/s on 2 cores (demo).

    python bench/data_generation.py                      # 2000 demo pairs, 2 workers
    python bench/data_generation.py --workers 1 2 --num 4000
    python bench/data_generation.py --dataset demo_multimodal --option style=season
    python bench/data_generation.py --dataset aligned_pairs \
        --source-dir Dataset/raw/GoogleEarth
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import deeplk  # noqa: F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
import cv2
from deeplk.data import generate as G
from deeplk.data.generators import GENERATORS


def _option(text: str):
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def stage_breakdown(dataset, source_dir, options, n: int, tmp: Path) -> dict[str, float]:
    """Microseconds per pair for synthesis, encoding and writing, in one thread."""
    gen = G.make_generator(dataset, source_dir, seed=123, **options)
    gen.prepare("train2014", n)
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        t = time.perf_counter()
        samples = [gen.sample("train2014", i) for i in range(n)]
        t_synth = time.perf_counter() - t
        t = time.perf_counter()
        files = [
            G._sample_files({k: tmp / k for k in ("input", "template", "label", "mask")}, i, s)
            for i, s in enumerate(samples)
        ]
        t_encode = time.perf_counter() - t
        for k in ("input", "template", "label", "mask"):
            (tmp / k).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        for group in files:
            for path, data in group:
                with open(G._tmp(path), "wb") as f:
                    f.write(data)
            for path, _ in group:
                os.replace(G._tmp(path), path)
        t_write = time.perf_counter() - t
    finally:
        cv2.setNumThreads(prev)
    return {
        "synthesis": 1e6 * t_synth / n,
        "encode": 1e6 * t_encode / n,
        "write": 1e6 * t_write / n,
    }


def file_create_latency(folder: Path, n: int = 200) -> float:
    """Microseconds to create and write one 12 kB file in `folder` (the disk's share of a pair
    is about three of these: input, template, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(12_000)
    t = time.perf_counter()
    for i in range(n):
        fd = os.open(folder / f"probe{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    us = 1e6 * (time.perf_counter() - t) / n
    shutil.rmtree(folder)
    return us


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="demo", choices=sorted(GENERATORS))
    ap.add_argument("--num", type=int, default=2000, help="pairs to generate (train split)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to time")
    ap.add_argument("--source-dir", default=None, help="raw source folder (non-demo datasets)")
    ap.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="generator option"
    )
    ap.add_argument(
        "--out", default=None, help="folder to create the scratch folder in (default: system temp)"
    )
    ap.add_argument(
        "--breakdown", type=int, default=300, help="pairs for the stage breakdown (0: skip)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = ap.parse_args(argv)
    options = dict(_option(o) for o in args.option)

    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    # Always a fresh subfolder, so cleaning up never touches anything else.
    parent = Path(tempfile.mkdtemp(prefix="deeplk_bench_", dir=args.out))
    print(f"dataset={args.dataset} num={args.num} cpus={os.cpu_count()} out={parent}")
    try:
        print(f"disk probe: {file_create_latency(parent / 'probe'):.0f} us per new 12 kB file")
        # Warm-up: decode/render the sources once so the timings show steady-state throughput.
        G.generate_dataset(
            args.dataset,
            parent / "warmup",
            args.source_dir,
            8,
            0,
            progress=False,
            workers=1,
            **options,
        )
        for w in args.workers:
            out = parent / f"workers{w}"
            shutil.rmtree(out, ignore_errors=True)
            stats = G.generate_dataset(
                args.dataset,
                out,
                args.source_dir,
                args.num,
                0,
                seed=1,
                progress=False,
                workers=w,
                **options,
            )
            print(
                f"workers={w}: {args.num} pairs in {stats['seconds']:.2f} s = "
                f"{stats['pairs_per_second']:.0f} pairs/s"
            )
        if args.breakdown:
            us = stage_breakdown(
                args.dataset, args.source_dir, options, args.breakdown, parent / "stages"
            )
            total = sum(us.values())
            parts = ", ".join(f"{k} {v:.0f} us" for k, v in us.items())
            print(
                f"one thread, per pair: {parts}; total {total:.0f} us = {1e6 / total:.0f} pairs/s"
            )
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
