"""How well `deeplk.align`'s confidence separates right from wrong results, photographs and
photographs against another modality, on more pairs than the tests.

Sets (demo photographs at 640 x 480, pairs made here with random homographies, corners moved by
up to `--amp` of the size):

- ``photo``: image_b a warped copy, aligned by ``lk`` and ``hybrid``;
- ``unrelated``: two different photographs (``hybrid``): every result should be flagged;
- ``map`` / ``season``: image_b warped and rendered in that modality (`deeplk.data.modality`),
  scored at the true homography (``true``), at the true one shifted by 20 px of the 192 frame
  (``shift``), and aligned by ``lk_mind`` and ``hybrid``.

Prints, per set, how many results are right (corner error under 3 px of the photo) and wrong
(over 10 px), the fraction of each flagged as failed, the peak ratio's quartiles, and the AUC of
the confidence between right and wrong results over all sets (the probability that a right
result scores higher than a wrong one). Example::

    python bench/align_confidence.py --seeds 3
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import deeplk  # noqa: E402
from deeplk import alignment  # noqa: E402
from deeplk.data.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, load_demo_image  # noqa: E402
from deeplk.data.modality import render_modality  # noqa: E402

NAMES = DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES
SIZE = (640, 480)


def _corners(shape_hw) -> np.ndarray:
    h, w = shape_hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def _pair(a, rng, amp):
    h, w = a.shape[:2]
    src = _corners((h, w)).astype(np.float32)
    dst = (src + rng.uniform(-amp, amp, (4, 2)) * [w, h]).astype(np.float32)
    a_H_b = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    b = cv2.warpPerspective(a, a_H_b, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return b, a_H_b


def _error(H, a_H_b, shape_b) -> float:
    if not np.all(np.isfinite(H)):
        return np.inf
    true = cv2.perspectiveTransform(_corners(shape_b)[None], a_H_b)[0]
    return float(np.linalg.norm(cv2.perspectiveTransform(_corners(shape_b)[None], H)[0] - true, axis=1).mean())


def _given(a, b, a_H_b):
    """A predictor placing both of `align`'s templates where `a_H_b` puts them."""
    H192 = alignment._scaling(a.shape[:2], 192) @ a_H_b @ np.linalg.inv(alignment._scaling(b.shape[:2], 192))

    def predict(inputs, templates):
        return np.stack([alignment._corners(H192 @ alignment._translation(x0, y0), (128, 128))
                         for x0, y0 in alignment._template_offsets()]), np.zeros(2, bool)

    return predict


def _auc(pos, neg) -> float:
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg))) if pos.size and neg.size else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="pairs per photograph and set")
    parser.add_argument("--amp", type=float, default=0.06)
    args = parser.parse_args()
    photos = {n: cv2.resize(load_demo_image(n), SIZE, interpolation=cv2.INTER_AREA) for n in NAMES}
    rows = defaultdict(list)  # set -> [(error, confidence, failed, peak ratio)]
    shift = alignment._translation(14.0, -14.0)  # 19.8 px of the 192 frame

    def add(key, r, a_H_b):
        rows[key].append((_error(r.H, a_H_b, r.shape_b) if a_H_b is not None else np.inf, r.confidence, r.failed,
                          r.details.get("peak_ratio")))

    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        for i, n in enumerate(NAMES):
            a = photos[n]
            b, a_H_b = _pair(a, rng, 0.2 if seed % 2 else args.amp)
            for method in ("lk", "hybrid"):
                add(f"photo {method}", deeplk.align(a, b, method=method), a_H_b)
            add("unrelated hybrid", deeplk.align(a, photos[NAMES[(i + 1 + seed) % len(NAMES)]]), None)
            for style in ("map", "season"):
                b, a_H_b = _pair(a, rng, args.amp)
                b = render_modality(b, style, rng)
                Sa = alignment._scaling(a.shape[:2], 192)
                wrong = np.linalg.inv(Sa) @ shift @ Sa @ a_H_b
                add(f"{style} true", deeplk.align(a, b, method="identity", predictor=_given(a, b, a_H_b)), a_H_b)
                add(f"{style} shift", deeplk.align(a, b, method="identity", predictor=_given(a, b, wrong), refine_size=0),
                    a_H_b)
                for method in ("lk_mind", "hybrid"):
                    add(f"{style} {method}", deeplk.align(a, b, method=method), a_H_b)
    print(f"{len(NAMES)} photographs x {args.seeds} seeds; load average {os.getloadavg()[0]:.1f}")
    print(f"{'set':18s} {'right':>6s} {'flagged':>8s} {'wrong':>6s} {'flagged':>8s}   peak ratio of right / wrong (25, 50, 75 %)")
    right_conf, wrong_conf = [], []
    for key, values in rows.items():
        e, c, f, p = (np.array([v[k] for v in values], dtype=float) for k in range(4))
        right, wrong = e < 3, e > 10
        right_conf += list(c[right])
        wrong_conf += list(c[wrong])

        def q(mask):
            return "/".join(f"{x:.2f}" for x in np.nanpercentile(p[mask], [25, 50, 75])) if np.any(mask & np.isfinite(p)) else "-"

        fr = f"{100 * f[right].mean():7.1f}%" if right.any() else f"{'-':>8s}"
        fw = f"{100 * f[wrong].mean():7.1f}%" if wrong.any() else f"{'-':>8s}"
        print(f"{key:18s} {right.sum():6d} {fr} {wrong.sum():6d} {fw}   {q(right)} / {q(wrong)}")
    print(f"confidence AUC right vs wrong, all sets: {_auc(right_conf, wrong_conf):.4f} "
          f"({len(right_conf)} right, {len(wrong_conf)} wrong)")


if __name__ == "__main__":
    main()
