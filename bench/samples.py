"""The samples a method benchmark runs on (``lk_mind.py``, ``divergence.py``): a DLK-format
folder, its split and how many samples, from the command line."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser, max_samples: int | None = None) -> None:
    """``data_root`` (default the offline multimodal demo), ``--split``, ``--max-samples``,
    ``--batch``."""
    parser.add_argument("data_root", nargs="?", default="Dataset/DemoMultimodal",
                        help="DLK-format folder (default: the offline multimodal demo)")
    parser.add_argument("--split", default="val2014")
    parser.add_argument("--max-samples", type=int, default=max_samples)
    parser.add_argument("--batch", type=int, default=64)


def load(args: argparse.Namespace):
    """``(inputs, templates, corners)`` of the parsed arguments; prints where they come from."""
    from deeplk.data.loader import load_arrays
    from deeplk.paths import resolve

    root = resolve(args.data_root)
    if not root.is_dir():
        raise SystemExit(f"{root} does not exist: generate it with notebooks/00_generate_data.ipynb "
                         f"(dataset='demo_multimodal' for the default) or pass a DLK-format folder")
    inputs, templates, corners = load_arrays(root, args.split, max_samples=args.max_samples)
    print(f"{len(inputs)} samples from {root} ({args.split}); load average {os.getloadavg()[0]:.1f}")
    return inputs, templates, corners
