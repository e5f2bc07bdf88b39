"""`deeplk.align` on whole photographs: milliseconds per pair, and the range of motion it recovers.

Speed (default): for each training-free method, ms per pair of ``deeplk.align`` (reading excluded,
resizing to the methods' frames, the two starts, the refinement and the confidence included) on
photographs at their own size and enlarged to 1920 x 1080 and 4000 x 3000, each paired with a
copy warped by a small known homography; and, for comparison, the method's own ms per pair on the
192 / 128 DLK frames of the same pairs (one pair per call), as registered (with its divergence
flags, what the evaluation times) and as ``align`` builds it (without them). Warm-up calls (graph
tracing, XLA compilation) are not timed, and the pairs are timed in turn, so that the memos of
SIFT keypoints and MIND descriptors (which serve an image met twice within one call) never serve
a repeated call.

Range (``--sweep``): the recovery rate (corner error under 2 px of a 640 x 480 image) and the
flagged rate of ``align`` for one motion at a time: translation (fraction of the image side),
scale ratio and rotation (degrees, about the centre), over the demo photographs.

Photographs: the scikit-image demo photographs (offline) or ``--images DIR`` (e.g. MS-COCO
val2014 images you downloaded). Example::

    python bench/align.py --methods hybrid lk sift --repeats 3
    python bench/align.py --sweep --methods hybrid lk

Numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import deeplk  # noqa: E402
from deeplk.data.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, load_demo_image  # noqa: E402

TRAINING_FREE = ("identity", "sift", "orb", "ecc", "lk", "hybrid")


def _photos(folder, limit: int) -> list[tuple[str, np.ndarray]]:
    if folder:
        from deeplk.data.sources import list_images, read_image_rgb

        return [(p.name, read_image_rgb(p)) for p in list_images(folder)[:limit]]
    names = (DEMO_VAL_IMAGES + DEMO_TRAIN_IMAGES)[:limit]
    return [(n, load_demo_image(n)) for n in names]


def _corners(shape_hw) -> np.ndarray:
    h, w = shape_hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def _warp(a: np.ndarray, a_H_b: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    return cv2.warpPerspective(a, a_H_b, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)


def _random_pair(a: np.ndarray, rng, amp: float = 0.05):
    h, w = a.shape[:2]
    src = _corners((h, w)).astype(np.float32)
    dst = (src + rng.uniform(-amp, amp, (4, 2)) * [w, h]).astype(np.float32)
    a_H_b = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    return _warp(a, a_H_b), a_H_b


def _error(result, a_H_b, shape_b) -> float:
    true = cv2.perspectiveTransform(_corners(shape_b)[None], a_H_b)[0]
    return float(np.linalg.norm(result.corners - true, axis=1).mean())


def _frame_time(predict, frames, repeats: int) -> float:
    """Median ms of `predict` on one DLK sample, the samples timed in turn."""
    predict(frames[-1][0], frames[-1][1])  # warm-up of the batch-1 shape
    times = []
    for _ in range(repeats):
        for inputs, templates in frames:
            t0 = time.perf_counter()
            predict(inputs, templates)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def speed(photos, methods, repeats: int) -> None:
    from deeplk import alignment as align_module
    from deeplk.methods import get_method

    rng = np.random.default_rng(0)
    sizes = {"own size": None, "1920x1080": (1920, 1080), "4000x3000": (4000, 3000)}
    print("ms per pair; the last two columns: the method on one 192 / 128 DLK sample, as registered "
          "(what the evaluation times) and as align builds it (no divergence flags)")
    print(f"{'method':<10}" + "".join(f"{k:>12}" for k in sizes) + f"{'DLK sample':>12}{'(align)':>10}")
    for method in methods:
        predict = align_module._predictor(method, None)  # as deeplk.align builds it
        row = []
        for size in sizes.values():
            pairs = []
            for _, img in photos:
                a = img if size is None else cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
                b, _ = _random_pair(a, rng)
                pairs.append((a, b))
            deeplk.align(*pairs[-1], method=method, predictor=predict)  # warm-up of this size
            t = []
            for _ in range(repeats):
                for a, b in pairs:
                    t0 = time.perf_counter()
                    deeplk.align(a, b, method=method, predictor=predict)
                    t.append(time.perf_counter() - t0)
            row.append(1000 * float(np.median(t)))
            if size is None:  # the centred start's DLK sample of each pair
                frames = [tuple(x[:1] for x in align_module._frames(align_module.load_image(a),
                                                                  align_module.load_image(b))[:2])
                          for a, b in pairs]
                registered = _frame_time(get_method(method), frames, repeats)
                as_align = _frame_time(predict, frames, repeats)
        print(f"{method:<10}" + "".join(f"{v:>12.0f}" for v in row) + f"{registered:>12.0f}{as_align:>10.0f}",
              flush=True)


def sweep(photos, methods) -> None:
    photos = [(n, cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)) for n, img in photos]
    w, h = 640, 480
    C = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1]])

    def similarity(shift=0.0, scale=1.0, angle=0.0):
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        M = np.array([[scale * c, -scale * s, shift * w], [scale * s, scale * c, shift * h], [0, 0, 1]])
        return C @ M @ np.linalg.inv(C)

    motions = [("translation", "shift", v, {"shift": v}) for v in (0.05, 0.1, 0.15, 0.2, 0.3)]
    motions += [("scale", "ratio", v, {"scale": v}) for v in (0.6, 0.75, 0.9, 1.15, 1.33, 1.6)]
    motions += [("rotation", "deg", v, {"angle": v}) for v in (5, 10, 15, 20, 30, 45)]
    print(f"recovered (corner error < 2 px of 640x480) / flagged failed, over {len(photos)} photographs")
    print(f"{'motion':<12}{'value':>7}" + "".join(f"{m:>18}" for m in methods))
    for kind, _, value, params in motions:
        cells = []
        for method in methods:
            ok = flagged = 0
            for _, a in photos:
                a_H_b = similarity(**params)
                b = _warp(a, a_H_b)
                r = deeplk.align(a, b, method=method)
                ok += _error(r, a_H_b, b.shape[:2]) < 2.0
                flagged += r.failed
            n = len(photos)
            cells.append(f"{100 * ok / n:5.0f}% / {100 * flagged / n:3.0f}%")
        print(f"{kind:<12}{value:>7g}" + "".join(f"{c:>18}" for c in cells), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(TRAINING_FREE))
    p.add_argument("--images", default=None, help="folder of photographs (default: the demo photographs)")
    p.add_argument("--limit", type=int, default=6, help="photographs used (default 6)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sweep", action="store_true", help="recovery rate against translation, scale, rotation")
    args = p.parse_args(argv)
    photos = _photos(args.images, args.limit)
    if args.sweep:
        sweep(photos, args.methods)
    else:
        speed(photos, args.methods, args.repeats)


if __name__ == "__main__":
    main()
