"""Stand-in raw data in the layout of the paper's raw datasets, made offline.

The smoke runs of the paper profiles (``deeplk-pipeline --profile mscoco --smoke``) need raw
data in the layout the real generators read, without downloading MS-COCO or the Google sets.
`write_stand_in` makes it from the demo photographs shipped with scikit-image (`deeplk.data.demo`):

- ``mscoco``: ``<folder>/train2014/`` and ``<folder>/val2014/`` with 320 x 240 colour JPEGs,
  random windows of the demo train / val photographs (grey photographs tinted, since the
  MS-COCO generator skips grey images);
- ``googlemap``: ``<folder>/satellite/<name>.jpg`` (a window of a photograph) and
  ``<folder>/map/<name>.png`` (the same window rendered as a map, `deeplk.data.render_map`);
- ``googleearth``: ``<folder>/season_a/<name>.jpg`` and ``<folder>/season_b/<name>.jpg`` (the
  window and its other "season", `deeplk.data.render_season`).

Image ``i`` of a folder is a pure function of ``(dataset, i)``; files already present are kept, so
a second call (a resumed smoke run) writes nothing. Each file is written under a temporary name
and renamed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deeplk._checks import check_positive_int
from deeplk.paths import resolve
from deeplk.utils import write_bytes_atomic

from .demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, demo_base_image
from .modality import render_map, render_season

__all__ = ["STAND_IN_DATASETS", "stand_in_layout", "write_stand_in"]

#: Datasets `write_stand_in` can imitate.
STAND_IN_DATASETS = ("mscoco", "googlemap", "googleearth")

#: Size (w, h) of a stand-in image: the MS-COCO protocol's resized frame; the pair generators
#: crop squares up to its shorter side.
SIZE = (320, 240)


def stand_in_layout(dataset: str) -> dict[str, str]:
    """The subfolders of a stand-in raw folder: ``{subfolder: role}``.

    >>> stand_in_layout("googlemap")
    {'satellite': 'photo', 'map': 'map'}
    """
    if dataset == "mscoco":
        return {"train2014": "photo", "val2014": "photo"}
    if dataset == "googlemap":
        return {"satellite": "photo", "map": "map"}
    if dataset == "googleearth":
        return {"season_a": "photo", "season_b": "season"}
    raise ValueError(f"no stand-in data for dataset {dataset!r}; choose one of {STAND_IN_DATASETS}")


def _window(index: int, names: tuple[str, ...], salt: int) -> np.ndarray:
    """A 240 x 320 colour window of a demo photograph, a pure function of its arguments."""
    rng = np.random.default_rng([salt, index])
    base = demo_base_image(names[index % len(names)])
    h, w = base.shape[:2]
    scale = max(SIZE[0] / w, SIZE[1] / h) * float(rng.uniform(1.0, 1.5))
    big = cv2.resize(base, (max(SIZE[0], round(w * scale)), max(SIZE[1], round(h * scale))),
                     interpolation=cv2.INTER_AREA)
    y = int(rng.integers(0, big.shape[0] - SIZE[1] + 1))
    x = int(rng.integers(0, big.shape[1] - SIZE[0] + 1))
    img = big[y : y + SIZE[1], x : x + SIZE[0]].astype(np.float64)
    if np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
        img = img * rng.uniform(0.6, 1.0, size=3)  # tint: MS-COCO generation skips grey images
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV encodes these formats
        raise RuntimeError(f"cannot encode a stand-in image as {ext}")
    return buf.tobytes()


def write_stand_in(dataset: str, folder, num_train: int = 8, num_val: int = 4) -> dict[str, int]:
    """Write (or complete) stand-in raw data for `dataset` in `folder`.

    Args:
        dataset: ``"mscoco"``, ``"googlemap"`` or ``"googleearth"`` (`STAND_IN_DATASETS`).
        folder: the raw folder the profile's generation step reads (its ``source_dir``);
            relative paths are under the project root.
        num_train, num_val: MS-COCO: images in ``train2014/`` and ``val2014/``. Pair datasets:
            ``num_train + num_val`` pairs in all (their generators hold the last quarter of the
            pairs out for val themselves).

    Returns:
        ``{subfolder: number of images written by this call}`` (0 for files already present).
    """
    layout = stand_in_layout(dataset)
    num_train, num_val = check_positive_int("num_train", num_train), check_positive_int("num_val", num_val)
    root = resolve(folder)
    written = {}
    if dataset == "mscoco":
        for sub, names, count, salt in (("train2014", DEMO_TRAIN_IMAGES, num_train, 0),
                                         ("val2014", DEMO_VAL_IMAGES, num_val, 1)):
            written[sub] = _write_images(root / sub, count, lambda i, n=names, s=salt: _window(i, n, s), ".jpg")
        return written
    names = DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES
    count = num_train + num_val
    render = {"photo": lambda img, i: img, "map": lambda img, i: render_map(img),
              "season": lambda img, i: render_season(img, np.random.default_rng([3, i]))}
    for sub, role in layout.items():
        ext = ".png" if role == "map" else ".jpg"
        written[sub] = _write_images(
            root / sub, count, lambda i, r=role: render[r](_window(i, names, 2), i), ext)
    return written


def _write_images(folder: Path, count: int, make, ext: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for i in range(count):
        path = folder / f"{i:06d}{ext}"
        if path.exists():
            continue
        write_bytes_atomic(path, _encode(make(i), ext))
        written += 1
    return written
