"""Speed and accuracy of the batched 3-level Lucas-Kanade aligner on grey 192/128 pairs.

Builds N synthetic pairs with the DLKFM protocol (each template corner of the centred 128 square
of a 192 image perturbed uniformly in [-rho, rho), template = the 192 image warped by that
homography, ``cv2.warpPerspective(..., INTER_LINEAR | WARP_INVERSE_MAP)``), from crops of the
photographs bundled with scikit-image (or smoothed noise), converted to grey. Then, for XLA on and
off, runs `deeplk.lk.align_images` (3-level pyramid from the centred guess) at batch 1 (one call
per pair) and at batch B (default 64), after a warm-up call whose time (tracing + compilation)
is reported separately, and prints milliseconds per pair (best of --repeats runs over all pairs),
the success rate (mean corner error below 1 px) and the median corner error.

Example::

    python bench/lk_speed.py --pairs 64 --batch 64 --repeats 3
    python bench/lk_speed.py --data noise --ecc        # also time cv2.findTransformECC

Numbers depend on the machine and its load (a shared 2-core VM varies by +-20 %); compare
settings within one run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deeplk  # noqa: E402,F401  (before TensorFlow, Keras, OpenCV: quiets their start-up lines)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplk import geometry, lk  # noqa: E402

CENTRE = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
          "hubble_deep_field", "camera", "brick", "grass", "gravel", "moon", "coins", "page",
          "text", "retina", "colorwheel"]


def source_images(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 192, 192)`` float32 grey images in [0, 1]."""
    out = []
    if kind == "photos":
        import skimage.data

        library = []
        for name in PHOTOS:
            image = np.asarray(getattr(skimage.data, name)())
            if image.ndim == 3:
                image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
            library.append(image.astype(np.float32) / 255.0)
        for i in range(n):
            image = library[i % len(library)]
            h, w = image.shape
            side = int(rng.integers(min(192, h, w), min(h, w) + 1))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = image[y:y + side, x:x + side]
            out.append(cv2.resize(crop, (192, 192), interpolation=cv2.INTER_AREA))
    else:
        for _ in range(n):
            noise = cv2.GaussianBlur(rng.random((192, 192)).astype(np.float32), (0, 0), 3.0)
            out.append((noise - noise.min()) / (noise.max() - noise.min()))
    return np.stack(out)


def make_pairs(images: np.ndarray, rho: int, rng: np.random.Generator):
    """DLKFM protocol: inputs ``(n, 192, 192, 1)``, templates ``(n, 128, 128, 1)``, true input
    corners ``(n, 4, 2)``."""
    n = len(images)
    corners = CENTRE + rng.integers(-rho, rho, size=(n, 4, 2))
    H = geometry.corners_to_homography(corners, 128).numpy().astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    templates = np.stack([cv2.warpPerspective(im, h, (128, 128), flags=flags)
                          for im, h in zip(images, H)])
    return images[..., None], templates[..., None], corners


def time_lk(inputs, templates, batch: int, repeats: int, **kwargs):
    """Warm-up seconds, best ms per pair, and the estimates of the last run."""
    n = len(inputs)
    chunks = [(tf.constant(inputs[i:i + batch]), tf.constant(templates[i:i + batch]))
              for i in range(0, n, batch)]
    start = time.perf_counter()
    for shape in {c[0].shape[0] for c in chunks}:  # one warm-up per distinct batch size
        c = next(c for c in chunks if c[0].shape[0] == shape)
        lk.align_images(c[0], c[1], **kwargs).H.numpy()
    warmup = time.perf_counter() - start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        results = [lk.align_images(i, t, **kwargs) for i, t in chunks]
        H = np.concatenate([r.H.numpy() for r in results])
        best = min(best, time.perf_counter() - start)
    failed = np.concatenate([r.failed.numpy() for r in results])
    return warmup, best * 1000.0 / n, H, failed


def ecc(inputs, templates, iterations: int):
    """cv2.findTransformECC (homography, from the centred guess), ms per pair and estimates."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-4)
    out = []
    start = time.perf_counter()
    for inp, tmpl in zip(inputs[..., 0], templates[..., 0]):
        warp = np.array([[1, 0, 32], [0, 1, 32], [0, 0, 1]], np.float32)
        try:
            _, warp = cv2.findTransformECC(tmpl, inp, warp, cv2.MOTION_HOMOGRAPHY, criteria,
                                           None, 5)
        except cv2.error:
            pass
        out.append(warp)
    return (time.perf_counter() - start) * 1000.0 / len(inputs), np.stack(out)


def report(name, ms, H, corners, failed=None, warmup=None):
    errors = geometry.corner_error(
        geometry.homography_to_corners(tf.constant(H, tf.float64), 128), corners).numpy()
    errors = np.where(np.isfinite(errors), errors, np.inf)
    extra = f"  warm-up {warmup:6.2f} s" if warmup is not None else ""
    fails = f"  flagged {int(failed.sum()):3d}" if failed is not None else ""
    print(f"{name:34s} {ms:8.3f} ms/pair  success<1px {100 * np.mean(errors < 1):5.1f} %  "
          f"<0.1px {100 * np.mean(errors < 0.1):5.1f} %  median PE {np.median(errors):8.4f}"
          f"{fails}{extra}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=64, help="number of pairs (default 64)")
    parser.add_argument("--batch", type=int, default=64, help="large batch size (default 64)")
    parser.add_argument("--data", choices=["photos", "noise"], default="photos")
    parser.add_argument("--rho", type=int, default=32, help="corner perturbation (px)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is kept)")
    parser.add_argument("--iterations", type=int, nargs="+", default=None,
                        help="max iterations per level, coarsest first (default: library's)")
    parser.add_argument("--tolerance", type=float, nargs="+", default=None,
                        help="per level, coarsest first (default: library's)")
    parser.add_argument("--blur", type=float, default=1.0, help="blur sigma (coarse levels)")
    parser.add_argument("--no-batch1", action="store_true", help="skip the batch-1 runs")
    parser.add_argument("--xla", choices=["both", "on", "off"], default="both")
    parser.add_argument("--ecc", action="store_true", help="also time cv2.findTransformECC")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    inputs, templates, corners = make_pairs(source_images(args.data, args.pairs, rng), args.rho,
                                            rng)
    print(f"{args.pairs} {args.data} pairs, rho {args.rho}, 3-level LK on grey 192/128, "
          f"iterations {args.iterations or 'default'}, tolerance {args.tolerance or 'default'}, "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    identity = np.tile(geometry.centred_homography(192, 128).numpy(), (args.pairs, 1, 1))
    report("identity (centred guess)", 0.0, identity, corners)
    settings = dict(levels=3, max_iterations=args.iterations, tolerance=args.tolerance,
                    blur_sigma=args.blur)
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.xla]
    batches = ([1] if not args.no_batch1 else []) + [args.batch]
    for xla in modes:
        for batch in batches:
            repeats = 1 if batch == 1 else args.repeats
            warmup, ms, H, failed = time_lk(inputs, templates, batch, repeats,
                                            jit_compile=xla, **settings)
            report(f"LK batch {batch:3d} {'XLA' if xla else 'no XLA'}", ms, H, corners, failed,
                   warmup)
    if args.ecc:
        ms, H = ecc(inputs, templates, 50)
        report("cv2.findTransformECC (1 level)", ms, H, corners)


if __name__ == "__main__":
    main()
