"""Raw source images for the generators: listing, reading, grey detection, aligned and
registered pairs.

Accepted layouts of an aligned-pairs folder (`find_pairs`):

- two subfolders with matching file stems, e.g. ``satellite/0001.jpg`` and ``map/0001.png``
  (the first named subfolder is the input modality, the second the template modality; without
  names the two subfolders are taken in sorted order);
- files named ``<stem>_a.<ext>`` (input modality) and ``<stem>_b.<ext>`` (template modality)
  side by side in one folder.

A registered-pairs folder (`find_registered_pairs`, the SRIF layout) holds ``pair{i}_1.<ext>``,
``pair{i}_2.<ext>`` and ``gt_{i}.txt``: a 2 x 3 affine ``G`` (three numbers per line, a third
line ``0 0 1`` allowed) such that ``[G; 0 0 1]`` maps ``pair{i}_1`` pixel coordinates (pixel
centres at integers) onto ``pair{i}_2``'s. The images need not be the same size. Transform files
are all or nothing: a folder without any ``gt_*.txt`` holds aligned pairs (every ``G`` is the
identity); a folder with some needs one per pair.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .dlk_format import natural_key

#: File extensions read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder) -> list[Path]:
    """Image files directly in `folder` (no recursion, hidden files skipped), natural order.

    Raises:
        FileNotFoundError naming `folder` if it does not exist; ValueError if it holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image_rgb(path, reduce: int = 1) -> np.ndarray:
    """Decode an image file as (H, W, 3) uint8 RGB (grey is replicated, alpha dropped).

    Args:
        path: the image file.
        reduce: 1, 2, 4 or 8: decode at that fraction of the size (JPEG DCT scaling, fast).

    Raises:
        ValueError naming the file if it cannot be decoded.
    """
    flags = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }[reduce]
    img = cv2.imread(str(path), flags)
    if img is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {path}")
        raise ValueError(f"cannot read image {path} (not an image, or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_header(path) -> tuple[int, int, str]:
    """``(width, height, PIL mode)`` from the file header only (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def is_grey_image(path) -> bool:
    """True for single-channel files and for colour files whose R, G and B are all equal.

    The header says whether the file has one channel; colour files are decoded at 1/8 size
    (JPEG DCT scaling) and compared channel by channel.
    """
    _, _, mode = image_header(path)
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    small = read_image_rgb(path, reduce=8)
    return bool(
        np.array_equal(small[..., 0], small[..., 1])
        and np.array_equal(small[..., 1], small[..., 2])
    )


def resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize to ``(h, w)``: area averaging when shrinking, bilinear when enlarging."""
    h, w = size_hw
    if img.shape[0] == h and img.shape[1] == w:
        return img
    shrink = img.shape[0] >= h and img.shape[1] >= w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class ImagePair:
    """Two aligned images of the same place: `input_path` (input modality), `template_path`."""

    name: str
    input_path: Path
    template_path: Path


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise ValueError(
                f"two images with the stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}"
            )
        out[p.stem] = p
    return out


def find_pairs(
    source_dir,
    input_subdir: str | None = None,
    template_subdir: str | None = None,
    input_suffix: str = "_a",
    template_suffix: str = "_b",
) -> list[ImagePair]:
    """Aligned image pairs in `source_dir`, in natural order of their names.

    Args:
        source_dir: the folder (already resolved).
        input_subdir, template_subdir: subfolder names; both or neither. Without them, files
            ``<stem><input_suffix>.<ext>`` / ``<stem><template_suffix>.<ext>`` in `source_dir`
            are paired if there are any, else the two subfolders in sorted order.
        input_suffix, template_suffix: the stem suffixes of the side-by-side layout.

    Raises:
        FileNotFoundError / ValueError naming the folder or the first unmatched file.
    """
    root = Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder not found: {root}")
    if (input_subdir is None) != (template_subdir is None):
        raise ValueError("give both `input_subdir` and `template_subdir`, or neither")
    if input_subdir is None:
        flat = [
            p
            for p in root.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        ]
        if any(p.stem.endswith((input_suffix, template_suffix)) for p in flat):
            return _pairs_by_suffix(root, flat, input_suffix, template_suffix)
        subdirs = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if len(subdirs) != 2:
            raise ValueError(
                f"cannot find aligned pairs in {root}: expected two subfolders with matching "
                f"file names (found {len(subdirs)}: {subdirs}) or files named "
                f"<stem>{input_suffix}.<ext> / <stem>{template_suffix}.<ext>; or pass "
                "input_subdir= and template_subdir="
            )
        input_subdir, template_subdir = subdirs
    a_dir, b_dir = root / input_subdir, root / template_subdir
    for d in (a_dir, b_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"missing subfolder: {d}")
    a = _by_stem(list_images(a_dir), a_dir)
    b = _by_stem(list_images(b_dir), b_dir)
    for stem in sorted(set(a) ^ set(b), key=natural_key):
        have, miss = (a[stem], b_dir) if stem in a else (b[stem], a_dir)
        raise ValueError(f"no image matching {have} in {miss}")
    return [ImagePair(s, a[s], b[s]) for s in sorted(a, key=natural_key)]


def _pairs_by_suffix(root: Path, files: list[Path], sa: str, sb: str) -> list[ImagePair]:
    a = _by_stem([p for p in files if p.stem.endswith(sa)], root)
    b = _by_stem([p for p in files if p.stem.endswith(sb)], root)
    a = {k[: -len(sa)]: v for k, v in a.items()}
    b = {k[: -len(sb)]: v for k, v in b.items()}
    for stem in sorted(set(a) ^ set(b), key=natural_key):
        have = a.get(stem) or b.get(stem)
        want = f"{stem}{sb if stem in a else sa}.<ext>"
        raise ValueError(f"no image matching {have}: expected {root / want}")
    return [ImagePair(s, a[s], b[s]) for s in sorted(a, key=natural_key)]


def holdout_split(items: list, split: str, val_fraction: float) -> list:
    """Deterministic hold-out by sorted position: the last ``max(1, round(n * val_fraction))``
    items are val, the rest train. With a single item both splits get it."""
    n = len(items)
    if n < 2:
        return list(items)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return list(items[n - n_val :]) if split == "val2014" else list(items[: n - n_val])


@dataclass(frozen=True)
class RegisteredPair:
    """Two images of the same place and the affine between them.

    Attributes:
        name: the pair's stem, e.g. ``"pair7"``.
        first, second: ``pair{i}_1`` and ``pair{i}_2``.
        second_G_first: (2, 3) float64 affine mapping `first` pixels onto `second` pixels.
        gt_path: the transform file it was read from (None for an aligned folder).
    """

    name: str
    first: Path
    second: Path
    second_G_first: np.ndarray
    gt_path: Path | None


def read_affine(path) -> np.ndarray:
    """Read a transform file: a 2 x 3 affine (or 3 x 3 with last row ``0 0 1``), whitespace
    separated.

    Returns:
        (2, 3) float64.

    Raises:
        FileNotFoundError naming a missing file; ValueError naming the file when it is not
        numeric, has the wrong shape, holds non-finite values or a singular linear part.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transform file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on empty files; the shape check says it
            g = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"transform file {path} is not a numeric 2 x 3 matrix: {e}") from None
    if g.shape == (3, 3) and np.allclose(g[2], [0, 0, 1]):
        g = g[:2]
    if g.shape != (2, 3):
        raise ValueError(
            f"transform file {path} must hold a 2 x 3 affine (or 3 x 3 with last row 0 0 1), "
            f"got shape {g.shape[0]} x {g.shape[1] if g.ndim == 2 else 0}"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError(f"transform file {path} holds non-finite values")
    det = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
    if abs(det) < 1e-6:
        raise ValueError(f"transform file {path} is singular (det of its 2 x 2 part = {det:.3g})")
    return g


def _gt_name(stem: str) -> str:
    m = re.fullmatch(r"pair(.+)", stem)
    return f"gt_{m.group(1) if m else stem}.txt"


def find_registered_pairs(source_dir) -> list[RegisteredPair]:
    """Registered pairs ``pair{i}_1`` / ``pair{i}_2`` / ``gt_{i}.txt`` in `source_dir`, in
    natural order (see the module docstring for the layout and the transform convention).

    Raises:
        FileNotFoundError / ValueError naming the folder, an unmatched image or a missing or
        malformed transform file.
    """
    root = Path(source_dir)
    pairs = find_pairs(root, input_suffix="_1", template_suffix="_2")
    has_gt = any(p.is_file() for p in root.glob("gt_*.txt"))
    out = []
    for p in pairs:
        if has_gt:
            gt = root / _gt_name(p.name)
            if not gt.is_file():
                raise FileNotFoundError(
                    f"transform file not found: {gt} (pair {p.input_path.name}, "
                    f"{p.template_path.name}); {root} holds gt_*.txt files, so every pair needs "
                    "one"
                )
            g = read_affine(gt)
        else:
            gt, g = None, np.array([[1.0, 0, 0], [0, 1, 0]])
        out.append(RegisteredPair(p.name, p.input_path, p.template_path, g, gt))
    return out
