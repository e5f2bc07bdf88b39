"""The offline demo source: real photographs shipped inside scikit-image, and their augmentation.

Only images bundled in the scikit-image wheel are used (no network, no `pooch`), and only real
photographs (no synthetic drawings, no near-empty microscopy frames, no retina with its large
black border). Grey photographs are replicated to RGB. A fixed hold-out keeps val content unseen:

- train (10): astronaut, brick, camera, chelsea, coins, grass, hubble_deep_field,
  immunohistochemistry, moon, rocket
- val (4): coffee, gravel, motorcycle (left view of ``stereo_motorcycle``), page

Each image is decoded once per process and resized (area averaging) so that its shorter side is
at most `BASE_SHORT_SIDE` px. A sample is one view of a base image: a random rotation (up to
+-`max_rotation_deg`), horizontal and vertical flips (probability 1/2 each) and a random zoom
(`zoom` times the smallest zoom at which the rotated 320 x 240 view still fits inside the
image) give a 240 x 320 view, as the MSCOCO protocol's resized image; a random 192 x 192 crop of
it is the sample's input. Both steps are composed into a single affine warp (one interpolation).
"""

from __future__ import annotations

import functools
import math
import threading

import cv2
import numpy as np

#: Demo photographs used for the train split (skimage.data names; "motorcycle" is the left view
#: of ``stereo_motorcycle``).
DEMO_TRAIN_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coins",
    "grass",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "rocket",
)
#: Demo photographs held out for the val split.
DEMO_VAL_IMAGES = ("coffee", "gravel", "motorcycle", "page")
#: Base images are shrunk so that their shorter side is at most this.
BASE_SHORT_SIDE = 320
#: The MSCOCO protocol's resized image size, (h, w).
VIEW_SIZE = (240, 320)

_lock = threading.Lock()


def demo_image_names(split: str) -> tuple[str, ...]:
    """The photographs of a split (``"train2014"`` or ``"val2014"``)."""
    return DEMO_TRAIN_IMAGES if split == "train2014" else DEMO_VAL_IMAGES


def load_demo_image(name: str) -> np.ndarray:
    """A demo photograph at full size as (H, W, 3) uint8 RGB (grey replicated)."""
    import skimage.data

    if name == "motorcycle":
        img = skimage.data.stereo_motorcycle()[0]
    elif name in DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES:
        img = getattr(skimage.data, name)()
    else:
        raise ValueError(
            f"unknown demo image {name!r}; known: {DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES}"
        )
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


@functools.cache
def _base_image_cached(name: str) -> np.ndarray:
    img = load_demo_image(name)
    h, w = img.shape[:2]
    s = BASE_SHORT_SIDE / min(h, w)
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    img.setflags(write=False)
    return img


def demo_base_image(name: str) -> np.ndarray:
    """The base image of a demo photograph (shorter side <= 320), read-only, cached per process."""
    with _lock:
        return _base_image_cached(name)


def to_rgba(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> read-only (H, W, 4) RGBA: OpenCV warps 4-channel images ~3x faster, with
    the same values in the colour channels."""
    out = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    out.setflags(write=False)
    return out


def view_affine(
    base_shape: tuple[int, int],
    rng: np.random.Generator,
    max_rotation_deg: float = 10.0,
    zoom: tuple[float, float] = (1.0, 1.5),
    flips: bool = True,
) -> np.ndarray:
    """Draw a random 192 x 192 view of a base image: the (2, 3) affine map output -> base pixels.

    Args:
        base_shape: (h, w) of the base image.
        rng: random generator; draws, in order: rotation, flips (if `flips`), zoom, view centre,
            crop offset.
        max_rotation_deg: rotation drawn uniformly in +-this.
        zoom: range of the zoom factor relative to the smallest zoom at which the rotated
            320 x 240 view fits inside the base image.
        flips: horizontal and vertical flips, each with probability 1/2.

    Returns:
        (2, 3) float64 ``M`` with ``base_xy = M @ (x, y, 1)`` for output pixel (x, y); use with
        ``cv2.warpAffine(base, M, (192, 192), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)``.
    """
    h, w = base_shape
    vh, vw = VIEW_SIZE
    theta = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
    fx, fy = (1.0, 1.0)
    if flips:
        fx = -1.0 if rng.random() < 0.5 else 1.0
        fy = -1.0 if rng.random() < 0.5 else 1.0
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    # Zoom z = output px per base px; the rotated view's half extents in base px are ex, ey.
    z_min = max((vw * c + vh * s) / (w - 1.0), (vw * s + vh * c) / (h - 1.0))
    z = z_min * rng.uniform(zoom[0], zoom[1])
    ex, ey = (vw * c + vh * s) / (2 * z), (vw * s + vh * c) / (2 * z)
    cx = rng.uniform(ex - 0.5, (w - 0.5) - ex) if w - 1 > 2 * ex else (w - 1) / 2
    cy = rng.uniform(ey - 0.5, (h - 0.5) - ey) if h - 1 > 2 * ey else (h - 1) / 2
    x0 = rng.integers(0, vw - 192 + 1)
    y0 = rng.integers(0, vh - 192 + 1)
    # output (x, y) -> view (x + x0, y + y0) -> centred, flipped, rotated, scaled -> base:
    # base = A (view - view_centre) + (cx, cy) with A = rotation(theta) @ diag(fx, fy) / z.
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    a00, a01, a10, a11 = cos_t * fx / z, -sin_t * fy / z, sin_t * fx / z, cos_t * fy / z
    px, py = (vw - 1) / 2 - int(x0), (vh - 1) / 2 - int(y0)
    return np.array(
        [[a00, a01, cx - (a00 * px + a01 * py)], [a10, a11, cy - (a10 * px + a11 * py)]],
        dtype=np.float64,
    )


def render_view(base: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The 192 x 192 RGB view of `base` ((H, W, 3) RGB or (H, W, 4) RGBA uint8) under `affine`
    (from `view_affine`). Pass RGBA (`to_rgba`) for speed; the result is the same."""
    if base.shape[2] == 3:
        base = cv2.cvtColor(base, cv2.COLOR_RGB2RGBA)
    view = cv2.warpAffine(
        base,
        affine,
        (192, 192),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return cv2.cvtColor(view, cv2.COLOR_RGBA2RGB)
