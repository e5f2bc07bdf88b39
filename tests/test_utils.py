"""`deeplk.utils`: seeds and the atomic text writer."""

import os
import stat

import numpy as np
import pytest

from deeplk.utils import seed_everything, write_text_atomic


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
