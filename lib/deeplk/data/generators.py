"""Sample synthesis for every dataset type: one class per generator, pure functions of the seed.

Sample ``i`` of a split is a pure function of ``(seed, split, i)`` and the source files: its random
generator is ``np.random.default_rng([seed, split_id, i])`` (train 0, val 1), and its source image
is chosen from that generator (or is the i-th usable image for ``mscoco``). So a sample does not
depend on how many samples were asked for, on resumption, or on the number of workers.

Generators (``name``: source layout -> input / template source):

- ``mscoco``: ``source_dir/train2014/`` and ``source_dir/val2014/`` raw images (a split's
  folder is only needed when samples of that split are asked for). Images are taken in natural
  file order, grey ones skipped (single-channel, or R == G == B); usable image ``i //
  crops_per_image`` is resized to 240 x 320 (h x w) and one random 192 crop is both the input and
  the template source. A flat folder of images (no ``train2014``/``val2014``) is accepted too:
  its last `val_fraction` (by sorted name) is val, the rest train.
- ``aligned_pairs``: a folder of aligned pairs, see `sources.find_pairs` (two subfolders with
  matching names, or ``<stem>_a``/``<stem>_b`` files). Per sample: a pair, then a random square
  crop whose side is drawn in `crop_size` px (or `crop_fraction` of the shorter side) and whose
  valid fraction (pixels not pure black in either image, if `mask_black`) is at least
  `min_valid` (up to `max_tries` draws; then a ValueError names the pair), resized to 192. Input
  from the first modality, template source from the second. The template-frame validity mask is
  returned when any template pixel is invalid.
- ``googlemap``: `aligned_pairs` with ``satellite/`` (input) and ``map/`` (template source).
- ``googleearth``: `aligned_pairs` with two season subfolders: ``input_subdir`` /
  ``template_subdir``, by default the two subfolders in sorted order (input = first).
- ``registered_pairs``: a folder of registered pairs, see `sources.find_registered_pairs`
  (``pair{i}_1``, ``pair{i}_2``, ``gt_{i}.txt``: the affine mapping ``pair{i}_1`` pixels onto
  ``pair{i}_2``'s; the SRIF layout, see `deeplk.data.download`). Each pair is brought into the
  frame of its input image: by default the input is ``pair{i}_1``, unresampled, and the template
  source is ``pair{i}_2`` resampled at ``gt @ x`` (bilinear); with ``swap=True`` the input is
  ``pair{i}_2`` and ``pair{i}_1`` is mapped into its frame by ``gt``. Pixels the template source
  does not cover are invalid (and pure-black ones if `mask_black`). The crop side is drawn in
  `crop_size`, capped to the pair's largest square with at least `min_valid` valid pixels (see
  `largest_valid_square`), and the crop's position uniformly among that side's valid squares;
  then as ``aligned_pairs`` (resize to 192, template mask when any template pixel is invalid).
  Pairs are split by pair: `val_pairs` (ids such as ``7`` or names such as ``"pair7"``) are
  val and all others train, or without it the ``val_fraction`` hold-out below.
- ``demo``: skimage photographs (see `demo`), augmented views; input = template source.
- ``demo_multimodal``: as ``demo``, template source rendered by `modality` (``style`` option:
  ``"map"`` (default), ``"season"`` or ``"mix"``, a per-sample 50/50 choice from the sample's
  generator).

Pair-based generators hold pairs out for val by sorted position: the last
``max(1, round(n * val_fraction))`` pairs are val, so val crops never come from train pairs
(with a single pair both splits use it, with a warning).

Options (``generate_dataset(..., **options)``) and their defaults:

=================  ==============================================================================
mscoco             ``crops_per_image=1``, ``val_fraction=0.25`` (flat folders only)
aligned_pairs      ``input_subdir=None``, ``template_subdir=None``, ``crop_size=None`` (px range,
                   overrides ``crop_fraction``), ``crop_fraction=(0.5, 1.0)`` (of the shorter
                   side), ``min_valid=0.99``, ``max_tries=1000``, ``mask_black=True``,
                   ``val_fraction=0.25``
googlemap          as aligned_pairs without the subdirs, but ``crop_size=(192, 512)``,
                   ``mask_black=False``
googleearth        as aligned_pairs, but ``crop_size=(384, 1024)``, ``mask_black=False``
registered_pairs   as aligned_pairs without the subdirs, but ``crop_size=(256, 400)``,
                   ``min_valid=0.95``, ``mask_black=False``; plus ``swap=False``,
                   ``val_pairs=None``
demo               ``max_rotation_deg=10.0``, ``zoom=(1.0, 1.5)``, ``flips=True``
demo_multimodal    as demo, plus ``style="map"`` (``"map"``, ``"season"`` or ``"mix"``)
=================  ==============================================================================

The ``registered_pairs`` crop range is around the GoogleMap dataset's 400 px windows resized to
192 (a 400 x 400 SRIF Optical-Map pair gives 256-400 px crops); the smaller SRIF sets (256-337 px,
rotated by their affines) are capped by their valid squares.

Crop sizes are capped to the shorter image side, so small sources (e.g. 128 x 128 pairs) give
crops of at most their size, resized up to 192. The GoogleMap / GoogleEarth crop ranges are our
choice (the published crops are not documented): 1-2.7x and 2-5.3x downsampling to 192.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from ..utils import LRUCache
from . import demo as demo_mod
from .dlk_format import natural_key
from .modality import render_map, render_season
from .protocol import INPUT_SIZE, make_pair, template_valid_mask
from .sources import (
    find_pairs,
    find_registered_pairs,
    holdout_split,
    image_header,
    is_grey_image,
    list_images,
    read_image_rgb,
    resize_to,
)

#: Split ids used in the per-sample random generator.
SPLIT_IDS = {"train2014": 0, "val2014": 1}


@dataclass
class Sample:
    """One generated sample (all uint8 RGB).

    Attributes:
        input: (192, 192, 3) the input image.
        template: (128, 128, 3) the template.
        corners: (4, 2) int64, where the template corners land in the input, TL, TR, BR, BL.
        template_source: (192, 192, 3) the input crop in the template modality.
        template_mask: (128, 128) bool template-frame validity, or None when all valid.
        source: which source image(s) the sample came from (for messages and debugging).
    """

    input: np.ndarray
    template: np.ndarray
    corners: np.ndarray
    template_source: np.ndarray
    template_mask: np.ndarray | None
    source: str


class SampleGenerator:
    """Base class: options, the per-sample random generator, grouping keys."""

    name: ClassVar[str] = ""
    option_defaults: ClassVar[dict] = {}
    needs_source_dir: ClassVar[bool] = True
    #: Whether grouping samples by `source_key` saves decoding (False: sources all in memory).
    groups_by_source: ClassVar[bool] = True

    def __init__(self, source_dir: Path | None, seed: int, options: dict, cache_size: int = 4):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for dataset {self.name!r}; "
                f"valid options: {sorted(self.option_defaults)}"
            )
        self.seed = int(seed)
        self.options = {**self.option_defaults, **options}
        if self.needs_source_dir:
            if source_dir is None:
                raise ValueError(f"dataset {self.name!r} needs `source_dir`")
            if not Path(source_dir).is_dir():
                raise FileNotFoundError(f"source folder not found: {source_dir}")
        self.source_dir = None if source_dir is None else Path(source_dir)
        self.cache = LRUCache(cache_size)
        self._setup()

    def _setup(self) -> None:
        """Check option values and index the sources (subclasses)."""

    def rng(self, split: str, index: int) -> np.random.Generator:
        """The random generator of sample `index` of `split`."""
        return np.random.default_rng([self.seed, SPLIT_IDS[split], int(index)])

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        """Scan sources for the first `count` samples of `split` (raises if there are too few).

        `map_fn` is an ordered parallel map (e.g. ``executor.map``) for scans that decode.
        """

    def source_key(self, split: str, index: int):
        """Hashable id of the source sample `index` reads (samples are grouped by it)."""
        return 0

    def sample(self, split: str, index: int) -> Sample:
        """Synthesise sample `index` of `split` (a pure function of seed, split, index, sources)."""
        raise NotImplementedError


def _finish(input_image, template_source, rng, source: str, valid192=None) -> Sample:
    template, corners, input_H_template = make_pair(input_image, template_source, rng)
    mask = None
    if valid192 is not None and not valid192.all():
        m = template_valid_mask(valid192, input_H_template)
        mask = None if m.all() else m
    return Sample(input_image, template, corners, template_source, mask, source)


def _random_crop_192(image_240x320: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y0 = int(rng.integers(0, image_240x320.shape[0] - INPUT_SIZE + 1))
    x0 = int(rng.integers(0, image_240x320.shape[1] - INPUT_SIZE + 1))
    return np.ascontiguousarray(image_240x320[y0 : y0 + INPUT_SIZE, x0 : x0 + INPUT_SIZE])


class MSCOCOGenerator(SampleGenerator):
    """MSCOCO protocol: one random 192 crop of each colour image resized to 240 x 320."""

    name = "mscoco"
    option_defaults = {"crops_per_image": 1, "val_fraction": 0.25}

    def _setup(self) -> None:
        cpi = self.options["crops_per_image"]
        if isinstance(cpi, bool) or not isinstance(cpi, int) or cpi < 1:
            raise ValueError(f"`crops_per_image` must be a positive integer, got {cpi!r}")
        self._usable: dict[str, list] = {s: [] for s in SPLIT_IDS}
        self._scanned: dict[str, int] = {s: 0 for s in SPLIT_IDS}
        sub = [self.source_dir / s for s in SPLIT_IDS]
        self.flat = not any(p.is_dir() for p in sub)

    def _files(self, split: str) -> list[Path]:
        if self.flat:
            return holdout_split(list_images(self.source_dir), split, self.options["val_fraction"])
        folder = self.source_dir / split
        if not folder.is_dir():
            raise FileNotFoundError(f"missing MSCOCO folder {folder} (expected raw {split} images)")
        return list_images(folder)

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        if count <= 0:
            return
        need = math.ceil(count / self.options["crops_per_image"])
        usable = self._usable[split]
        if len(usable) >= need:
            return
        files = self._files(split)
        scanned = self._scanned[split]
        chunk = 256
        while len(usable) < need and scanned < len(files):
            batch = files[scanned : scanned + chunk]
            for path, info in zip(batch, map_fn(_colour_image_info, batch), strict=True):
                if info is not None:
                    usable.append((path, info))
            scanned += len(batch)
        self._scanned[split] = scanned
        if len(usable) < need:
            where = self.source_dir if self.flat else self.source_dir / split
            raise ValueError(
                f"{where} has {len(usable)} colour images for {split}, but {count} samples at "
                f"{self.options['crops_per_image']} crop(s) per image need {need}"
            )

    def source_key(self, split: str, index: int):
        return index // self.options["crops_per_image"]

    def _load(self, path: Path, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        reduce = 1
        for r in (8, 4, 2):
            if math.ceil(w / r) >= 320 and math.ceil(h / r) >= 240:
                reduce = r
                break
        return resize_to(read_image_rgb(path, reduce=reduce), (240, 320))

    def sample(self, split: str, index: int) -> Sample:
        path, size = self._usable[split][index // self.options["crops_per_image"]]
        image = self.cache.get((split, str(path)), lambda: self._load(path, size))
        rng = self.rng(split, index)
        crop = _random_crop_192(image, rng)
        return _finish(crop, crop, rng, path.name)


def _colour_image_info(path: Path):
    """``(width, height)`` of a colour image, None for a grey one (raises naming bad files)."""
    w, h, _ = image_header(path)
    return None if is_grey_image(path) else (w, h)


@dataclass
class _LoadedPair:
    input: np.ndarray  # (H, W, 3) the input modality
    template: np.ndarray  # (H, W, 3) the template modality, in the input's frame
    invalid: np.ndarray | None  # (H, W) bool, None when every pixel is valid
    files: str  # the source files, for messages
    max_side: int | None = None  # registered pairs: the largest valid enough crop side

    def __post_init__(self):
        # (H+1, W+1) integral image of invalid pixels: a crop's invalid count in O(1).
        self.invalid_integral = (
            None
            if self.invalid is None
            else cv2.integral(self.invalid.astype(np.uint8), sdepth=cv2.CV_32S)
        )


class AlignedPairsGenerator(SampleGenerator):
    """Random square crops of aligned image pairs, resized to 192, with black-pixel masking."""

    name = "aligned_pairs"
    option_defaults = {
        "input_subdir": None,
        "template_subdir": None,
        "crop_size": None,
        "crop_fraction": (0.5, 1.0),
        "min_valid": 0.99,
        "max_tries": 1000,
        "mask_black": True,
        "val_fraction": 0.25,
    }

    def _setup(self) -> None:
        o = self.options
        if o["crop_size"] is not None:
            lo, hi = o["crop_size"]
            if not (1 <= lo <= hi):
                raise ValueError(
                    f"`crop_size` must be (lo, hi) px with 1 <= lo <= hi, got {o['crop_size']!r}"
                )
        lo, hi = o["crop_fraction"]
        if not (0 < lo <= hi <= 1):
            raise ValueError(
                "`crop_fraction` must be (lo, hi) with 0 < lo <= hi <= 1, "
                f"got {o['crop_fraction']!r}"
            )
        if not 0 <= o["min_valid"] <= 1:
            raise ValueError(f"`min_valid` must be in [0, 1], got {o['min_valid']!r}")
        if int(o["max_tries"]) < 1:
            raise ValueError(f"`max_tries` must be >= 1, got {o['max_tries']!r}")
        if not 0 <= o["val_fraction"] < 1:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {o['val_fraction']!r}")
        self.pairs = self._find_pairs()
        self.split_pairs = {s: holdout_split(self.pairs, s, o["val_fraction"]) for s in SPLIT_IDS}

    def _find_pairs(self) -> list:
        """The pairs, in the order the val hold-out uses (each has a unique ``name``)."""
        return find_pairs(self.source_dir, *self._subdirs())

    def _subdirs(self) -> tuple[str | None, str | None]:
        """(input, template) subfolder names, or (None, None) to detect the layout."""
        return self.options["input_subdir"], self.options["template_subdir"]

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        if count > 0 and len(self.pairs) == 1:
            warnings.warn(
                f"{self.source_dir} holds a single pair: train and val crops come from the same "
                "images",
                stacklevel=3,
            )

    def source_key(self, split: str, index: int):
        return int(self.rng(split, index).integers(len(self.split_pairs[split])))

    def _load_pair(self, pair) -> _LoadedPair:
        a = read_image_rgb(pair.input_path)
        b = read_image_rgb(pair.template_path)
        if a.shape != b.shape:
            raise ValueError(
                f"pair {pair.name!r} is not aligned: {pair.input_path} is {a.shape[1]} x "
                f"{a.shape[0]} but {pair.template_path} is {b.shape[1]} x {b.shape[0]}"
            )
        return _LoadedPair(a, b, self._black_mask(a, b), f"{pair.input_path}, {pair.template_path}")

    def _black_mask(self, a: np.ndarray, b: np.ndarray, invalid=None) -> np.ndarray | None:
        """`invalid` or-ed with pure-black pixels of `a` or `b` (if `mask_black`); None if
        nothing is invalid."""
        if self.options["mask_black"]:
            black = ~a.any(axis=-1) | ~b.any(axis=-1)
            invalid = black if invalid is None else invalid | black
        return invalid if invalid is not None and invalid.any() else None

    def _side_range(self, h: int, w: int) -> tuple[int, int]:
        short = min(h, w)
        if self.options["crop_size"] is not None:
            lo, hi = (int(v) for v in self.options["crop_size"])
        else:
            f_lo, f_hi = self.options["crop_fraction"]
            lo, hi = max(1, int(round(f_lo * short))), max(1, int(round(f_hi * short)))
        return min(lo, short), min(hi, short)

    def sample(self, split: str, index: int) -> Sample:
        rng = self.rng(split, index)
        pairs = self.split_pairs[split]
        pair = pairs[int(rng.integers(len(pairs)))]
        loaded = self.cache.get(pair.name, lambda: self._load_pair(pair))
        s, x, y = self._pick_crop(pair, loaded, rng)
        size = (INPUT_SIZE, INPUT_SIZE)
        inp = resize_to(np.ascontiguousarray(loaded.input[y : y + s, x : x + s]), size)
        src = resize_to(np.ascontiguousarray(loaded.template[y : y + s, x : x + s]), size)
        valid = None
        if loaded.invalid is not None:
            crop_valid = ~loaded.invalid[y : y + s, x : x + s]
            valid = resize_to(np.where(crop_valid, 255, 0).astype(np.uint8), size) == 255
        return _finish(inp, src, rng, pair.name, valid)

    def _pick_crop(self, pair, loaded: _LoadedPair, rng) -> tuple[int, int, int]:
        """``(side, x0, y0)`` of a random square crop valid enough (rejection sampling)."""
        h, w = loaded.input.shape[:2]
        lo, hi = self._side_range(h, w)
        ii = loaded.invalid_integral
        min_valid = float(self.options["min_valid"])
        for _ in range(int(self.options["max_tries"])):
            s = int(rng.integers(lo, hi + 1))
            x = int(rng.integers(0, w - s + 1))
            y = int(rng.integers(0, h - s + 1))
            if ii is None:
                break
            bad = int(ii[y + s, x + s]) - int(ii[y, x + s]) - int(ii[y + s, x]) + int(ii[y, x])
            if 1.0 - bad / (s * s) >= min_valid:
                break
        else:
            raise ValueError(
                f"pair {pair.name!r} ({loaded.files}): no {lo}..{hi} px square crop with >= "
                f"{min_valid:.0%} valid ({self._valid_meaning}) pixels in "
                f"{self.options['max_tries']} tries; lower `min_valid` or the crop size"
            )
        return s, x, y

    #: What a valid pixel is, for messages.
    _valid_meaning = "not pure black"


class GoogleMapGenerator(AlignedPairsGenerator):
    """GoogleMap: ``satellite/`` (input) and ``map/`` (template source) aligned pairs."""

    name = "googlemap"
    option_defaults = {
        k: v
        for k, v in AlignedPairsGenerator.option_defaults.items()
        if k not in ("input_subdir", "template_subdir")
    } | {"crop_size": (192, 512), "mask_black": False}

    def _subdirs(self) -> tuple[str, str]:
        for sub in ("satellite", "map"):
            if not (self.source_dir / sub).is_dir():
                raise FileNotFoundError(f"missing GoogleMap subfolder: {self.source_dir / sub}")
        return "satellite", "map"


class GoogleEarthGenerator(AlignedPairsGenerator):
    """GoogleEarth: two season subfolders with matching names (input = the first)."""

    name = "googleearth"
    option_defaults = AlignedPairsGenerator.option_defaults | {
        "crop_size": (384, 1024),
        "mask_black": False,
    }

    def _subdirs(self) -> tuple[str, str]:
        a, b = self.options["input_subdir"], self.options["template_subdir"]
        if a is None and b is None:
            subdirs = sorted(
                p.name
                for p in self.source_dir.iterdir()
                if p.is_dir() and not p.name.startswith(".")
            )
            if len(subdirs) != 2:
                raise ValueError(
                    f"GoogleEarth source {self.source_dir} must hold exactly two season subfolders "
                    f"with matching file names (found {subdirs}), or pass input_subdir= and "
                    "template_subdir="
                )
            a, b = subdirs
        return a, b


def valid_squares(invalid_integral: np.ndarray, side: int, min_valid: float) -> np.ndarray:
    """Which ``side`` x ``side`` crops have at least `min_valid` of their pixels valid.

    Args:
        invalid_integral: (H+1, W+1) integral image of the invalid pixels (`cv2.integral`).
        side: the crop side, 1 <= side <= min(H, W).
        min_valid: the wanted valid fraction, in [0, 1].

    Returns:
        (H - side + 1, W - side + 1) bool, indexed by the crop's top-left (y0, x0).
    """
    ii, s = invalid_integral, int(side)
    bad = ii[s:, s:].astype(np.int64) - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]
    return 1.0 - bad / (s * s) >= min_valid  # the rejection loop's test, to the last bit


def largest_valid_square(invalid_integral: np.ndarray, min_valid: float) -> int:
    """The largest side of a square crop with at least `min_valid` of its pixels valid.

    Found by bisection over sides: a side it returns always has a valid crop; a larger one may
    exist when the valid fraction is not monotonic in the side. 0 when no pixel is valid.
    """
    h, w = invalid_integral.shape[0] - 1, invalid_integral.shape[1] - 1

    def ok(s: int) -> bool:
        return bool(valid_squares(invalid_integral, s, min_valid).any())

    if not ok(1):
        return 0
    lo, hi = 1, min(h, w)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class RegisteredPairsGenerator(AlignedPairsGenerator):
    """Registered pairs (the SRIF layout): each pair brought into its input image's frame by its
    affine, out-of-frame pixels masked, then cropped as `AlignedPairsGenerator` does."""

    name = "registered_pairs"
    option_defaults = {
        k: v
        for k, v in AlignedPairsGenerator.option_defaults.items()
        if k not in ("input_subdir", "template_subdir")
    } | {
        "crop_size": (256, 400),
        "min_valid": 0.95,
        "mask_black": False,
        "swap": False,
        "val_pairs": None,
    }
    _valid_meaning = "inside both images, not pure black if `mask_black`"

    def _setup(self) -> None:
        if not isinstance(self.options["swap"], bool):
            raise ValueError(f"`swap` must be True or False, got {self.options['swap']!r}")
        super()._setup()
        val_pairs = self.options["val_pairs"]
        if val_pairs is not None:
            if isinstance(val_pairs, (str, int)) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in val_pairs
            ):
                raise ValueError(
                    "`val_pairs` must be a list of pair ids (7 or 'pair7'), got "
                    f"{val_pairs!r}"
                )
            wanted = {f"pair{v}" if isinstance(v, int) else str(v) for v in val_pairs}
            names = {p.name for p in self.pairs}
            unknown = sorted(wanted - names, key=natural_key)
            if unknown:
                raise ValueError(
                    f"`val_pairs` names pairs that {self.source_dir} does not hold: {unknown}"
                )
            self.split_pairs = {
                "train2014": [p for p in self.pairs if p.name not in wanted],
                "val2014": [p for p in self.pairs if p.name in wanted],
            }

    def _find_pairs(self) -> list:
        return find_registered_pairs(self.source_dir)

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        if count > 0 and not self.split_pairs[split]:
            raise ValueError(
                f"no pairs of {self.source_dir} are left for {split} (`val_pairs` holds them all)"
            )
        super().prepare(split, count, map_fn)

    def _load_pair(self, pair) -> _LoadedPair:
        first, second = read_image_rgb(pair.first), read_image_rgb(pair.second)
        g = pair.second_G_first
        if self.options["swap"]:
            # Input: the second image; template source: the first, mapped by G into its frame.
            inp, other, flags = second, first, cv2.INTER_LINEAR
        else:
            # Input: the first image; template source: the second, read at G x (inverse map).
            inp, other, flags = first, second, cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        size = (inp.shape[1], inp.shape[0])
        src = cv2.warpAffine(other, g, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        inside = cv2.warpAffine(
            np.full(other.shape[:2], 255, np.uint8), g, size, flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
        )
        invalid = self._black_mask(inp, src, inside != 255)
        loaded = _LoadedPair(inp, src, invalid, f"{pair.first}, {pair.second}, {pair.gt_path}")
        if invalid is not None:  # the crop-side cap, once per pair
            loaded.max_side = largest_valid_square(
                loaded.invalid_integral, float(self.options["min_valid"])
            )
        return loaded

    def _pick_crop(self, pair, loaded: _LoadedPair, rng) -> tuple[int, int, int]:
        """A side drawn in the crop range capped to the pair's largest valid square, then a
        position drawn uniformly among that side's valid crops (never fails on a small overlap,
        which rejection sampling would)."""
        ii = loaded.invalid_integral
        if ii is None:
            return super()._pick_crop(pair, loaded, rng)
        min_valid = float(self.options["min_valid"])
        cap = loaded.max_side
        if cap == 0:
            raise ValueError(f"pair {pair.name!r} ({loaded.files}): the images do not overlap")
        lo, hi = self._side_range(*loaded.input.shape[:2])
        lo, hi = min(lo, cap), min(hi, cap)
        for _ in range(int(self.options["max_tries"])):
            s = int(rng.integers(lo, hi + 1))
            ys, xs = np.nonzero(valid_squares(ii, s, min_valid))
            if len(ys):
                k = int(rng.integers(len(ys)))
                return s, int(xs[k]), int(ys[k])
        raise ValueError(  # pragma: no cover (the capped side always has a valid crop)
            f"pair {pair.name!r} ({loaded.files}): no {lo}..{hi} px square crop with >= "
            f"{min_valid:.0%} valid pixels"
        )


class DemoGenerator(SampleGenerator):
    """Offline demo: augmented views of skimage photographs (see `deeplk.data.demo`)."""

    name = "demo"
    needs_source_dir = False
    groups_by_source = False
    option_defaults = {"max_rotation_deg": 10.0, "zoom": (1.0, 1.5), "flips": True}

    def _setup(self) -> None:
        o = self.options
        if not 0 <= o["max_rotation_deg"] <= 45:
            raise ValueError(
                f"`max_rotation_deg` must be in [0, 45], got {o['max_rotation_deg']!r}"
            )
        lo, hi = o["zoom"]
        if not 1 <= lo <= hi:
            raise ValueError(f"`zoom` must be (lo, hi) with 1 <= lo <= hi, got {o['zoom']!r}")
        if self.source_dir is not None:
            warnings.warn(f"dataset {self.name!r} ignores `source_dir`", stacklevel=4)

    #: RGBA base images shared by every instance of the process (see `demo.to_rgba`).
    _rgba_bases = LRUCache(64)

    @classmethod
    def _rgba_base(cls, name: str) -> np.ndarray:
        return cls._rgba_bases.get(name, lambda: demo_mod.to_rgba(demo_mod.demo_base_image(name)))

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        if count > 0:
            for name in demo_mod.demo_image_names(split):
                self._rgba_base(name)

    def source_key(self, split: str, index: int):
        return int(self.rng(split, index).integers(len(demo_mod.demo_image_names(split))))

    def _view(self, split: str, rng: np.random.Generator):
        names = demo_mod.demo_image_names(split)
        name = names[int(rng.integers(len(names)))]
        base = self._rgba_base(name)
        o = self.options
        affine = demo_mod.view_affine(
            base.shape[:2], rng, o["max_rotation_deg"], tuple(o["zoom"]), bool(o["flips"])
        )
        return name, affine, demo_mod.render_view(base, affine)

    def sample(self, split: str, index: int) -> Sample:
        rng = self.rng(split, index)
        name, _, view = self._view(split, rng)
        return _finish(view, view, rng, name)


class DemoMultimodalGenerator(DemoGenerator):
    """Demo photographs against a synthetic second modality (``style``: map, season or mix)."""

    name = "demo_multimodal"
    option_defaults = DemoGenerator.option_defaults | {"style": "map"}
    #: Map renderings of the demo base images, shared by every instance of the process.
    _map_bases = LRUCache(64)

    def _setup(self) -> None:
        super()._setup()
        if self.options["style"] not in ("map", "season", "mix"):
            raise ValueError(
                f"`style` must be 'map', 'season' or 'mix', got {self.options['style']!r}"
            )

    def prepare(self, split: str, count: int, map_fn=map) -> None:
        super().prepare(split, count, map_fn)
        if count > 0 and self.options["style"] in ("map", "mix"):
            list(map_fn(self._map_base, demo_mod.demo_image_names(split)))

    @classmethod
    def _map_base(cls, name: str) -> np.ndarray:
        def render():
            return demo_mod.to_rgba(render_map(demo_mod.demo_base_image(name)))

        return cls._map_bases.get(name, render)

    def sample(self, split: str, index: int) -> Sample:
        rng = self.rng(split, index)
        name, affine, view = self._view(split, rng)
        style = self.options["style"]
        if style == "mix":
            style = "map" if rng.random() < 0.5 else "season"
        if style == "map":
            source = demo_mod.render_view(self._map_base(name), affine)
        else:
            source = render_season(view, rng)
        return _finish(view, source, rng, f"{name} ({style})")


#: Generator classes by dataset name.
GENERATORS: dict[str, type[SampleGenerator]] = {
    g.name: g
    for g in (
        MSCOCOGenerator,
        AlignedPairsGenerator,
        GoogleMapGenerator,
        GoogleEarthGenerator,
        RegisteredPairsGenerator,
        DemoGenerator,
        DemoMultimodalGenerator,
    )
}
