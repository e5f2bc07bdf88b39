"""deeplk.data.loader: tf.data pipeline and NumPy arrays from a DLK folder; errors name files."""

from __future__ import annotations

import shutil

import cv2
import deeplk.data as D
import numpy as np
import pytest
from deeplk.data import dlk_format as F

tf = pytest.importorskip("tensorflow")

N_TRAIN, N_VAL = 6, 7


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dlk") / "Demo"
    D.generate_dataset("demo", root, num_train=N_TRAIN, num_val=N_VAL, seed=0, progress=False)
    return root


@pytest.fixture
def copy_root(data_root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(data_root, dst)
    return dst


def _cv2_rgb01(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


class TestLoadDataset:
    def test_shapes_dtypes_values_and_remainder_batch(self, data_root):
        ds = D.load_dataset(data_root, "val2014", batch_size=3)
        batches = list(ds)
        assert [b[0].shape[0] for b in batches] == [3, 3, 1]
        inp, tpl, corners = batches[0]
        assert inp.shape == (3, 192, 192, 3) and tpl.shape == (3, 128, 128, 3)
        assert corners.shape == (3, 4, 2)
        assert inp.dtype == tf.float32 and tpl.dtype == tf.float32 and corners.dtype == tf.float32
        spec = ds.element_spec
        assert spec[0].shape.as_list() == [None, 192, 192, 3]
        assert spec[2].shape.as_list() == [None, 4, 2]
        allc = np.concatenate([b[2].numpy() for b in batches])
        names = F.list_samples(data_root, "val2014")
        for k, name in enumerate(names):
            p = F.sample_paths(data_root, "val2014", name)
            np.testing.assert_array_equal(allc[k], F.read_label(p["label"]))
        first = F.sample_paths(data_root, "val2014", names[0])
        x = inp.numpy()
        assert 0.0 <= x.min() and x.max() <= 1.0
        # the same JPEG decoded by OpenCV: equal up to decoder rounding
        assert np.abs(x[0] - _cv2_rgb01(first["input"])).mean() < 2 / 255
        assert np.abs(tpl.numpy()[0] - _cv2_rgb01(first["template"])).mean() < 2 / 255

    def test_shuffle_repeat_and_max_samples(self, data_root):
        ref = np.concatenate([b[2] for b in D.load_dataset(data_root, "val", batch_size=4)])
        sh = np.concatenate(
            [b[2] for b in D.load_dataset(data_root, "val", batch_size=4, shuffle=True, seed=1)]
        )
        sh2 = np.concatenate(
            [b[2] for b in D.load_dataset(data_root, "val", batch_size=4, shuffle=True, seed=1)]
        )
        np.testing.assert_array_equal(sh, sh2)
        assert not np.array_equal(sh, ref)
        key = lambda a: sorted(map(tuple, a.reshape(len(a), -1).tolist()))  # noqa: E731
        assert key(sh) == key(ref)
        rep = D.load_dataset(data_root, "val", batch_size=5, repeat=True, shuffle=True)
        assert sum(b[0].shape[0] for b in rep.take(4)) == 20
        few = np.concatenate(
            [b[2] for b in D.load_dataset(data_root, "val", batch_size=2, max_samples=3)]
        )
        np.testing.assert_array_equal(few, ref[:3])

    def test_a_list_of_folders_is_one_mixed_dataset(self, data_root, tmp_path):
        other = tmp_path / "Other"
        D.generate_dataset("demo", other, num_train=2, num_val=3, seed=5, progress=False)

        def labels(root, **kw):
            return np.concatenate([b[2] for b in D.load_dataset(root, "val", batch_size=4, **kw)])

        first, second = labels(data_root), labels(other)
        np.testing.assert_array_equal(labels([data_root, other]), np.concatenate([first, second]))
        np.testing.assert_array_equal(labels([data_root, other], max_samples=2),
                                      np.concatenate([first[:2], second[:2]]))
        mixed = labels([data_root, other], shuffle=True, seed=3)
        key = lambda a: sorted(map(tuple, a.reshape(len(a), -1).tolist()))  # noqa: E731
        assert key(mixed) == key(np.concatenate([first, second]))
        np.testing.assert_array_equal(mixed, labels((data_root, other), shuffle=True, seed=3))
        arrays = D.load_arrays([data_root, other], "val2014", max_samples=2, return_names=True)
        np.testing.assert_array_equal(arrays[2], np.concatenate([first[:2], second[:2]]))
        assert arrays[3] == [F.sample_name(i) for i in (0, 1, 0, 1)]
        with pytest.raises(ValueError, match="empty list"):
            D.load_dataset([], "val")
        with pytest.raises(FileNotFoundError, match="Missing"):
            D.load_dataset([data_root, tmp_path / "Missing"], "val")

    def test_load_arrays(self, data_root):
        inp, tpl, corners, names = D.load_arrays(data_root, "train2014", return_names=True)
        assert inp.shape == (N_TRAIN, 192, 192, 3) and tpl.shape == (N_TRAIN, 128, 128, 3)
        assert corners.shape == (N_TRAIN, 4, 2) and inp.dtype == np.float32
        assert names == [F.sample_name(i) for i in range(N_TRAIN)]
        b = next(iter(D.load_dataset(data_root, "train2014", batch_size=N_TRAIN)))
        np.testing.assert_array_equal(inp, b[0].numpy())
        assert D.load_arrays(data_root, "train2014", max_samples=2)[0].shape[0] == 2

    def test_load_arrays_lists_each_folder_once(self, data_root, monkeypatch):
        from deeplk.data import loader

        listed = []
        monkeypatch.setattr(loader, "list_samples",
                            lambda root, split: listed.append(root) or F.list_samples(root, split))
        names = D.load_arrays([data_root, data_root], "train2014", max_samples=2, return_names=True)[3]
        assert names == [F.sample_name(i) for i in (0, 1, 0, 1)]
        assert listed == [data_root, data_root]

    def test_argument_errors(self, data_root):
        with pytest.raises(ValueError, match="batch_size"):
            D.load_dataset(data_root, batch_size=0)
        with pytest.raises(ValueError, match="split"):
            D.load_dataset(data_root, split="test2014")
        with pytest.raises(ValueError, match="max_samples"):
            D.load_arrays(data_root, max_samples=-1)


class TestErrorsNameTheFile:
    def test_missing_folder(self, copy_root):
        shutil.rmtree(copy_root / "val2014_label")
        with pytest.raises(FileNotFoundError, match="val2014_label"):
            D.load_dataset(copy_root)
        with pytest.raises(FileNotFoundError, match="does_not_exist"):
            D.load_dataset(copy_root / "does_not_exist")

    def test_missing_label(self, copy_root):
        p = copy_root / "val2014_label" / "000002_label.txt"
        p.unlink()
        with pytest.raises(FileNotFoundError, match=str(p)):
            D.load_dataset(copy_root)

    @pytest.mark.parametrize("text", ["{oops", '{"location": [{"top_left_u": 1}]}'])
    def test_malformed_label(self, copy_root, text):
        p = copy_root / "val2014_label" / "000004_label.txt"
        p.write_text(text)
        with pytest.raises(ValueError, match=str(p)):
            D.load_dataset(copy_root)

    def test_unreadable_image(self, copy_root):
        p = copy_root / "val2014_input" / "000001.jpg"
        p.write_bytes(b"this is not an image")
        with pytest.raises(ValueError, match=f"cannot read input image {p}"):
            D.load_dataset(copy_root)

    def test_truncated_jpeg(self, copy_root):
        p = copy_root / "val2014_template" / "000003.jpg"
        p.write_bytes(p.read_bytes()[:-2000])
        with pytest.raises(ValueError, match=f"{p} is truncated"):
            D.load_dataset(copy_root)

    def test_wrong_size(self, copy_root):
        p = copy_root / "val2014_input" / "000005.jpg"
        cv2.imwrite(str(p), np.zeros((100, 120, 3), np.uint8))
        with pytest.raises(ValueError, match=f"input image {p} is 120 x 100, expected 192 x 192"):
            D.load_dataset(copy_root)

    def test_wrong_size_found_while_iterating(self, copy_root):
        p = copy_root / "val2014_template" / "000000.jpg"
        cv2.imwrite(str(p), np.zeros((64, 64, 3), np.uint8))
        ds = D.load_dataset(copy_root, batch_size=2, validate=False)
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            list(ds)

    def test_no_samples(self, tmp_path):
        for kind in ("input", "template", "label"):
            (tmp_path / f"val2014_{kind}").mkdir()
        with pytest.raises(ValueError, match="no samples"):
            D.load_dataset(tmp_path)
