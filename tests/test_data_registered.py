"""deeplk.data registered pairs (``registered_pairs`` generator, `find_registered_pairs`,
`read_affine`): a pair folder made here from photographs with KNOWN affines; the template round
trip through the written labels (and its failure with a wrong transform), split by pair,
determinism, resumption, and the errors on missing or malformed transform files."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import deeplk.data as D
import numpy as np
import pytest
from deeplk.data import dlk_format as F
from deeplk.data.generators import largest_valid_square, valid_squares
from deeplk.data.protocol import homography_from_corners
from deeplk.data.sources import find_registered_pairs, read_affine

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle"]


def _season(a: np.ndarray) -> np.ndarray:
    """A pointwise "second modality" (commutes with bilinear resampling up to rounding)."""
    return (a.astype(np.float64) * 0.5 + 60).round().astype(np.uint8)


def _known_affine(k: int) -> np.ndarray:
    """second_G_first of pair k: rotation, scale, shear-free, translation (pixels)."""
    angle = np.deg2rad([12.0, -20.0, 35.0, -8.0, 25.0][k])
    scale = [1.1, 0.9, 1.0, 1.2, 0.95][k]
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    t = [[-20.0, 35.0], [30.0, 10.0], [60.0, -70.0], [-40.0, -15.0], [10.0, -60.0]][k]
    return np.array([[c, -s, t[0]], [s, c, t[1]]])


def _write(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _gt_text(g: np.ndarray) -> str:
    return "\n".join("  ".join(f"{v:.7e}" for v in row) for row in g) + "\n"


def _make_folder(root: Path, with_gt: bool = True) -> Path:
    """pair{i}_1 a photograph (300 x 340), pair{i}_2 = season(pair{i}_1 warped by G_i) at
    320 x 300 (OpenCV forward warp: pair_2(G x) = season(pair_1(x))), gt_{i}.txt = G_i."""
    root.mkdir(parents=True)
    for k, name in enumerate(PHOTOS):
        first = cv2.resize(D.load_demo_image(name), (340, 300), interpolation=cv2.INTER_AREA)
        first = np.maximum(first, 1)  # no pure black: out-of-frame pixels are the only black
        g = _known_affine(k) if with_gt else np.array([[1.0, 0, 0], [0, 1, 0]])
        size = (300, 320) if with_gt else (340, 300)
        second = _season(cv2.warpAffine(first, g, size, flags=cv2.INTER_LINEAR))
        i = k + 1
        _write(root / f"pair{i}_1.png", first)
        _write(root / f"pair{i}_2.png", second)
        if with_gt:
            (root / f"gt_{i}.txt").write_text(_gt_text(g))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("reg") / "pairs")


def _rgb(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float64)


def _round_trip(out: Path, split: str, modality):
    """Per sample: mean |template - modality(input warped by the label H)| on valid template
    pixels, and the fraction of valid pixels."""
    errs, fractions = [], []
    for name in F.list_samples(out, split):
        p = F.sample_paths(out, split, name)
        inp, tpl = _rgb(p["input"]), _rgb(p["template"])
        valid = F.read_template_mask(out, split, name)
        h = homography_from_corners(F.read_label(p["label"]))
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        pred = cv2.warpPerspective(inp, h, (128, 128), flags=flags)
        errs.append(np.abs(tpl - modality(pred))[valid].mean())
        fractions.append(valid.mean())
    return np.array(errs), np.array(fractions)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# ------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("swap", [False, True])
def test_round_trip_with_the_known_affine_and_not_with_a_wrong_one(folder, tmp_path, swap):
    counts = {"train2014": 12, "val2014": 4}
    out = tmp_path / "out"
    D.generate_dataset("registered_pairs", out, folder, counts["train2014"], counts["val2014"],
                       seed=5, progress=False, swap=swap)
    # input = pair_1, template from season(pair_2); swapped: input = season(pair_2).
    modality = (lambda x: x * 0.5 + 60) if not swap else (lambda x: (x - 60) * 2.0)
    tolerance = 5.0 if not swap else 10.0  # the swapped relation doubles the JPEG noise
    masked = 0
    for split, n in counts.items():
        assert len(F.list_samples(out, split)) == n
        errs, fractions = _round_trip(out, split, modality)
        assert errs.max() < tolerance, (split, errs)
        assert fractions.min() > 0.5
        masked += (fractions < 1).sum()
    assert masked > 0  # the rotations leave out-of-frame pixels in some templates
    # The same folder with every transform moved by 10 px: the round trip breaks.
    wrong = tmp_path / "wrong"
    shutil.copytree(folder, wrong)
    for k in range(len(PHOTOS)):
        g = _known_affine(k)
        g[:, 2] += [10.0, -10.0]
        (wrong / f"gt_{k + 1}.txt").write_text(_gt_text(g))
    out_wrong = tmp_path / "out_wrong"
    D.generate_dataset("registered_pairs", out_wrong, wrong, counts["train2014"], 0, seed=5,
                       progress=False, swap=swap)
    right_errs, _ = _round_trip(out, "train2014", modality)
    wrong_errs, _ = _round_trip(out_wrong, "train2014", modality)
    assert np.all(wrong_errs > 2 * right_errs), (right_errs, wrong_errs)
    assert wrong_errs.mean() > 2 * tolerance


def test_template_mask_marks_the_pixels_outside_the_second_image(folder):
    gen = D.make_generator("registered_pairs", folder, seed=1, min_valid=0.7)
    seen = 0
    for i in range(40):
        s = gen.sample("train2014", i)
        np.testing.assert_array_equal(
            s.template, D.make_template(s.template_source, homography_from_corners(s.corners)))
        # Valid pixels come from season(...) >= 60; out-of-frame ones are black and masked
        # (the mask is conservative: pixels next to the border are masked too).
        black = s.template.max(axis=-1) < 30
        if s.template_mask is None:
            assert not black.any()
        else:
            assert s.template[s.template_mask].min() >= 55
            seen += black.any()
    assert seen > 0


def test_aligned_folder_without_transform_files_is_identity(tmp_path):
    root = _make_folder(tmp_path / "aligned", with_gt=False)
    for p in find_registered_pairs(root):
        np.testing.assert_array_equal(p.second_G_first, [[1, 0, 0], [0, 1, 0]])
        assert p.gt_path is None
    out = tmp_path / "out"
    D.generate_dataset("registered_pairs", out, root, 6, 2, seed=0, progress=False)
    errs, fractions = _round_trip(out, "train2014", lambda x: x * 0.5 + 60)
    assert errs.max() < 5 and fractions.min() == 1.0  # same size, nothing out of frame


def test_three_by_three_transform_file_is_accepted(tmp_path):
    path = tmp_path / "gt_1.txt"
    path.write_text("0.5 -0.8 10\n0.8 0.5 -3\n0 0 1\n")
    np.testing.assert_array_equal(read_affine(path), [[0.5, -0.8, 10], [0.8, 0.5, -3]])


# ------------------------------------------------------------------------------ split, seeds


def test_split_by_pair_never_by_crop(folder):
    gen = D.make_generator("registered_pairs", folder, seed=0)
    train = {gen.sample("train2014", i).source for i in range(40)}
    val = {gen.sample("val2014", i).source for i in range(15)}
    assert val == {"pair5"} and train == {"pair1", "pair2", "pair3", "pair4"}  # last 25% is val
    gen = D.make_generator("registered_pairs", folder, seed=0, val_pairs=[2, "pair4"])
    train = {gen.sample("train2014", i).source for i in range(40)}
    val = {gen.sample("val2014", i).source for i in range(20)}
    assert val == {"pair2", "pair4"} and train == {"pair1", "pair3", "pair5"}
    with pytest.raises(ValueError, match=r"does not hold: \['pair9'\]"):
        D.make_generator("registered_pairs", folder, val_pairs=[1, 9])
    with pytest.raises(ValueError, match="list of pair ids"):
        D.make_generator("registered_pairs", folder, val_pairs=3)
    every = D.make_generator("registered_pairs", folder, val_pairs=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="no pairs .* left for train2014"):
        every.prepare("train2014", 1)


def test_deterministic_and_resumable(folder, tmp_path):
    kw = dict(num_train=10, num_val=3, seed=7, progress=False)
    D.generate_dataset("registered_pairs", tmp_path / "a", folder, workers=1, **kw)
    D.generate_dataset("registered_pairs", tmp_path / "b", folder, workers=3, **kw)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    # An interrupted run (fewer samples, one half-written, a stale temporary) then resumed.
    hurt = tmp_path / "hurt"
    D.generate_dataset("registered_pairs", hurt, folder, num_train=6, num_val=1, seed=7,
                       progress=False)
    d = F.split_dirs(hurt, "train2014")
    (d["label"] / "000004_label.txt").unlink()
    (d["template"] / ".000006.jpg.tmp").write_bytes(b"stale")
    stats = D.generate_dataset("registered_pairs", hurt, folder, **kw)
    assert stats["train2014"] == {"requested": 10, "written": 5, "existing": 5}
    assert _tree(hurt) == _tree(tmp_path / "a")
    # Another seed gives other samples.
    D.generate_dataset("registered_pairs", tmp_path / "c", folder, num_train=10, num_val=3,
                       seed=8, progress=False)
    assert _tree(tmp_path / "c") != _tree(tmp_path / "a")


# ---------------------------------------------------------------------------------- errors

BAD_TRANSFORMS = {
    "ragged": ("1 0 0\n0 1\n", "not a numeric"),
    "text": ("a b c\n0 1 0\n", "not a numeric"),
    "one row": ("1 0 0\n", "2 x 3 affine .* got shape 1 x 3"),
    "four rows": ("1 0 0\n0 1 0\n0 0 1\n1 1 1\n", "got shape 4 x 3"),
    "2 x 2": ("1 0\n0 1\n", "got shape 2 x 2"),
    "empty": ("", "2 x 3 affine"),
    "singular": ("2 4 5\n1 2 7\n", "singular"),
    "nan": ("nan 0 0\n0 1 0\n", "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_TRANSFORMS))
def test_malformed_transform_file_is_named(folder, tmp_path, case):
    text, message = BAD_TRANSFORMS[case]
    root = tmp_path / "bad"
    shutil.copytree(folder, root)
    (root / "gt_3.txt").write_text(text)
    with pytest.raises(ValueError, match=f"transform file .*gt_3\\.txt.*{message}"):
        D.make_generator("registered_pairs", root)
    with pytest.raises(ValueError, match=r"gt_3\.txt"):
        D.generate_dataset("registered_pairs", tmp_path / "out", root, 2, 1, progress=False)


def test_missing_transform_file_is_named(folder, tmp_path):
    root = tmp_path / "missing"
    shutil.copytree(folder, root)
    (root / "gt_4.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"gt_4\.txt \(pair pair4_1\.png, pair4_2\.png\)"):
        D.make_generator("registered_pairs", root)
    (root / "pair2_2.png").unlink()
    with pytest.raises(ValueError, match=r"no image matching .*pair2_1\.png"):
        D.make_generator("registered_pairs", root)
    with pytest.raises(FileNotFoundError, match="transform file not found"):
        read_affine(root / "gt_99.txt")


def test_pairs_that_do_not_overlap_are_named(tmp_path):
    root = tmp_path / "apart"
    root.mkdir()
    img = np.full((100, 100, 3), 128, np.uint8)
    _write(root / "pair1_1.png", img)
    _write(root / "pair1_2.png", img)
    (root / "gt_1.txt").write_text("1 0 500\n0 1 0\n")
    gen = D.make_generator("registered_pairs", root)
    with pytest.raises(ValueError, match=r"pair 'pair1' .*gt_1\.txt.*do not overlap"):
        gen.sample("train2014", 0)


def test_bad_options(folder):
    with pytest.raises(ValueError, match="`swap` must be True or False"):
        D.make_generator("registered_pairs", folder, swap="yes")
    with pytest.raises(ValueError, match="unknown option"):
        D.make_generator("registered_pairs", folder, input_subdir="a")


# --------------------------------------------------------------------------- valid squares


def test_valid_squares_and_largest_against_brute_force():
    rng = np.random.default_rng(0)
    invalid = np.zeros((23, 31), bool)
    invalid[:, 20:] = True
    invalid |= rng.random(invalid.shape) < 0.05
    ii = cv2.integral(invalid.astype(np.uint8), sdepth=cv2.CV_32S)
    for min_valid in (1.0, 0.9, 0.6):
        best = 0
        for s in range(1, 24):
            brute = np.array([[1 - invalid[y:y + s, x:x + s].mean() >= min_valid
                               for x in range(31 - s + 1)] for y in range(23 - s + 1)])
            np.testing.assert_array_equal(valid_squares(ii, s, min_valid), brute)
            if brute.any():
                best = s
        found = largest_valid_square(ii, min_valid)
        assert valid_squares(ii, found, min_valid).any() and found >= best - 1
    all_bad = cv2.integral(np.ones((5, 5), np.uint8), sdepth=cv2.CV_32S)
    assert largest_valid_square(all_bad, 0.5) == 0
