"""Evaluation in the paper's metrics: corner error (PE), success rates, tables and curves.

PE of a sample = mean over the 4 corners of the L2 distance between predicted and true corners,
in the 192 input frame (pixels). A method that returns nothing for a sample (a flagged failure)
has PE = inf: it misses at every threshold and is counted in ``failures``; mean and median PE are
taken over the samples with a prediction (``n - failures`` of them).

`summarise` gives one method's record in the layout of ``summary.json``::

    {"n": int, "failures": int, "mean_pe": float, "median_pe": float,
     "success": {"0.1": pct, "0.5": pct, "1": pct, "3": pct, "5": pct, "10": pct, "20": pct},
     "ms_per_pair": float}
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from deeplk._checks import check_shape
from deeplk.utils import write_text_atomic

__all__ = [
    "THRESHOLDS",
    "format_set_table",
    "corner_errors",
    "success_rates",
    "summarise",
    "run_predictor",
    "format_table",
    "format_comparison",
    "threshold_key",
    "write_results",
]

THRESHOLDS: tuple[float, ...] = (0.1, 0.5, 1, 3, 5, 10, 20)


def threshold_key(t: float) -> str:
    """The key of threshold `t` in ``summary.json``'s ``success`` (``"0.1"``, ``"1"``, ...)."""
    return f"{t:g}"


def corner_errors(pred_corners, true_corners, failed=None) -> np.ndarray:
    """PE per sample, (B,) float64; inf where `failed` or where a prediction is not finite.

    pred_corners, true_corners: (B, 4, 2) (x, y) pixels; failed: optional (B,) bool.
    """
    pred = np.asarray(pred_corners, dtype=np.float64)
    true = np.asarray(true_corners, dtype=np.float64)
    check_shape("true_corners", true, (None, 4, 2), "(B, 4, 2) (x, y) pixels")
    check_shape("pred_corners", pred, (true.shape[0], 4, 2), "(B, 4, 2) (x, y) pixels")
    with np.errstate(invalid="ignore"):
        pe = np.linalg.norm(pred - true, axis=-1).mean(axis=-1)
    bad = ~np.isfinite(pe)
    if failed is not None:
        failed = np.asarray(failed, dtype=bool)
        check_shape("failed", failed, (true.shape[0],))
        bad |= failed
    pe[bad] = np.inf
    return pe


def success_rates(errors, thresholds=THRESHOLDS) -> dict[str, float]:
    """Percentage of samples with PE strictly below each threshold, keyed "0.1", "0.5", "1", ..."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1 or errors.size == 0:
        raise ValueError(f"`errors` must be a non-empty 1-D array of PE values, got shape {errors.shape}")
    return {threshold_key(t): float(100.0 * np.mean(errors < t)) for t in thresholds}


def summarise(errors, seconds: float | None = None) -> dict:
    """One method's record for summary.json from its per-sample PE (inf = failure).

    `seconds`: total wall time the method took over these samples (for ``ms_per_pair``).
    """
    errors = np.asarray(errors, dtype=np.float64)
    rates = success_rates(errors)
    finite = errors[np.isfinite(errors)]
    return {
        "n": int(errors.size),
        "failures": int(errors.size - finite.size),
        "mean_pe": float(finite.mean()) if finite.size else None,
        "median_pe": float(np.median(finite)) if finite.size else None,
        "success": rates,
        "ms_per_pair": None if seconds is None else float(1000.0 * seconds / errors.size),
    }


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def run_predictor(predict, inputs: np.ndarray, templates: np.ndarray, batch_size: int = 64,
                  warm_up: bool = False, progress: bool = False, desc: str | None = None):
    """Run ``predict(inputs, templates) -> (corners, failed)`` over the samples in batches and time it.

    Args:
        predict: a method's predictor (`deeplk.methods`).
        inputs, templates: ``(N, ...)`` arrays of the pairs.
        batch_size: pairs per call.
        warm_up: first call `predict` untimed once per batch shape the loop uses (full batches
            and the remainder), so that graph tracing and XLA compilation are not counted.
        progress, desc: a tqdm progress bar and its label.

    Returns:
        ``(corners (N, 4, 2) float64, failed (N,) bool, seconds)``: ``seconds`` is the wall time
        of the timed calls only (data loading excluded).
    """
    from tqdm.auto import tqdm

    n = len(inputs)
    if n == 0:
        raise ValueError("no samples to evaluate")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    if warm_up:
        for size in sorted({min(batch_size, n), n % batch_size} - {0}):
            predict(inputs[:size], templates[:size])
    corners = np.full((n, 4, 2), np.nan)
    failed = np.zeros(n, dtype=bool)
    seconds = 0.0
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        stop = min(start + batch_size, n)
        t0 = time.perf_counter()
        c, f = predict(inputs[start:stop], templates[start:stop])
        seconds += time.perf_counter() - t0
        corners[start:stop], failed[start:stop] = c, f
    return corners, failed, seconds


def format_table(summaries: Mapping[str, dict], fmt: str = "markdown") -> str:
    """The paper's layout: one row per method, success rate (%) per threshold, then mean and
    median PE (px), failures and ms per pair. `fmt` is "markdown" or "csv"."""
    header = ["method"] + [f"<{threshold_key(t)} px" for t in THRESHOLDS] + ["mean PE", "median PE", "failures", "n", "ms/pair"]
    rows = []
    for name, s in summaries.items():
        rows.append(
            [name]
            + [_fmt(s["success"][threshold_key(t)], 1) for t in THRESHOLDS]
            + [_fmt(s["mean_pe"]), _fmt(s["median_pe"]), str(s["failures"]), str(s["n"]), _fmt(s["ms_per_pair"])]
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buf.getvalue()
    raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")


def format_set_table(summaries_by_set: Mapping[str, Mapping[str, dict]], thresholds=(3, 5, 10)) -> str:
    """One Markdown table for several evaluations of the same methods (one per dataset): a row
    per method (in first-seen order), and for each dataset a column group of the success rates
    (%) at `thresholds` and the median PE (px); "-" where a method was not evaluated on a set."""
    keys = [threshold_key(t) for t in thresholds]
    unknown = [t for t, k in zip(thresholds, keys) if k not in {threshold_key(u) for u in THRESHOLDS}]
    if unknown:
        raise ValueError(f"`thresholds` {unknown} are not among the evaluated {list(THRESHOLDS)}")
    header = ["method"]
    for name in summaries_by_set:
        header += [f"{name} <{k} px" for k in keys] + [f"{name} median PE"]
    methods = list(dict.fromkeys(m for summaries in summaries_by_set.values() for m in summaries))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        row = [method]
        for summaries in summaries_by_set.values():
            s = summaries.get(method)
            row += (["-"] * (len(keys) + 1) if s is None else
                    [_fmt(s["success"][k], 1) for k in keys] + [_fmt(s["median_pe"])])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def format_comparison(summaries: Mapping[str, dict], dataset: str) -> str:
    """Our success rates beside the paper's, as a Markdown table in the paper's layout.

    One column per threshold; for each of our methods its row (``ours``) followed, when the paper
    reports that method (`deeplk.published.METHOD_ROWS`), by the published row (``paper``); then
    the published rows of methods we did not run. `dataset`: a key of
    `deeplk.published.PUBLISHED` (``"mscoco"``, ``"googleearth"``, ``"googlemap"``).
    """
    from deeplk.published import METHOD_ROWS, SOURCE, published_table

    table = published_table(dataset)
    header = ["method", "row", "n"] + [f"<{threshold_key(t)} px" for t in THRESHOLDS]
    rows, shown = [], set()
    for name, s in summaries.items():
        rows.append([name, "ours", str(s["n"])] + [_fmt(s["success"][threshold_key(t)], 2) for t in THRESHOLDS])
        paper = METHOD_ROWS.get(name)
        if paper in table["rows"] and paper not in shown:
            shown.add(paper)
            rows.append([paper, "paper", str(table["n"])] + [_fmt(v, 2) for v in table["rows"][paper]])
    for paper, values in table["rows"].items():
        if paper not in shown:
            rows.append([paper, "paper", str(table["n"])] + [_fmt(v, 2) for v in values])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + f"\n\nSuccess rate (%): samples with corner error below each threshold. Paper rows: {SOURCE}.\n"


def write_results(results_dir, summaries: Mapping[str, dict], errors_by_method: Mapping[str, np.ndarray] | None = None,
                  paper_table: str | None = None) -> dict[str, Path]:
    """Write summary.json, table.md, table.csv, (with errors) per_sample_pe.csv and (with
    `paper_table`, a dataset of `deeplk.published.PUBLISHED`) paper_table.md, our rows beside
    the paper's (`format_comparison`), into `results_dir`, each through a temporary name. Returns
    the paths. (The success-rate curve is a figure: `deeplk.viz.save_success_curve`.)"""
    comparison = None if paper_table is None else format_comparison(summaries, paper_table)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "markdown": out / "table.md", "csv": out / "table.csv"}
    write_text_atomic(paths["summary"], json.dumps(dict(summaries), indent=2) + "\n")
    write_text_atomic(paths["markdown"], format_table(summaries, "markdown"))
    write_text_atomic(paths["csv"], format_table(summaries, "csv"))
    if comparison is not None:
        paths["paper_table"] = out / "paper_table.md"
        write_text_atomic(paths["paper_table"], comparison)
    if errors_by_method:
        names = list(errors_by_method)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sample"] + names)
        columns = [np.asarray(errors_by_method[n]) for n in names]
        for i in range(len(columns[0])):
            writer.writerow([i] + [f"{c[i]:.4f}" if np.isfinite(c[i]) else "failed" for c in columns])
        paths["per_sample"] = out / "per_sample_pe.csv"
        write_text_atomic(paths["per_sample"], buf.getvalue())
    return paths
