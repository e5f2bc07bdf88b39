"""Raw source images for the generators: listing, reading, grey detection, aligned pairs.

Accepted layouts of an aligned-pairs folder (`find_pairs`):

- two subfolders with matching file stems, e.g. ``satellite/0001.jpg`` and ``map/0001.png``
  (the first named subfolder is the input modality, the second the template modality; without
  names the two subfolders are taken in sorted order);
- files named ``<stem>_a.<ext>`` (input modality) and ``<stem>_b.<ext>`` (template modality)
  side by side in one folder.
"""

from __future__ import annotations

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
