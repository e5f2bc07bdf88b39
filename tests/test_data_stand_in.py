"""deeplk.data.stand_in: offline raw data that the paper datasets' generators read as they read
the real raw folders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import deeplk.data as D
from deeplk.data import sources
from deeplk.data.stand_in import STAND_IN_DATASETS, stand_in_layout, write_stand_in


@pytest.mark.parametrize("dataset", STAND_IN_DATASETS)
def test_the_real_generator_reads_it_and_a_second_call_writes_nothing(dataset, tmp_path):
    raw = tmp_path / "raw"
    written = write_stand_in(dataset, raw, num_train=5, num_val=3)
    assert set(written) == set(stand_in_layout(dataset))
    counts = {"train2014": 5, "val2014": 3} if dataset == "mscoco" else dict.fromkeys(written, 8)
    assert written == counts
    assert write_stand_in(dataset, raw, num_train=5, num_val=3) == dict.fromkeys(written, 0)
    stats = D.generate_dataset(dataset, tmp_path / "dlk", source_dir=raw, num_train=5, num_val=3, progress=False)
    assert stats["train2014"]["written"] == 5 and stats["val2014"]["written"] == 3
    inputs, templates, corners = D.load_arrays(tmp_path / "dlk", "val2014")
    assert inputs.shape == (3, 192, 192, 3) and templates.shape == (3, 128, 128, 3)
    assert not list(raw.rglob(".*"))  # no temporary files left


def test_mscoco_images_are_colour_and_the_pair_modalities_differ(tmp_path):
    write_stand_in("mscoco", tmp_path / "coco", num_train=12, num_val=4)
    for path in sorted((tmp_path / "coco").rglob("*.jpg")):
        assert not sources.is_grey_image(path), path  # the MS-COCO generator would skip it
        assert cv2.imread(str(path)).shape == (240, 320, 3)
    write_stand_in("googlemap", tmp_path / "gm", num_train=2, num_val=1)
    photo = sources.read_image_rgb(tmp_path / "gm" / "satellite" / "000000.jpg").astype(float)
    rendered = sources.read_image_rgb(tmp_path / "gm" / "map" / "000000.png").astype(float)
    assert photo.shape == rendered.shape and np.abs(photo - rendered).mean() > 10


def test_image_i_is_a_pure_function_of_its_index(tmp_path):
    write_stand_in("googleearth", tmp_path / "a", num_train=3, num_val=1)
    write_stand_in("googleearth", tmp_path / "b", num_train=1, num_val=1)
    for sub in stand_in_layout("googleearth"):
        for name in ("000000.jpg", "000001.jpg"):
            assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "b" / sub / name).read_bytes()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="no stand-in data for dataset 'demo'"):
        write_stand_in("demo", tmp_path)
    with pytest.raises(ValueError, match="num_val"):
        write_stand_in("googlemap", tmp_path, num_val=0)


def test_registered_pair_affine_maps_first_pixels_onto_second(monkeypatch):
    """Known answer: with a linear-ramp photograph (bilinear resampling is exact on it) and no map
    rendering, ``second(q) = first(G^-1 q)`` holds to uint8 rounding wherever ``G^-1 q`` is inside
    `first`; the identity (no transform) misses by far more."""
    from deeplk.data import stand_in

    def ramp(rng, name, size):
        v, u = np.mgrid[0:520, 0:560].astype(np.float64)
        return np.clip(np.rint(np.stack([20 + 0.3 * u + 0.1 * v, 30 + 0.1 * u + 0.35 * v, 40 + 0.2 * (u + v)],
                                        axis=-1)), 0, 255).astype(np.uint8)

    monkeypatch.setattr(stand_in, "_scaled_base", ramp)
    monkeypatch.setattr(stand_in, "render_map", lambda img: img)
    first, second, g = stand_in.stand_in_pair(3)
    assert first.shape == second.shape == (400, 400, 3) and g.shape == (2, 3)
    assert not np.allclose(g, [[1, 0, 0], [0, 1, 0]], atol=1e-3)
    first_f = first.astype(np.float64)

    def first_at(points):  # first is a ramp too: its value at real points, by least squares
        v, u = np.mgrid[0:400, 0:400].reshape(2, -1).astype(np.float64)
        design = np.stack([u, v, np.ones_like(u)], axis=1)
        coef, *_ = np.linalg.lstsq(design, first_f.reshape(-1, 3), rcond=None)
        return np.stack([points[:, 0], points[:, 1], np.ones(len(points))], axis=1) @ coef

    q = np.stack(np.meshgrid(np.arange(400.0), np.arange(400.0)), axis=-1).reshape(-1, 2)
    x = (q - g[:, 2]) @ np.linalg.inv(g[:, :2]).T
    inside = np.all((x > 0) & (x < 399), axis=1)
    assert inside.mean() > 0.9
    got = second.reshape(-1, 3).astype(np.float64)[inside]
    assert np.abs(got - first_at(x[inside])).max() < 1.6
    assert np.abs(got - first_at(q[inside])).max() > 5


def test_registered_pairs_files_hold_the_pair_and_its_affine(tmp_path):
    from deeplk.data import stand_in

    written = write_stand_in("registered_pairs", tmp_path, num_train=2, num_val=1)
    assert written == {"pair*_1.jpg": 3, "pair*_2.jpg": 3, "gt_*.txt": 3}
    pairs = sources.find_registered_pairs(tmp_path)
    assert [p.name for p in pairs] == ["pair1", "pair2", "pair3"]
    for i, pair in enumerate(pairs, start=1):
        first, second, g = stand_in.stand_in_pair(i)
        np.testing.assert_allclose(pair.second_G_first, g, rtol=0, atol=1e-12)
        assert sources.read_image_rgb(pair.first).shape == (400, 400, 3)
        assert np.abs(sources.read_image_rgb(pair.first).astype(float) - first).mean() < 3  # JPEG
    (tmp_path / "pair2_2.jpg").unlink()
    assert write_stand_in("registered_pairs", tmp_path, num_train=2, num_val=1) == {
        "pair*_1.jpg": 0, "pair*_2.jpg": 1, "gt_*.txt": 0}
