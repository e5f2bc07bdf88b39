"""The DLK folder format (DLKFM's published datasets): names, label JSON, sample listing.

A dataset folder holds, for each split ``train2014`` / ``val2014``::

    <split>_input/<name>.jpg            192 x 192 RGB JPEG
    <split>_template/<name>.jpg         128 x 128 RGB JPEG
    <split>_label/<name>_label.txt      JSON, see below
    <split>_mask/<name>.png             optional (written by `deeplk` only): template-frame
                                        validity, 255 valid / 0 invalid; DLK readers ignore it

The label holds where the template's corners land in the 192 input frame, as integer pixels::

    {"location": [{"top_left_u": 12, "top_left_v": 5}, {"top_right_u": 170, "top_right_v": 30},
                  {"bottom_left_u": 40, "bottom_left_v": 181}, {"bottom_right_u": 150,
                  "bottom_right_v": 160}]}

Note the file's order TL, TR, BL, BR; `deeplk` uses TL, TR, BR, BL everywhere else. Readers look
keys up by name, so the list order in a file does not matter. Real labels can lie slightly
outside 0..191; they are accepted.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .._checks import check_shape
from ..paths import resolve

#: The two splits of the format.
SPLITS = ("train2014", "val2014")
#: Keys of the label JSON in our corner order TL, TR, BR, BL.
LABEL_KEYS = (
    ("top_left_u", "top_left_v"),
    ("top_right_u", "top_right_v"),
    ("bottom_right_u", "bottom_right_v"),
    ("bottom_left_u", "bottom_left_v"),
)
#: Order of the corners in the file's "location" list: TL, TR, BL, BR (indices into ours).
FILE_CORNER_ORDER = (0, 1, 3, 2)
#: Name of the manifest `generate_dataset` writes at the top of a dataset folder.
MANIFEST_NAME = "deeplk_dataset.json"
#: Suffix of label files.
LABEL_SUFFIX = "_label.txt"
#: Extension of input and template images.
IMAGE_EXT = ".jpg"
#: Extension of validity masks.
MASK_EXT = ".png"


def split_name(split: str) -> str:
    """Canonical split prefix: ``"train"`` or ``"train2014"`` -> ``"train2014"``; same for val."""
    s = str(split)
    if s in ("train", "val"):
        s += "2014"
    if s not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS} (or 'train'/'val'), got {split!r}")
    return s


def split_dirs(data_root, split: str) -> dict[str, Path]:
    """The folders of one split: ``{"input", "template", "label", "mask"}`` -> path (resolved)."""
    root = resolve(data_root)
    s = split_name(split)
    return {kind: root / f"{s}_{kind}" for kind in ("input", "template", "label", "mask")}


def sample_name(index: int) -> str:
    """File stem of sample `index`: zero-padded to six digits (``000123``)."""
    return f"{int(index):06d}"


def sample_paths(data_root, split: str, name: str) -> dict[str, Path]:
    """Paths of one sample's files: ``{"input", "template", "label", "mask"}`` -> path."""
    d = split_dirs(data_root, split)
    return {
        "input": d["input"] / f"{name}{IMAGE_EXT}",
        "template": d["template"] / f"{name}{IMAGE_EXT}",
        "label": d["label"] / f"{name}{LABEL_SUFFIX}",
        "mask": d["mask"] / f"{name}{MASK_EXT}",
    }


def _json_number(v: float):
    """An int when `v` is integral (the format's integer pixels), else a float."""
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"corner coordinates must be finite, got {v!r}")
    return int(round(f)) if abs(f - round(f)) < 1e-9 else f


def label_to_json(corners) -> str:
    """The label file's text for `corners` ((4, 2) (x, y), order TL, TR, BR, BL).

    Integral values are written as JSON integers (as in the published data), others as floats.
    """
    c = np.asarray(corners, dtype=np.float64)
    check_shape("corners", c, (4, 2), "(x, y) corners TL, TR, BR, BL")
    location = []
    for k in FILE_CORNER_ORDER:
        ku, kv = LABEL_KEYS[k]
        location.append({ku: _json_number(c[k, 0]), kv: _json_number(c[k, 1])})
    return json.dumps({"location": location})


def parse_label(text: str, path="<label>") -> np.ndarray:
    """Parse a label file's text into (4, 2) float32 corners, order TL, TR, BR, BL.

    Raises:
        ValueError naming `path` for malformed JSON, missing keys or non-numeric values.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed label JSON in {path}: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("location"), list):
        raise ValueError(f'label {path} must be a JSON object with a "location" list')
    values: dict = {}
    for entry in obj["location"]:
        if not isinstance(entry, dict):
            raise ValueError(f'label {path}: every "location" entry must be an object')
        values.update(entry)
    out = np.empty((4, 2), dtype=np.float32)
    for k, keys in enumerate(LABEL_KEYS):
        for j, key in enumerate(keys):
            if key not in values:
                raise ValueError(f'label {path} is missing the key "{key}"')
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f'label {path}: "{key}" must be a finite number, got {v!r}')
            out[k, j] = v
    return out


def read_label(path) -> np.ndarray:
    """Read a DLK label file.

    Args:
        path: the ``<name>_label.txt`` file (relative paths are under the project root).

    Returns:
        (4, 2) float32 (x, y) input pixels where the template corners land, order TL, TR, BR, BL.

    Raises:
        FileNotFoundError / ValueError naming the file.
    """
    p = resolve(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read label file {p}: {e}") from None
    return parse_label(text, p)


def write_label(path, corners) -> None:
    """Write `corners` ((4, 2) (x, y), order TL, TR, BR, BL) as a DLK label file at `path`."""
    p = resolve(path)
    p.write_text(label_to_json(corners), encoding="utf-8")


def natural_key(name: str):
    """Sort key putting ``"2"`` before ``"10"`` (numeric stems by value, then others by text)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _visible_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return [e.name for e in it if not e.name.startswith(".") and e.is_file()]


def list_samples(data_root, split: str = "val2014") -> list[str]:
    """Names of the samples of one split, in natural order (``000000``, ``000001``, ...).

    Args:
        data_root: a DLK-format folder (relative paths are under the project root).
        split: ``"train2014"`` or ``"val2014"`` (``"train"``/``"val"`` accepted).

    Raises:
        FileNotFoundError naming a missing folder or the first (in order) missing file when the
        input, template and label sets differ.
    """
    root = resolve(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    dirs = split_dirs(root, split)
    for kind in ("input", "template", "label"):
        if not dirs[kind].is_dir():
            raise FileNotFoundError(f"missing {kind} folder: {dirs[kind]}")
    sets = {
        "input": {
            f[: -len(IMAGE_EXT)] for f in _visible_files(dirs["input"]) if f.endswith(IMAGE_EXT)
        },
        "template": {
            f[: -len(IMAGE_EXT)] for f in _visible_files(dirs["template"]) if f.endswith(IMAGE_EXT)
        },
        "label": {
            f[: -len(LABEL_SUFFIX)]
            for f in _visible_files(dirs["label"])
            if f.endswith(LABEL_SUFFIX)
        },
    }
    every = sets["input"] | sets["template"] | sets["label"]
    names = sorted(every, key=natural_key)
    for name in names:
        for kind, suffix in (
            ("input", IMAGE_EXT),
            ("template", IMAGE_EXT),
            ("label", LABEL_SUFFIX),
        ):
            if name not in sets[kind]:
                raise FileNotFoundError(
                    f"sample {name!r} of {split_name(split)} is incomplete: missing "
                    f"{dirs[kind] / (name + suffix)}"
                )
    return names


def is_downloaded(data_root) -> bool:
    """Whether `data_root` holds DLK-format samples that `deeplk.data.generate_dataset` did not
    write (some ``<split>_label`` file and no `MANIFEST_NAME`): a downloaded dataset, e.g. the
    published GoogleMap / GoogleEarth archives, which the generation step uses as it is."""
    root = resolve(data_root)
    if not root.is_dir() or (root / MANIFEST_NAME).exists():
        return False
    for split in SPLITS:
        labels = split_dirs(root, split)["label"]
        if labels.is_dir() and any(f.endswith(LABEL_SUFFIX) for f in _visible_files(labels)):
            return True
    return False


def read_template_mask(data_root, split: str, name: str) -> np.ndarray:
    """The template-frame validity mask of one sample: (128, 128) bool, all True without a file."""
    import cv2

    p = sample_paths(data_root, split, name)["mask"]
    if not p.is_file():
        return np.ones((128, 128), dtype=bool)
    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"cannot read mask image {p}")
    if m.shape != (128, 128):
        raise ValueError(f"mask {p} must be 128 x 128, got {m.shape[1]} x {m.shape[0]}")
    return m > 127
