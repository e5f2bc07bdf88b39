"""Keep the committed notebooks clean and checkable.

`normalise_notebook` makes a notebook's JSON canonical: a fixed kernelspec, execution counts
renumbered 1, 2, ... in order, no stderr streams (TensorFlow and tqdm noise), no papermill or
timing metadata, no injected-parameters cell, and sorted JSON keys with one-space indentation
(nbformat's own writer). `check_parameters_cell` enforces the project's rule: exactly one cell
tagged ``parameters``, holding literal assignments only.

Command line (CI runs the ``--check`` form)::

    python -m deeplk.nbtools notebooks/            # rewrite in place
    python -m deeplk.nbtools --check notebooks/    # exit 1 and list the notebooks that differ
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat

from deeplk.utils import write_text_atomic

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
_CELL_METADATA_DROP = ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime")


def check_parameters_cell(nb: nbformat.NotebookNode, path: str = "<notebook>") -> dict:
    """Return the literal parameters of the single ``parameters`` cell, or raise `ValueError`."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: {len(cells)} cells tagged 'parameters' (exactly one is required)")
    values = {}
    tree = ast.parse(cells[0].source)
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}: the parameters cell may only hold `name = literal` lines, found {ast.unparse(node)!r}")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path}: parameter {node.targets[0].id} is not a literal: {ast.unparse(node.value)!r}") from None
    return values


def normalise_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return a canonical copy of `nb` (see the module docstring)."""
    nb = nbformat.from_dict(nb)  # deep copy
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.metadata = nbformat.from_dict(
        {
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python", "pygments_lexer": "ipython3"},
        }
    )
    count = 0
    for cell in nb.cells:
        cell.pop("id", None)
        for key in _CELL_METADATA_DROP:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        has_run = cell.execution_count is not None or bool(cell.outputs)
        outputs = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue
            if "execution_count" in out:
                out["execution_count"] = None
            outputs.append(out)
        cell.outputs = outputs
        if has_run:
            count += 1
            cell.execution_count = count
            for out in outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
        else:
            cell.execution_count = None
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def _canonical_text(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def process(paths: list[Path], check: bool) -> list[Path]:
    """Normalise (or, with `check`, only compare) the notebooks; return those that differ."""
    differ = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        check_parameters_cell(nb, str(path))
        canonical = _canonical_text(normalise_notebook(nb))
        if canonical != text:
            differ.append(path)
            if not check:
                write_text_atomic(path, canonical)
    return differ


def _expand(targets: list[str]) -> list[Path]:
    paths: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            paths.extend(sorted(q for q in p.glob("*.ipynb") if not q.name.startswith(".")))
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"no notebook or folder at {p}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplk.nbtools", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a notebook is not normalised")
    args = parser.parse_args(argv)
    try:
        differ = process(_expand(args.targets), check=args.check)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in differ:
        print(("not normalised: " if args.check else "normalised: ") + str(p))
    return 1 if (args.check and differ) else 0


if __name__ == "__main__":
    sys.exit(main())
