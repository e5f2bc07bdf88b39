"""`deeplk.utils`: seeds, the atomic text writer and the caches."""

import os
import stat

import numpy as np
import pytest

import threading

from deeplk.utils import ContentCache, LRUCache, seed_everything, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "summary.json"
    write_text_atomic(p, "old")
    write_text_atomic(p, "new")
    assert p.read_text() == "new"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


def test_write_text_atomic_uses_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "a.txt"
    write_text_atomic(p, "complete")
    with pytest.raises(TypeError):
        write_text_atomic(p, 123)  # not text: fails while writing
    assert p.read_text() == "complete"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_seed_everything_repeats_numpy_draws():
    a = seed_everything(7).random(3), np.random.random(3)
    b = seed_everything(7).random(3), np.random.random(3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_write_bytes_atomic_writes_exact_bytes_and_leaves_no_temporary(tmp_path):
    from deeplk.utils import write_bytes_atomic

    p = tmp_path / "x.png"
    data = bytes(range(256)) * 3
    write_bytes_atomic(p, data)
    assert p.read_bytes() == data
    with pytest.raises(TypeError):
        write_bytes_atomic(p, "text")  # not bytes: fails while writing
    assert p.read_bytes() == data
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.png"]


def test_content_cache_computes_once_per_content_and_forgets_the_oldest():
    calls = []
    cache = ContentCache(lambda a: calls.append(a.copy()) or float(a.sum()), size=2)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache(x) == cache(x.copy()) == 15.0  # same content, another array: one computation
    assert len(calls) == 1
    assert cache(x.reshape(3, 2)) == 15.0 and len(calls) == 2  # same bytes, another shape: new key
    assert cache(x.astype(np.float64)) == 15.0 and len(calls) == 3  # another dtype: new key
    y = x.copy()
    y[0, 0] = 1  # one element changed: new content
    assert cache(y) == 16.0 and len(calls) == 4
    cache(x)  # x was evicted (size 2): computed again
    assert len(calls) == 5
    assert cache(x[:, ::2]) == 10.0  # a non-contiguous view is keyed by its values


def test_lru_cache_loads_each_key_once_under_concurrent_requests():
    cache = LRUCache(4)
    started = threading.Event()
    loads = []

    def load():
        loads.append(1)
        started.wait(1.0)
        return "value"

    threads = [threading.Thread(target=lambda: cache.get("k", load)) for _ in range(4)]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join()
    assert loads == [1] and cache.get("k", load) == "value"
