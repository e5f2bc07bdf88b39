"""Small helpers shared by notebooks and scripts."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy, TensorFlow and Keras from one integer; return a NumPy Generator.

    Notebooks call this once, in their first code cell after the parameters.
    """
    seed = int(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:  # TensorFlow is optional for data-only scripts
        import keras

        keras.utils.set_random_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)


def write_text_atomic(path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then `os.replace`.

    A reader (or a rerun after a crash) sees the old file or the complete new one, never half of
    it; the temporary file is removed if writing fails. The file gets the ordinary permissions
    of a new file (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
    """
    _write_atomic(path, text, "w")


def write_bytes_atomic(path, data: bytes) -> None:
    """`write_text_atomic` for bytes (an encoded PNG, say)."""
    _write_atomic(path, data, "wb")


def _write_atomic(path, data, mode: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
