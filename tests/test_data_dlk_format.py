"""deeplk.data.dlk_format: label JSON (file order TL, TR, BL, BR), names, listing, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from deeplk.data import dlk_format as F

CORNERS = np.array([[12, 5], [170, 30], [150, 160], [40, 181]])  # TL, TR, BR, BL


class TestLabelJSON:
    def test_exact_text_and_file_order(self):
        text = F.label_to_json(CORNERS)
        assert text == (
            '{"location": [{"top_left_u": 12, "top_left_v": 5}, '
            '{"top_right_u": 170, "top_right_v": 30}, '
            '{"bottom_left_u": 40, "bottom_left_v": 181}, '
            '{"bottom_right_u": 150, "bottom_right_v": 160}]}'
        )
        loc = json.loads(text)["location"]
        assert [list(d) for d in loc] == [
            ["top_left_u", "top_left_v"],
            ["top_right_u", "top_right_v"],
            ["bottom_left_u", "bottom_left_v"],
            ["bottom_right_u", "bottom_right_v"],
        ]
        assert all(isinstance(v, int) for d in loc for v in d.values())

    def test_round_trip(self, tmp_path):
        p = tmp_path / "000001_label.txt"
        F.write_label(p, CORNERS)
        c = F.read_label(p)
        assert c.dtype == np.float32 and c.shape == (4, 2)
        np.testing.assert_array_equal(c, CORNERS)
        # our order TL, TR, BR, BL: BR is the third row, BL the fourth
        np.testing.assert_array_equal(c[2], [150, 160])
        np.testing.assert_array_equal(c[3], [40, 181])

    def test_reads_published_style_labels(self, tmp_path):
        """Keys are looked up by name; values outside 0..191 and floats are accepted."""
        p = tmp_path / "x_label.txt"
        p.write_text(
            json.dumps(
                {
                    "location": [
                        {"bottom_right_u": 193, "bottom_right_v": 195},
                        {"top_left_u": -2, "top_left_v": 3},
                        {"top_right_u": 160.5, "top_right_v": 0},
                        {"bottom_left_u": 1, "bottom_left_v": 170},
                    ]
                }
            )
        )
        np.testing.assert_array_equal(F.read_label(p), [[-2, 3], [160.5, 0], [193, 195], [1, 170]])

    def test_float_corners_written_as_floats(self):
        loc = json.loads(F.label_to_json(CORNERS + 0.25))["location"]
        assert loc[0]["top_left_u"] == 12.25

    @pytest.mark.parametrize(
        "text, match",
        [
            ("{not json", "malformed label JSON"),
            ('{"loc": []}', '"location" list'),
            ('{"location": [{"top_left_u": 1, "top_left_v": 2}]}', 'missing the key "top_right_u"'),
            ('{"location": [{"top_left_u": "a"}]}', "finite number"),
        ],
    )
    def test_errors_name_the_file(self, tmp_path, text, match):
        p = tmp_path / "bad_label.txt"
        p.write_text(text)
        with pytest.raises(ValueError, match=match) as e:
            F.read_label(p)
        assert str(p) in str(e.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nothere_label.txt"):
            F.read_label(tmp_path / "nothere_label.txt")

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"\(4, 2\)"):
            F.label_to_json(np.zeros(8))


class TestNames:
    def test_sample_name(self):
        assert F.sample_name(123) == "000123"
        assert F.sample_name(0) == "000000"

    def test_split_name(self):
        assert F.split_name("val") == "val2014" and F.split_name("train2014") == "train2014"
        with pytest.raises(ValueError, match="split"):
            F.split_name("test")

    def test_split_dirs(self, tmp_path):
        d = F.split_dirs(tmp_path, "train")
        assert d["input"] == tmp_path / "train2014_input"
        assert d["template"] == tmp_path / "train2014_template"
        assert d["label"] == tmp_path / "train2014_label"
        assert d["mask"] == tmp_path / "train2014_mask"

    def test_relative_paths_are_under_project_root(self):
        from deeplk.paths import project_root

        assert (
            F.split_dirs("Dataset/X", "val")["input"] == project_root() / "Dataset/X/val2014_input"
        )


def _fake_dataset(root, names, split="val2014"):
    d = F.split_dirs(root, split)
    for k in ("input", "template", "label"):
        d[k].mkdir(parents=True, exist_ok=True)
    for n in names:
        (d["input"] / f"{n}.jpg").write_bytes(b"x")
        (d["template"] / f"{n}.jpg").write_bytes(b"x")
        F.write_label(d["label"] / f"{n}_label.txt", CORNERS)
    return d


class TestListSamples:
    def test_natural_order_and_hidden_files(self, tmp_path):
        d = _fake_dataset(tmp_path, ["10", "2", "000001"])
        (d["input"] / ".000003.jpg.tmp").write_bytes(b"")
        assert F.list_samples(tmp_path) == ["000001", "2", "10"]

    def test_missing_folder(self, tmp_path):
        d = _fake_dataset(tmp_path, ["000000"])
        d["template"].rename(tmp_path / "elsewhere")
        with pytest.raises(FileNotFoundError, match="val2014_template"):
            F.list_samples(tmp_path, "val2014")
        with pytest.raises(FileNotFoundError, match="nowhere"):
            F.list_samples(tmp_path / "nowhere")

    def test_names_first_missing_file(self, tmp_path):
        d = _fake_dataset(tmp_path, ["000000", "000001", "000002"])
        (d["label"] / "000001_label.txt").unlink()
        (d["input"] / "000002.jpg").unlink()
        with pytest.raises(FileNotFoundError) as e:
            F.list_samples(tmp_path)
        assert str(d["label"] / "000001_label.txt") in str(e.value)

    def test_template_mask_default(self, tmp_path):
        _fake_dataset(tmp_path, ["000000"])
        m = F.read_template_mask(tmp_path, "val", "000000")
        assert m.shape == (128, 128) and m.all()


def test_is_downloaded_tells_a_downloaded_folder_from_a_generated_one(tmp_path):
    import deeplk.data as D

    assert not D.is_downloaded(tmp_path / "absent")
    generated = tmp_path / "generated"
    D.generate_dataset("demo", generated, num_train=0, num_val=2, seed=0, progress=False)
    assert not D.is_downloaded(generated)  # it has a manifest
    downloaded = tmp_path / "downloaded"
    shutil.copytree(generated, downloaded)
    (downloaded / D.MANIFEST_NAME).unlink()
    assert D.is_downloaded(downloaded)
    empty = tmp_path / "empty"
    (empty / "val2014_label").mkdir(parents=True)
    (empty / "val2014_label" / ".hidden_label.txt").write_text("{}")
    assert not D.is_downloaded(empty)  # no visible label file: nothing downloaded there
