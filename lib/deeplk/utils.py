"""Small helpers shared by notebooks and scripts."""

from __future__ import annotations

import os
import random
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

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


class LRUCache:
    """A small thread-safe least-recently-used cache: ``get(key, load)`` calls ``load()`` once per
    key, even under concurrent requests, and keeps the last `capacity` values."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get(self, key, load: Callable[[], Any]):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key]
            value = load()
            with self._lock:
                self._data[key] = value
                while len(self._data) > self.capacity:
                    self._data.popitem(last=False)
                self._key_locks.pop(key, None)
            return value


class ContentCache:
    """A small least-recently-used memo of ``compute(array)`` keyed by the array's content
    (dtype, shape and a BLAKE2 digest of its bytes), so that one image met twice (the same input
    paired with two templates, one image scored against several estimates) is processed once.
    The key costs a hash of the bytes (about 0.2 ms for a 192 x 192 grey float32 image).

    >>> calls = []
    >>> cache = ContentCache(lambda a: calls.append(1) or float(a.sum()), size=2)
    >>> x = np.arange(4.0)
    >>> cache(x), cache(x.copy()), cache(x + 1), len(calls)
    (6.0, 6.0, 10.0, 2)
    """

    def __init__(self, compute, size: int = 8):
        self._compute = compute
        self._cache = LRUCache(size)

    def __call__(self, array: np.ndarray):
        import hashlib

        array = np.ascontiguousarray(array)
        key = (array.dtype.str, array.shape, hashlib.blake2b(array.data, digest_size=16).digest())
        return self._cache.get(key, lambda: self._compute(array))
