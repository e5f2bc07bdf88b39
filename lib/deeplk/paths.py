"""Where things live: the project root and path resolution shared by notebooks and scripts.

Notebooks run with their own folder as working directory (Jupyter, nbval) or the project root
(the pipeline runner). Relative paths in notebook parameters and profiles are therefore always
read relative to the project root, whatever the working directory is.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root (the folder holding `pyproject.toml` and `lib/deeplk`).

    `DEEPLK_ROOT` overrides it; when the library is installed outside a checkout, the current
    working directory is used.
    """
    env = os.environ.get("DEEPLK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent  # lib/deeplk
    candidate = here.parent.parent
    if (candidate / "pyproject.toml").is_file() and (candidate / "lib" / "deeplk").is_dir():
        return candidate
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: `path` itself if absolute (after `~` expansion), else under the project root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else project_root() / p
