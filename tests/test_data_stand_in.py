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
