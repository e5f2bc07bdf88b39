"""Results documents whose tables are kept equal to the runs' ``summary.json``.

A Markdown table is tied to a run's summary by a marker line right above it::

    <!-- summary: runs/demo/evaluate_demo/summary.json -->
    | method | <0.1 px | ... |
    |---|---|...
    | identity | 0.0 | ... |

An optional ``methods=a,b,c`` after the path keeps those rows, in that order. The table is
`deeplk.evaluate.format_table` of the summary, so a document can neither drift from the run it
quotes nor round its figures differently from ``05_evaluate.ipynb``'s ``table.md``.

Several paths separated by commas make one table of the same methods evaluated on several
datasets (`deeplk.evaluate.format_set_table`: a column group per summary, named by its folder
without an ``evaluate_`` prefix)::

    <!-- summary: runs/srif_all/evaluate_Optical-Map/summary.json,runs/srif_all/evaluate_Optical-SAR/summary.json -->

An optional ``thresholds=5,10`` after the paths (and ``methods=``) sets the column groups
success rates. ``python -m deeplk.results --table PATH [PATH ...]`` prints that table for some
summaries.

Command line (paths in markers are relative to ``--root``, default the current folder)::

    python -m deeplk.results docs/RESULTS.md README.md            # rewrite the tables
    python -m deeplk.results --check docs/RESULTS.md README.md    # exit 1 when one differs

Summaries that are not on this machine (a fresh clone has no ``runs/``) are listed as not
checked; they are never an error, since a document quotes runs made elsewhere.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from deeplk.evaluate import format_set_table, format_table
from deeplk.utils import write_text_atomic

__all__ = ["Marker", "find_markers", "render_table", "set_name", "update_document", "main"]

_MARKER = re.compile(r"^<!--\s*summary:\s*(?P<path>\S+)(?:\s+methods=(?P<methods>\S+))?"
                     r"(?:\s+thresholds=(?P<thresholds>\S+))?\s*-->\s*$")


@dataclass(frozen=True)
class Marker:
    """A marked table: the marker's line index, the table's line range ``[start, stop)``, the
    summary path as written, the rows it keeps (``None``: all) and, for a table of several
    sets, the thresholds of its column groups (``None``: the default 3, 5, 10 px)."""

    line: int
    start: int
    stop: int
    path: str
    methods: tuple[str, ...] | None
    thresholds: tuple[float, ...] | None = None


def find_markers(lines: list[str], document: str = "<document>") -> list[Marker]:
    """The marked tables of a document given as lines (without line ends).

    Raises ValueError naming the document and line when a marker is not followed by a table.
    """
    markers = []
    for i, line in enumerate(lines):
        m = _MARKER.match(line.strip())
        if not m:
            continue
        start = i + 1
        stop = start
        while stop < len(lines) and lines[stop].lstrip().startswith("|"):
            stop += 1
        if stop == start:
            raise ValueError(f"{document}:{i + 1}: summary marker is not followed by a Markdown table")
        methods = tuple(m["methods"].split(",")) if m["methods"] else None
        try:
            thresholds = tuple(float(t) for t in m["thresholds"].split(",")) if m["thresholds"] else None
        except ValueError:
            raise ValueError(f"{document}:{i + 1}: `thresholds=` must be numbers separated by commas, "
                             f"got {m['thresholds']!r}") from None
        markers.append(Marker(i, start, stop, m["path"], methods, thresholds))
    return markers


def _read_summary(summary_path: Path) -> dict:
    try:
        return json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{summary_path}: not valid JSON ({exc})") from exc


def _keep(summaries: dict, methods, summary_path) -> dict:
    if methods is None:
        return summaries
    missing = [m for m in methods if m not in summaries]
    if missing:
        raise ValueError(f"{summary_path} has no method(s) {missing}; it has {list(summaries)}")
    return {m: summaries[m] for m in methods}


def set_name(summary_path) -> str:
    """The column-group name of a summary: its folder's name without an ``evaluate_`` prefix."""
    name = Path(summary_path).parent.name
    return name[len("evaluate_"):] if name.startswith("evaluate_") else name


def render_table(summary_path, methods=None, thresholds=None) -> str:
    """`format_table` of the summary at `summary_path`, restricted to `methods` (in that order);
    a list of paths gives `format_set_table` of their summaries (each restricted to `methods`),
    with column groups at `thresholds` (``None``: 3, 5, 10 px)."""
    if isinstance(summary_path, (list, tuple)):
        by_set = {set_name(p): _read_summary(Path(p)) for p in summary_path}
        if methods is not None:  # a method missing on some sets shows "-" there
            missing = [m for m in methods if not any(m in s for s in by_set.values())]
            if missing:
                raise ValueError(f"none of {[str(p) for p in summary_path]} has method(s) {missing}")
            by_set = {name: {m: s[m] for m in methods if m in s} for name, s in by_set.items()}
        if len(by_set) != len(summary_path):
            raise ValueError(f"two summaries share a folder name: {[str(p) for p in summary_path]}")
        return format_set_table(by_set) if thresholds is None else format_set_table(by_set, thresholds)
    summary_path = Path(summary_path)
    return format_table(_keep(_read_summary(summary_path), methods, summary_path))


def update_document(path, root=".", check: bool = False) -> tuple[list[str], list[str]]:
    """Rewrite (or with `check`, only compare) the marked tables of the document at `path`.

    Returns ``(differing, unchecked)``: the summary paths whose table differed (and, unless
    `check`, was rewritten) and those whose summary file is not present under `root`.
    """
    path = Path(path)
    lines = path.read_text().split("\n")
    differing, unchecked = [], []
    # replace from the end so that earlier line indices stay valid
    for marker in reversed(find_markers(lines, str(path))):
        summaries = [Path(root) / p for p in marker.path.split(",")]
        if not all(p.is_file() for p in summaries):
            unchecked.append(marker.path)
            continue
        source = summaries if len(summaries) > 1 else summaries[0]
        table = render_table(source, marker.methods, marker.thresholds).rstrip("\n").split("\n")
        if lines[marker.start:marker.stop] != table:
            differing.append(marker.path)
            lines[marker.start:marker.stop] = table
    if differing and not check:
        write_text_atomic(path, "\n".join(lines))
    return differing[::-1], unchecked[::-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplk.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("documents", nargs="+", help="Markdown files with summary markers (with --table: summary.json files)")
    parser.add_argument("--table", action="store_true", help="print one table of the given summary.json files, a column group each")
    parser.add_argument("--root", default=".", help="folder the markers' paths are relative to (default: .)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when a table differs")
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(args.documents), end="")
        return 0
    status = 0
    for doc in args.documents:
        differing, unchecked = update_document(doc, root=args.root, check=args.check)
        for p in differing:
            print(f"{doc}: table of {p} {'differs from' if args.check else 'rewritten from'} its summary")
        for p in unchecked:
            print(f"{doc}: {p} not present under {args.root}, not checked")
        if differing and args.check:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
