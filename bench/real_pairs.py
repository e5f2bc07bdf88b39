"""DLKFM on real cross-modal pairs: generate, train the three levels, evaluate on held-out data.

Two small real sources, each handled end to end:

- **GoogleEarth** (``--googleearth``, a folder of aligned cross-season pairs ``NN_a.png`` /
  ``NN_b.png``, 128 x 128): the library's ``aligned_pairs`` generator. Whole pairs are held
  out: the last ``round(16 * 0.25) = 4`` pairs by sorted name (``12``-``15``) give every val
  sample, the first 12 every training sample. Crops are squares of 50-100 % of the 128 px side
  (64-128 px) with at least 99 % of pixels not pure black in either image (``mask_black``:
  ``NN_b`` is black outside its valid area), resized *up* to 192 (1.5-3x) before the DLK
  protocol cuts the template: the sources are smaller than the protocol's 192 input.
- **GoogleMap** (``--googlemap``, one aligned 192 x 192 pair ``satellite.jpg`` (input modality)
  / ``map.jpg`` (template modality)): a single pair cannot be held out whole, so a spatial
  region is: training crops lie entirely in the top ``192 - val_rows`` rows, val crops entirely
  in the bottom ``val_rows`` rows (default 80: rows 112-191), so no val pixel is ever seen in
  training. Crop sides are drawn in ``crop_size`` (default 64-80 px, the same range for both
  splits) and resized up to 192 (2.4-3x). This generator (``googlemap_region``) lives here and
  is registered in `deeplk.data.GENERATORS` at import, so `deeplk.data.generate_dataset` writes
  it (deterministic, resumable, with a manifest).

For each source the script then trains DLKFM levels 1, 2, 3 (`deeplk.models.dlkfm.train_stage`,
demo-like settings by default: 8 channels, 1 residual block, 300 / 900 / 900 steps, batch 4,
Adam 1e-3, 2 perturbations, convexity weight 0.2) into ``<out>/<source>/checkpoints`` (a rerun
resumes or skips finished levels), evaluates ``--methods`` on the val split with
`deeplk.methods.evaluate_methods` (no ground truth inside any method) and prints the table
(success % at 0.1 ... 20 px, mean / median PE, failures, ms per pair); ``summary.json``,
``table.md`` and the success curve go to ``<out>/<source>/results``.

Example (from the project root)::

    python bench/real_pairs.py --googleearth my_season_pairs/ --googlemap my_map_pair/ \\
        --out runs/real_pairs

Either source may be omitted. Numbers depend on the machine's load (ms per pair, training time).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from deeplk import data, evaluate, viz  # noqa: E402
from deeplk.data.generators import GENERATORS, Sample, SampleGenerator  # noqa: E402
from deeplk.data.protocol import INPUT_SIZE, make_pair  # noqa: E402
from deeplk.data.sources import read_image_rgb, resize_to  # noqa: E402
from deeplk.paths import resolve  # noqa: E402

DEFAULT_METHODS = ("identity", "sift", "ecc", "lk", "hybrid", "dlkfm")


class GoogleMapRegionGenerator(SampleGenerator):
    """One aligned pair, split spatially: train crops in the top rows, val crops in the bottom
    `val_rows` rows (no pixel shared). Square crops of side in `crop_size`, resized to 192.

    Options: ``input_file`` (``"satellite.jpg"``), ``template_file`` (``"map.jpg"``),
    ``val_rows`` (80), ``crop_size`` ((64, 80) px).
    """

    name = "googlemap_region"
    option_defaults = {"input_file": "satellite.jpg", "template_file": "map.jpg",
                       "val_rows": 80, "crop_size": (64, 80)}
    groups_by_source = False

    def _setup(self) -> None:
        o = self.options
        self.input_path = self.source_dir / o["input_file"]
        self.template_path = self.source_dir / o["template_file"]
        self.input = read_image_rgb(self.input_path)
        self.template = read_image_rgb(self.template_path)
        if self.input.shape != self.template.shape:
            raise ValueError(f"{self.input_path} ({self.input.shape}) and {self.template_path} "
                             f"({self.template.shape}) are not aligned (sizes differ)")
        h, w = self.input.shape[:2]
        lo, hi = (int(v) for v in o["crop_size"])
        rows = int(o["val_rows"])
        # (y0, y1) row range of each split: train on top, val at the bottom
        self.regions = {"train2014": (0, h - rows), "val2014": (h - rows, h)}
        for split, (y0, y1) in self.regions.items():
            if not (1 <= lo <= hi <= min(y1 - y0, w)):
                raise ValueError(
                    f"`crop_size` {o['crop_size']!r} does not fit the {split} region (rows "
                    f"{y0}..{y1 - 1} of a {w} px wide image); change `crop_size` or `val_rows`")

    def sample(self, split: str, index: int) -> Sample:
        rng = self.rng(split, index)
        lo, hi = (int(v) for v in self.options["crop_size"])
        y0, y1 = self.regions[split]
        s = int(rng.integers(lo, hi + 1))
        x = int(rng.integers(0, self.input.shape[1] - s + 1))
        y = int(rng.integers(y0, y1 - s + 1))
        size = (INPUT_SIZE, INPUT_SIZE)
        inp = resize_to(np.ascontiguousarray(self.input[y:y + s, x:x + s]), size)
        src = resize_to(np.ascontiguousarray(self.template[y:y + s, x:x + s]), size)
        template, corners, _ = make_pair(inp, src, rng)
        return Sample(inp, template, corners, src, None, f"rows {y}..{y + s - 1}")


GENERATORS.setdefault(GoogleMapRegionGenerator.name, GoogleMapRegionGenerator)


def generate(source: str, source_dir, out_dir, num_train: int, num_val: int, seed: int) -> dict:
    """Write the DLK-format dataset of `source` (``"googleearth"`` or ``"googlemap"``)."""
    if source == "googleearth":
        return data.generate_dataset("aligned_pairs", out_dir, source_dir, num_train, num_val,
                                     seed, progress=False, val_fraction=0.25,
                                     crop_fraction=(0.5, 1.0), mask_black=True, min_valid=0.99)
    if source == "googlemap":
        return data.generate_dataset("googlemap_region", out_dir, source_dir, num_train, num_val,
                                     seed, progress=False)
    raise ValueError(f"unknown source {source!r}")


def split_description(source: str, source_dir) -> str:
    """One line saying which pairs / rows each split uses."""
    if source == "googleearth":
        gen = data.make_generator("aligned_pairs", source_dir, val_fraction=0.25)
        names = {s: [p.name for p in gen.split_pairs[s]] for s in ("train2014", "val2014")}
        return (f"train pairs {names['train2014']} ({len(names['train2014'])}), val pairs "
                f"{names['val2014']} ({len(names['val2014'])})")
    gen = data.make_generator("googlemap_region", source_dir)
    (a0, a1), (b0, b1) = gen.regions["train2014"], gen.regions["val2014"]
    return (f"one pair; train crops in rows {a0}..{a1 - 1}, val crops in rows {b0}..{b1 - 1} "
            f"(crop side {gen.options['crop_size']} px, resized to 192)")


def train_levels(data_root, checkpoint_dir, steps, arch: dict, loss_options: dict,
                 batch_size: int, learning_rate: float, seed: int) -> dict:
    """Train DLKFM levels 1..3 (each skipped if already trained to its steps); seconds per level."""
    from deeplk.models import dlkfm

    seconds = {}
    for level, n in zip(dlkfm.LEVELS, steps):
        dataset = data.load_dataset(data_root, "train2014", batch_size=batch_size, shuffle=True,
                                    seed=seed + level, repeat=True)
        result = dlkfm.train_stage(f"dlkfm/level{level}", dataset, checkpoint_dir, steps=n,
                                   learning_rate=learning_rate, seed=seed + level,
                                   model_config=arch if level == 1 else None,
                                   task_options=loss_options, notes=dict(data_root=str(data_root)),
                                   log_every=max(1, n // 10), progress=False)
        seconds[level] = result.seconds
        print(f"  level {level}: steps {result.start_step} -> {result.steps} in "
              f"{result.seconds:.0f} s; last window loss {result.final_loss:.4f}, "
              f"mse {result.metrics.get('mse', float('nan')):.4f}, convexity "
              f"{result.metrics.get('convexity', float('nan')):.4f}", flush=True)
    return seconds


def evaluate_val(data_root, checkpoint_dir, methods, max_samples, results_dir) -> dict:
    """Evaluate `methods` on the val split; write and return the summaries."""
    from deeplk.methods import evaluate_methods

    inputs, templates, corners = data.load_arrays(data_root, "val2014", max_samples=max_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summaries, errors = evaluate_methods(inputs, templates, corners, list(methods),
                                             checkpoint_dir=checkpoint_dir, progress=False)
    evaluate.write_results(results_dir, summaries, errors)
    viz.save_success_curve(results_dir, errors)
    return summaries


def run_source(source: str, source_dir, args) -> dict:
    out = resolve(args.out) / source
    data_root, ckpt, results = out / "data", out / "checkpoints", out / "results"
    print(f"\n## {source}: {source_dir}\nsplit: {split_description(source, source_dir)}",
          flush=True)
    t0 = time.perf_counter()
    stats = generate(source, source_dir, data_root, args.num_train, args.num_val, args.seed)
    print(f"data: {args.num_train} train / {args.num_val} val samples in {data_root} "
          f"({stats['seconds']:.1f} s)", flush=True)
    record = {"source": str(source_dir), "split": split_description(source, source_dir)}
    if "dlkfm" in args.methods and not args.no_train:
        arch = dict(channels=args.channels, num_blocks=args.blocks, normalise=True)
        loss_options = dict(num_perturbations=args.num_perturbations,
                            convexity_weight=args.convexity_weight)
        print(f"training DLKFM {arch}, {loss_options}, steps {args.steps}, batch "
              f"{args.batch_size}, lr {args.learning_rate} -> {ckpt}", flush=True)
        seconds = train_levels(data_root, ckpt, args.steps, arch, loss_options, args.batch_size,
                               args.learning_rate, args.seed)
        record["train_seconds"] = seconds
        print(f"training: {sum(seconds.values()) / 60:.1f} min", flush=True)
    summaries = evaluate_val(data_root, ckpt, args.methods, args.max_samples, results)
    record["summaries"] = summaries
    print(f"\n{source} val ({summaries[args.methods[0]]['n']} samples), "
          f"{time.perf_counter() - t0:.0f} s in all:\n", flush=True)
    print(evaluate.format_table(summaries), flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--googleearth", help="folder of NN_a / NN_b aligned pairs")
    parser.add_argument("--googlemap", help="folder with satellite.jpg and map.jpg")
    parser.add_argument("--out", default="runs/real_pairs", help="output folder")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--max-samples", type=int, default=None, help="val samples evaluated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--steps", type=int, nargs=3, default=[300, 900, 900],
                        metavar=("L1", "L2", "L3"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--num-perturbations", type=int, default=2)
    parser.add_argument("--convexity-weight", type=float, default=0.2)
    parser.add_argument("--no-train", action="store_true",
                        help="evaluate the checkpoints already in <out>/<source>/checkpoints")
    args = parser.parse_args(argv)
    sources = [(s, getattr(args, s)) for s in ("googleearth", "googlemap") if getattr(args, s)]
    if not sources:
        parser.error("give --googleearth and/or --googlemap")
    for name, folder in sources:
        if not Path(folder).is_dir():
            parser.error(f"--{name}: folder not found: {folder}")
    records = {}
    for name, folder in sources:
        records[name] = run_source(name, folder, args)
    path = resolve(args.out) / "records.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"records: {path}")


if __name__ == "__main__":
    main()
