"""Bad input gives a clear error naming the file (or a flagged failure), never a late crash or
silent garbage. Complements the cases already covered elsewhere:

- missing folder / missing label / malformed label / unreadable / truncated (validated) /
  wrong size: tests/test_data_loader.py::TestErrorsNameTheFile; label JSON errors:
  tests/test_data_dlk_format.py; missing, empty and unreadable generation sources:
  tests/test_data_generate.py::test_missing_and_empty_sources, ::test_unreadable_and_unmatched_files;
- textureless templates and non-finite features: tests/test_lk.py::TestLucasKanade::
  test_textureless_template_fails_cleanly, ::test_non_finite_features_flag_failure,
  tests/test_baselines.py::test_textureless_template_is_a_flagged_failure;
- NaN losses never reach the weights: tests/test_train.py::TestNonFiniteGuard.

Here: errors found *while iterating* (``validate=False``, or damage the header check cannot
see) name the file, out-of-range and degenerate labels, grey and RGBA images, an empty dataset
folder, mismatched counts, degenerate corner draws in generation, and results without NaN.
"""

from __future__ import annotations

import json
import shutil

import cv2
import deeplk.data as D
import numpy as np
import pytest
from deeplk.data import dlk_format as F
from deeplk.data import protocol as P
from deeplk.geometry_np import is_convex_quad
from deeplk.data.loader import check_label

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "Demo"
    D.generate_dataset("demo", root, num_train=2, num_val=5, seed=0, progress=False)
    return root


@pytest.fixture
def root(data_root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(data_root, dst)
    return dst


def _damage_middle(path):
    """Overwrite 100 bytes in the middle of the entropy-coded data with 0xFF (libjpeg fails)."""
    data = path.read_bytes()
    n = len(data)
    path.write_bytes(data[: n // 2] + b"\xff" * 100 + data[n // 2 + 100:])


# ------------------------------------------------------------- decoding errors name the file


class TestDecodeErrorsNameTheFile:
    @pytest.mark.parametrize("validate", [False, True])
    def test_jpeg_damaged_in_the_middle(self, root, validate):
        # The header and the end marker are intact: even the up-front check passes.
        p = root / "val2014_template" / "000002.jpg"
        _damage_middle(p)
        ds = D.load_dataset(root, batch_size=2, validate=validate)
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            list(ds)

    @pytest.mark.parametrize("damage", ["truncated", "not an image", "empty"])
    def test_unvalidated_bad_files(self, root, damage):
        p = root / "val2014_input" / "000001.jpg"
        data = p.read_bytes()
        p.write_bytes({"truncated": data[: len(data) // 2], "not an image": b"hello",
                       "empty": b""}[damage])
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            list(D.load_dataset(root, batch_size=3, validate=False))

    @pytest.mark.parametrize("batch_size", [1, 2, 5])
    def test_last_sample(self, root, batch_size):
        # Dropping a failing element must not hide it, even when it ends the dataset (and
        # would end a batch, or fill a whole last batch).
        p = root / "val2014_input" / "000004.jpg"
        p.write_bytes(b"broken")
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            list(D.load_dataset(root, batch_size=batch_size, validate=False))

    def test_shuffled_repeated_pipeline(self, root):
        p = root / "val2014_template" / "000003.jpg"
        _damage_middle(p)
        ds = D.load_dataset(root, batch_size=2, shuffle=True, seed=3, repeat=True, validate=False)
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            list(ds.take(10))

    def test_load_arrays_names_the_file(self, root):
        p = root / "val2014_input" / "000000.jpg"
        _damage_middle(p)
        with pytest.raises(tf.errors.InvalidArgumentError, match=str(p)):
            D.load_arrays(root, validate=False)

    def test_clean_pipeline_is_unchanged(self, data_root):
        # The checks drop nothing and reorder nothing: the same samples as the label files,
        # every sample once per epoch, a stateless shuffle that depends on the seed only.
        names = F.list_samples(data_root, "val2014")
        want = np.stack([F.read_label(F.sample_paths(data_root, "val2014", n)["label"])
                         for n in names])
        got = np.concatenate([b[2] for b in D.load_dataset(data_root, batch_size=2)])
        np.testing.assert_array_equal(got, want)
        shuffled = D.load_dataset(data_root, batch_size=5, shuffle=True, seed=1, repeat=True)
        epochs = [b[2].numpy() for b in shuffled.take(3)]
        for e in epochs:
            assert sorted(map(tuple, e.reshape(5, -1).tolist())) == \
                sorted(map(tuple, want.reshape(5, -1).tolist()))
        assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # reshuffled
        tf.random.set_seed(123)  # the global seed does not matter
        again = D.load_dataset(data_root, batch_size=5, shuffle=True, seed=1, repeat=True)
        np.testing.assert_array_equal([b[2].numpy() for b in again.take(3)], epochs)

    def test_iterator_state_is_checkpointable(self, data_root, tmp_path):
        # deeplk.train's data_resume="state" needs a serialisable pipeline.
        ds = D.load_dataset(data_root, batch_size=2, shuffle=True, seed=0, repeat=True)
        it = iter(ds)
        next(it)
        ckpt = tf.train.Checkpoint(data=it)
        path = ckpt.write(str(tmp_path / "it"))
        expected = [next(it)[2].numpy() for _ in range(3)]
        it2 = iter(ds)
        tf.train.Checkpoint(data=it2).read(path).expect_partial()
        np.testing.assert_array_equal([next(it2)[2].numpy() for _ in range(3)], expected)


# --------------------------------------------------------------------------------- labels


class TestLabels:
    @pytest.mark.parametrize("corners, match", [
        ([[32, 32], [159, 32], [159, 159], [32, 1e6]], "out of range"),
        ([[32, 32], [159, 32], [159, 159], [-500, 159]], "out of range"),
        ([[0, 0], [50, 0], [100, 0], [0, 100]], "degenerate"),       # collinear
        ([[32, 32], [32, 159], [159, 159], [159, 32]], "degenerate"),  # mirrored order
        ([[32, 32], [159, 159], [159, 32], [32, 159]], "degenerate"),  # crossed
    ])
    def test_implausible_label_names_the_file(self, root, corners, match):
        p = root / "val2014_label" / "000003_label.txt"
        p.write_text(F.label_to_json(np.array(corners, np.float64)))
        with pytest.raises(ValueError, match=f"label {p} is {match}"):
            D.load_dataset(root)

    def test_published_style_labels_slightly_outside_are_accepted(self):
        c = np.array([[-3, 2], [194, -1], [190, 195], [1, 189]], np.float32)
        np.testing.assert_array_equal(check_label(c, "x"), c)

    def test_every_protocol_draw_is_accepted(self):
        rng = np.random.default_rng(0)
        for _ in range(200):
            check_label(P.sample_corners(rng).astype(np.float32), "x")

    @pytest.mark.parametrize("text", ['{"location": [{"top_left_u": NaN}]}',
                                      '{"location": [{"top_left_u": "12"}]}', "[]", ""])
    def test_malformed_values(self, root, text):
        p = root / "val2014_label" / "000001_label.txt"
        p.write_text(text)
        with pytest.raises(ValueError, match=str(p)):
            D.load_dataset(root)


# ---------------------------------------------------------------------------- image modes


class TestImageModes:
    def test_grey_jpeg_is_replicated_to_rgb(self, root):
        p = root / "val2014_input" / "000002.jpg"
        grey = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY)
        assert cv2.imwrite(str(p), grey)
        x = D.load_arrays(root)[0][2]
        np.testing.assert_array_equal(x[..., 0], x[..., 1])
        np.testing.assert_array_equal(x[..., 1], x[..., 2])
        assert np.abs(x[..., 0] * 255 - grey).mean() < 2

    def test_rgba_image_names_the_file(self, root):
        p = root / "val2014_template" / "000000.jpg"
        rgba = np.full((128, 128, 4), 200, np.uint8)
        ok, png = cv2.imencode(".png", rgba)
        p.write_bytes(png.tobytes())  # a PNG with alpha under a .jpg name
        with pytest.raises(ValueError, match=f"template image {p} has mode RGBA"):
            D.load_dataset(root)

    def test_rgba_and_grey_sources_in_generation(self, tmp_path):
        # Alpha is dropped, grey replicated: generation still yields RGB samples.
        src = tmp_path / "pairs"
        src.mkdir()
        img = cv2.resize(D.load_demo_image("astronaut"), (200, 200))
        rgba = np.concatenate([img, np.full((200, 200, 1), 7, np.uint8)], axis=-1)
        assert cv2.imwrite(str(src / "00_a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        assert cv2.imwrite(str(src / "00_b.png"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        out = tmp_path / "out"
        with pytest.warns(UserWarning, match="single pair"):
            D.generate_dataset("aligned_pairs", out, src, num_train=2, num_val=1, seed=0,
                               progress=False)
        inputs, templates, _ = D.load_arrays(out, "train2014")
        assert inputs.shape == (2, 192, 192, 3) and templates.shape == (2, 128, 128, 3)
        np.testing.assert_array_equal(templates[..., 0], templates[..., 2])  # grey source


# ------------------------------------------------------------------- folders and counts


class TestFoldersAndCounts:
    def test_empty_dataset_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=f"missing input folder: {tmp_path}"):
            D.load_dataset(tmp_path)

    def test_input_without_template_or_label(self, root):
        extra = root / "val2014_input" / "000099.jpg"
        shutil.copy(root / "val2014_input" / "000000.jpg", extra)
        with pytest.raises(FileNotFoundError,
                           match=r"sample '000099' of val2014 is incomplete: missing .*"
                                 r"val2014_template/000099\.jpg"):
            D.load_dataset(root)

    def test_template_without_input(self, root):
        (root / "val2014_input" / "000004.jpg").unlink()
        with pytest.raises(FileNotFoundError, match=r"missing .*val2014_input/000004\.jpg"):
            D.load_arrays(root)


# ------------------------------------------------------------------------------ generation


class _ScriptedRng:
    """Returns the scripted corner offsets, then the real generator's."""

    def __init__(self, scripted, rng):
        self.scripted, self.rng = list(scripted), rng

    def integers(self, lo, hi, size=None):
        if self.scripted:
            return np.asarray(self.scripted.pop(0))
        return self.rng.integers(lo, hi, size=size)


def test_degenerate_corner_draws_are_redrawn():
    # A draw putting TL, TR and BR on one line (y = 0) would give a degenerate H.
    bad = np.array([[0, 0], [128, 0], [160, 0], [0, 128]])
    collinear = bad - P.CORNER_BOX_ORIGINS
    assert not is_convex_quad(bad, P.MIN_CROSS)
    corners = P.sample_corners(_ScriptedRng([collinear], np.random.default_rng(1)))
    assert is_convex_quad(corners, P.MIN_CROSS) and not np.array_equal(corners, bad)
    with pytest.raises(RuntimeError, match="no convex corner set"):
        P.sample_corners(_ScriptedRng([collinear] * 3, np.random.default_rng(1)), max_tries=3)


# -------------------------------------------------------------------- no NaN in the results


def test_unflagged_nan_predictions_are_failures_and_results_hold_no_nan(tmp_path):
    from deeplk import evaluate as E

    true = np.tile(P.TEMPLATE_CORNERS.astype(np.float64) + 32, (4, 1, 1))
    pred = true + 0.25
    pred[1] = np.nan  # a method that returned NaN without flagging it
    pred[2, 0, 0] = np.inf
    errors = {"m": E.corner_errors(pred, true, failed=[False, False, False, True])}
    summary = {"m": E.summarise(errors["m"], seconds=0.1)}
    assert summary["m"]["failures"] == 3 and summary["m"]["n"] == 4
    assert summary["m"]["success"]["1"] == pytest.approx(25.0)
    paths = E.write_results(tmp_path / "res", summary, errors)

    def no_constants(name):
        raise AssertionError(f"{name} in summary.json")

    saved = json.loads(paths["summary"].read_text(), parse_constant=no_constants)
    assert saved["m"]["mean_pe"] == pytest.approx(0.25 * np.sqrt(2))
    all_failed = E.summarise(np.full(2, np.inf))
    json.dumps(all_failed, allow_nan=False)  # None, not NaN, when nothing succeeded


# ------------------------------------------------------------------------------ safe loading


def test_library_never_unpickles():
    """Data files are JPEG/PNG/JSON, checkpoints TensorFlow/HDF5: no code path may unpickle.
    Every ``np.load`` must pass ``allow_pickle=False``; no pickle, joblib, dill or
    ``torch.load`` anywhere in the library."""
    import re
    from pathlib import Path

    lib = Path(D.__file__).resolve().parents[1]
    offenders = []
    for path in sorted(lib.rglob("*.py")):
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\b(import pickle|from pickle|pickle\.loads?|joblib|dill|"
                         r"torch\.load|allow_pickle\s*=\s*True)\b", code):
                offenders.append(f"{path.relative_to(lib)}:{k}: {line.strip()}")
            if re.search(r"\bnp\.load\(", code) and "allow_pickle=False" not in code:
                offenders.append(f"{path.relative_to(lib)}:{k}: {line.strip()}")
    assert offenders == []
