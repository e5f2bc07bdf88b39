"""Figures of an evaluation: the success-rate curves of `deeplk.evaluate`'s per-sample errors.

`deeplk.evaluate` writes the numbers (``summary.json``, tables); this module draws them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from deeplk.evaluate import THRESHOLDS, threshold_key
from deeplk.viz.figures import save_figure

__all__ = ["plot_success_curves", "save_success_curve"]


def plot_success_curves(errors_by_method: Mapping[str, np.ndarray], max_threshold: float = 20.0, ax=None):
    """Success rate (%) against threshold (log axis, 0.1 to `max_threshold` px), one curve per
    method, with markers at the paper's thresholds. Returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
    else:
        fig = ax.figure
    ts = np.geomspace(0.05, max_threshold, 200)
    marks = np.array([t for t in THRESHOLDS if t <= max_threshold], dtype=float)
    for name, errors in errors_by_method.items():
        e = np.asarray(errors, dtype=np.float64)
        curve = 100.0 * (e[None, :] < ts[:, None]).mean(axis=1)
        (line,) = ax.plot(ts, curve, label=name)
        ax.plot(marks, 100.0 * (e[None, :] < marks[:, None]).mean(axis=1), "o", color=line.get_color(), markersize=3)
    ax.set_xscale("log")
    ax.set_xticks(marks)
    ax.set_xticklabels([threshold_key(t) for t in marks])
    ax.set_xlabel("corner error threshold (px, 192 input frame)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def save_success_curve(results_dir, errors_by_method: Mapping[str, np.ndarray]) -> Path:
    """Draw `plot_success_curves` of the per-sample errors into ``<results_dir>/success_curve.png``
    (through a temporary name). Returns the path."""
    import matplotlib.pyplot as plt

    if not errors_by_method:
        raise ValueError("`errors_by_method` is empty: nothing to draw")
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_success_curves(errors_by_method)
    path = out / "success_curve.png"
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path
