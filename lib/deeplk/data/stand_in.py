"""Stand-in raw data in the layout of the paper's raw datasets (and SRIF's), made offline.

The smoke runs of the paper profiles (``deeplk-pipeline --profile mscoco --smoke``) need raw
data in the layout the real generators read, without downloading MS-COCO or the Google sets.
`write_stand_in` makes it from the demo photographs shipped with scikit-image (`deeplk.data.demo`):

- ``mscoco``: ``<folder>/train2014/`` and ``<folder>/val2014/`` with 320 x 240 colour JPEGs,
  random windows of the demo train / val photographs (grey photographs tinted, since the
  MS-COCO generator skips grey images);
- ``googlemap``: ``<folder>/satellite/<name>.jpg`` (a window of a photograph) and
  ``<folder>/map/<name>.png`` (the same window rendered as a map, `deeplk.data.render_map`);
- ``googleearth``: ``<folder>/season_a/<name>.jpg`` and ``<folder>/season_b/<name>.jpg`` (the
  window and its other "season", `deeplk.data.render_season`);
- ``registered_pairs`` (the SRIF layout, e.g. its Optical-Map set): ``<folder>/pair{i}_1.jpg`` a
  400 x 400 window of a photograph, ``<folder>/pair{i}_2.jpg`` the same scene rendered as a map and
  moved by a small affine ``G_i`` (rotation, scale, shift), ``<folder>/gt_{i}.txt`` that ``G_i``
  (2 x 3, mapping ``pair{i}_1`` pixels onto ``pair{i}_2``'s; `STAND_IN_AFFINE`), ``i`` from 1.

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

__all__ = ["STAND_IN_DATASETS", "stand_in_layout", "stand_in_pair", "write_stand_in"]

#: Datasets `write_stand_in` can imitate.
STAND_IN_DATASETS = ("mscoco", "googlemap", "googleearth", "registered_pairs")

#: Size (w, h) of a stand-in image: the MS-COCO protocol's resized frame; the pair generators
#: crop squares up to its shorter side.
SIZE = (320, 240)
#: Size (w, h) of a stand-in registered pair's images: SRIF Optical-Map's.
PAIR_SIZE = (400, 400)
#: Largest rotation (degrees), relative scale change and shift (pixels) of a stand-in pair's affine.
STAND_IN_AFFINE = {"rotation_deg": 4.0, "scale": 0.04, "shift": 8.0}


def stand_in_layout(dataset: str) -> dict[str, str]:
    """The subfolders of a stand-in raw folder, ``{subfolder: role}`` (``registered_pairs``: its
    kinds of files in the one folder, ``{name pattern: role}``).

    >>> stand_in_layout("googlemap")
    {'satellite': 'photo', 'map': 'map'}
    """
    if dataset == "mscoco":
        return {"train2014": "photo", "val2014": "photo"}
    if dataset == "googlemap":
        return {"satellite": "photo", "map": "map"}
    if dataset == "googleearth":
        return {"season_a": "photo", "season_b": "season"}
    if dataset == "registered_pairs":
        return {"pair*_1.jpg": "photo", "pair*_2.jpg": "map", "gt_*.txt": "affine"}
    raise ValueError(f"no stand-in data for dataset {dataset!r}; choose one of {STAND_IN_DATASETS}")


def _scaled_base(rng: np.random.Generator, name: str, size: tuple[int, int]) -> np.ndarray:
    """A demo photograph resized to cover `size` (w, h) at a random zoom."""
    base = demo_base_image(name)
    h, w = base.shape[:2]
    scale = max(size[0] / w, size[1] / h) * float(rng.uniform(1.0, 1.5))
    return cv2.resize(base, (max(size[0], round(w * scale)), max(size[1], round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _window(index: int, names: tuple[str, ...], salt: int) -> np.ndarray:
    """A 240 x 320 colour window of a demo photograph, a pure function of its arguments."""
    rng = np.random.default_rng([salt, index])
    big = _scaled_base(rng, names[index % len(names)], SIZE)
    y = int(rng.integers(0, big.shape[0] - SIZE[1] + 1))
    x = int(rng.integers(0, big.shape[1] - SIZE[0] + 1))
    img = big[y : y + SIZE[1], x : x + SIZE[0]].astype(np.float64)
    if np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
        img = img * rng.uniform(0.6, 1.0, size=3)  # tint: MS-COCO generation skips grey images
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def stand_in_pair(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stand-in registered pair `index`: ``(first, second, G)``, the images (400, 400, 3) uint8
    RGB and ``G`` (2, 3) float64 with ``second(G x) = map rendering of first(x)`` (`second` read
    from the rendered photograph beyond `first`'s window, so no pixel of it is blank)."""
    rng = np.random.default_rng([4, index])
    names = DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES
    w, h = PAIR_SIZE
    big = _scaled_base(rng, names[index % len(names)], PAIR_SIZE)
    y = int(rng.integers(0, big.shape[0] - h + 1))
    x = int(rng.integers(0, big.shape[1] - w + 1))
    first = np.ascontiguousarray(big[y : y + h, x : x + w])
    a = STAND_IN_AFFINE
    angle = np.deg2rad(rng.uniform(-a["rotation_deg"], a["rotation_deg"]))
    scale = 1.0 + rng.uniform(-a["scale"], a["scale"])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    linear = np.array([[c, -s], [s, c]])
    shift = centre - linear @ centre + rng.uniform(-a["shift"], a["shift"], size=2)
    g = np.hstack([linear, shift[:, None]])
    # second(q) = map(big)(G^-1 q + (x, y)): an inverse map from `second` pixels to `big` pixels.
    inv = np.linalg.inv(np.vstack([g, [0, 0, 1]]))[:2]
    inv[:, 2] += (x, y)
    second = cv2.warpAffine(render_map(big), inv, PAIR_SIZE, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT_101)
    return first, second, g


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV encodes these formats
        raise RuntimeError(f"cannot encode a stand-in image as {ext}")
    return buf.tobytes()


def write_stand_in(dataset: str, folder, num_train: int = 8, num_val: int = 4) -> dict[str, int]:
    """Write (or complete) stand-in raw data for `dataset` in `folder`.

    Args:
        dataset: ``"mscoco"``, ``"googlemap"``, ``"googleearth"`` or ``"registered_pairs"``
            (`STAND_IN_DATASETS`).
        folder: the raw folder the profile's generation step reads (its ``source_dir``);
            relative paths are under the project root.
        num_train, num_val: MS-COCO: images in ``train2014/`` and ``val2014/``. Pair datasets:
            ``num_train + num_val`` pairs in all (their generators hold the last quarter of the
            pairs out for val themselves).

    Returns:
        ``{subfolder (or file pattern): number of files written by this call}`` (0 for files
        already present).
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
    count = num_train + num_val
    if dataset == "registered_pairs":
        return _write_pairs(root, count)
    names = DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES
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


def _write_pairs(folder: Path, count: int) -> dict[str, int]:
    """Stand-in registered pairs 1..`count` in `folder` (`stand_in_pair`), missing files only."""
    folder.mkdir(parents=True, exist_ok=True)
    written = dict.fromkeys(stand_in_layout("registered_pairs"), 0)
    for i in range(1, count + 1):
        files = {"pair*_1.jpg": folder / f"pair{i}_1.jpg", "pair*_2.jpg": folder / f"pair{i}_2.jpg",
                 "gt_*.txt": folder / f"gt_{i}.txt"}
        if all(p.exists() for p in files.values()):
            continue
        first, second, g = stand_in_pair(i)
        content = {"pair*_1.jpg": _encode(first, ".jpg"), "pair*_2.jpg": _encode(second, ".jpg"),
                   "gt_*.txt": "".join(" ".join(f"{v:.17g}" for v in row) + "\n" for row in g).encode()}
        for kind, path in files.items():
            if not path.exists():
                write_bytes_atomic(path, content[kind])
                written[kind] += 1
    return written
