"""The published figures of the DLKFM paper's comparison tables, to print beside ours.

Success rates (% of the test samples with corner error PE below each threshold of
`deeplk.evaluate.THRESHOLDS`, px) as published for the comparison of Zhao, Huang & Zhang, "Deep
Lucas-Kanade Homography for Multimodal Image Alignment" (CVPR 2021), and repeated in the README of
the same lab's PRISE repository (CVPR 2023), where DLKFM is called "DeepLK" (its rows match the
DLKFM paper's headline figures: MSCOCO 92.8% under 1 px; GoogleMap 61.3% under 3 px, 73.4% under
5 px) and DHN "DHM". Which initial guess the published DLKFM rows used is not stated there; the
original code's test script starts DLKFM from the three-stage MHN (``initial_type="multi_net"``).

`PUBLISHED[dataset]` is ``{"n": test samples, "rows": {row name: (rate per threshold, ...)}}``;
`METHOD_ROWS` maps our method names to the published row they reproduce.
`deeplk.evaluate.format_comparison` prints both side by side.
"""

from __future__ import annotations

__all__ = ["SOURCE", "PUBLISHED", "METHOD_ROWS", "published_table"]

SOURCE = (
    "Zhao, Huang & Zhang, Deep Lucas-Kanade Homography for Multimodal Image Alignment, CVPR 2021 "
    "(comparison tables, as repeated in the README of the same lab's PRISE repository, CVPR 2023)"
)

#: Our method name -> the published row it reproduces.
METHOD_ROWS = {"sift": "SIFT + RANSAC", "dhn": "DHN", "mhn": "MHN", "clkn": "CLKN", "dlkfm": "DLKFM"}

#: Success rates (%) below 0.1, 0.5, 1, 3, 5, 10, 20 px, per dataset and published row.
PUBLISHED = {
    "mscoco": {"n": 6000, "rows": {
        "SIFT + RANSAC": (0.00, 4.70, 68.32, 84.21, 90.32, 95.26, 96.55),
        "SIFT + MAGSAC": (0.00, 3.66, 76.27, 93.26, 94.22, 95.32, 97.26),
        "DHN": (0.00, 0.00, 0.87, 3.48, 15.27, 98.22, 99.96),
        "MHN": (0.00, 4.58, 81.99, 95.67, 96.02, 98.45, 98.70),
        "CLKN": (35.24, 83.25, 83.27, 94.26, 95.75, 97.52, 98.46),
        "DLKFM": (17.16, 72.25, 92.81, 96.76, 97.67, 98.92, 99.03),
    }},
    "googleearth": {"n": 850, "rows": {
        "SIFT + RANSAC": (0.18, 3.42, 8.97, 23.09, 41.32, 50.36, 59.88),
        "SIFT + MAGSAC": (0.00, 0.00, 1.88, 2.70, 3.25, 10.03, 45.29),
        "DHN": (0.00, 0.02, 1.46, 2.65, 5.57, 25.54, 90.32),
        "MHN": (0.00, 3.42, 4.56, 5.02, 8.99, 59.90, 93.77),
        "CLKN": (0.27, 2.88, 3.45, 4.24, 4.32, 8.77, 75.00),
        "DLKFM": (0.00, 3.50, 12.01, 70.20, 84.45, 90.57, 95.52),
    }},
    "googlemap": {"n": 888, "rows": {
        "SIFT + RANSAC": (0.00, 0.00, 0.00, 0.00, 0.00, 2.74, 3.44),
        "SIFT + MAGSAC": (0.00, 0.00, 0.00, 0.00, 0.00, 0.15, 2.58),
        "DHN": (0.00, 0.00, 0.00, 1.20, 3.43, 6.99, 78.89),
        "MHN": (0.00, 0.34, 0.45, 0.50, 3.50, 35.69, 93.77),
        "CLKN": (0.00, 0.00, 0.00, 1.57, 1.88, 8.67, 22.45),
        "DLKFM": (0.00, 2.25, 16.80, 61.33, 73.39, 83.20, 93.80),
    }},
}


def published_table(dataset: str) -> dict:
    """``PUBLISHED[dataset]``; a ValueError naming the known datasets otherwise.

    >>> published_table("googlemap")["rows"]["DLKFM"][3]
    61.33
    """
    if dataset not in PUBLISHED:
        raise ValueError(f"no published table for {dataset!r}; known: {sorted(PUBLISHED)}")
    return PUBLISHED[dataset]
