"""`deeplk.align` and the `deeplk-align` command on real photographs (scikit-image's, offline)
warped by known homographies."""

import itertools
import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

import deeplk
from deeplk import alignment as align_module
from deeplk.data.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, load_demo_image


def _photo(name: str, size) -> np.ndarray:
    """A demo photograph resized to ``size`` = (w, h), uint8 RGB."""
    img = load_demo_image(name)
    w, h = size
    shrink = w <= img.shape[1] and h <= img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _corners_of(shape_hw) -> np.ndarray:
    h, w = shape_hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def _warped_pair(a: np.ndarray, rng, amp: float = 0.08, size_b=None):
    """``(b, a_H_b)``: image_b = image_a seen through a random homography (each corner of b moved
    by up to `amp` of the image size in a), so that ``b(x) = a(a_H_b x)``."""
    h, w = a.shape[:2]
    wb, hb = size_b or (w, h)
    src = _corners_of((hb, wb)).astype(np.float32)
    dst = (_corners_of((h, w)) + rng.uniform(-amp, amp, (4, 2)) * [w, h]).astype(np.float32)
    a_H_b = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    b = cv2.warpPerspective(a, a_H_b, (wb, hb), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
    return b, a_H_b


def _error(result, a_H_b, shape_b) -> float:
    """Mean distance (px of image_a) between image_b's corners placed by the result and truly."""
    true = cv2.perspectiveTransform(_corners_of(shape_b)[None], a_H_b)[0]
    return float(np.linalg.norm(result.corners - true, axis=1).mean())


# --------------------------------------------------------------------------------------------
# Frames: known answers with the centred guess (no estimation involved)
# --------------------------------------------------------------------------------------------


class TestFrames:
    def test_same_image_any_aspect_gives_identity(self):
        a = _photo("coffee", (640, 360))
        r = deeplk.align(a, a, method="identity", refine_size=0)
        np.testing.assert_allclose(r.H, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(r.corners, _corners_of(a.shape[:2]), atol=1e-6)

    def test_resized_copy_gives_the_resize_map(self):
        # b = a at half size: cv2.resize maps b pixel x to a pixel (x + 0.5) * 2 - 0.5
        a = _photo("astronaut", (512, 384))
        b = cv2.resize(a, (256, 192), interpolation=cv2.INTER_AREA)
        r = deeplk.align(a, b, method="identity", refine_size=0)
        expected = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
        np.testing.assert_allclose(r.H, expected, atol=1e-9)

    def test_second_start_sees_the_offset_template(self):
        """The identity method puts both templates in the centre: the two starts then disagree by
        exactly the template offset. On the same image the centred start is right (kept, not
        flagged); on a shifted copy neither is, and the result is flagged."""
        a = _photo("coffee", (600, 400))
        offset = np.hypot(*align_module.SECOND_START_OFFSET)
        same = deeplk.align(a, a, method="identity", refine_size=0)
        assert same.details["disagreement_px"] == pytest.approx(offset, abs=1e-6)
        assert same.details["start"] == "centred" and not same.failed
        shifted = deeplk.align(a, a[40:, 60:], method="identity", refine_size=0)
        assert shifted.details["disagreement_px"] == pytest.approx(offset, abs=1e-6)
        assert shifted.failed


# --------------------------------------------------------------------------------------------
# Known homographies on real photographs, several sizes: hybrid to under 1 px
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, size_b",
    [
        ("coffee", (640, 480), None),
        ("chelsea", (1920, 1080), None),
        ("astronaut", (700, 1000), None),  # a non-square (portrait) crop
        ("motorcycle", (900, 600), (450, 300)),  # image_b at half image_a's resolution
    ],
)
def test_hybrid_recovers_known_homographies(name, size, size_b):
    rng = np.random.default_rng(21)
    a = _photo(name, size)
    for _ in range(2):
        b, a_H_b = _warped_pair(a, rng, amp=0.08, size_b=size_b)
        r = deeplk.align(a, b)
        err = _error(r, a_H_b, b.shape[:2])
        assert err < 1.0, (name, size, err, r.details)
        assert not r.failed and r.confidence > 0.5
        assert r.H[2, 2] == pytest.approx(1.0) and r.seconds > 0
        assert r.shape_a == a.shape[:2] and r.shape_b == b.shape[:2]


def test_input_forms_give_the_same_homography(tmp_path):
    """Grey, RGBA, 16-bit, float and files of each: the same pair, the same answer."""
    rng = np.random.default_rng(3)
    a = _photo("coffee", (640, 480))
    b, a_H_b = _warped_pair(a, rng)
    ref = deeplk.align(a, b)
    grey_a, grey_b = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "a16.png"), grey_a.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(b, cv2.COLOR_RGB2BGRA))
    forms = [
        (a.astype(np.uint16) * 257, np.dstack([b, np.full(b.shape[:2], 255, np.uint8)])),
        (a.astype(np.float32) / 255, b),
        (tmp_path / "a16.png", str(tmp_path / "b.png")),
        (grey_a, grey_b[..., None]),
    ]
    for fa, fb in forms:
        r = deeplk.align(fa, fb)
        assert _error(r, a_H_b, b.shape[:2]) < 1.0
    # grey loses colour, so only the colour forms must agree closely (resizing rounds to the
    # input's own bit depth: 8-bit and 16-bit frames differ by ~1/255 grey levels)
    for fa, fb in forms[:2]:
        np.testing.assert_allclose(deeplk.align(fa, fb).corners, ref.corners, atol=1e-2)


def test_init_h_reaches_beyond_the_methods_range():
    """image_b a tile far from image_a's centre and at another scale: out of range alone, found
    from a rough guess (corners ~10 px off)."""
    a = _photo("coffee", (1200, 800))
    a_H_b = np.array([[1.6, 0.05, 700.0], [-0.04, 1.55, 420.0], [0, 0, 1]])
    b = cv2.warpPerspective(a, a_H_b, (250, 200), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    rough = a_H_b.copy()
    rough[:2, 2] += (9.0, -7.0)
    r = deeplk.align(a, b, init_H=rough)
    assert _error(r, a_H_b, b.shape[:2]) < 1.0 and not r.failed
    with pytest.raises(ValueError, match="init_H"):
        deeplk.align(a, b, init_H=np.eye(2))
    with pytest.raises(ValueError, match="init_H"):
        deeplk.align(a, b, init_H=np.array([[1, 0, 5000.0], [0, 1, 0], [0, 0, 1]]))


def test_range_beyond_the_protocol_prior():
    """`align` accepts results beyond the DLK protocol's range (its confidence judges them), so it
    builds the LK methods without their divergence flags: a 25 % shift (about 48 px and more of
    the 192 frame, every corner 50-55 px) is recovered by ``hybrid`` through SIFT, while the
    method with its default flags rejects it by the protocol's prior."""
    from deeplk.methods import get_method

    a = _photo("coffee", (640, 480))
    a_H_b = np.array([[1.0, 0, 0.27 * 640], [0, 1, 0.25 * 480], [0, 0, 1]])
    b = cv2.warpPerspective(a, a_H_b, (640, 480), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
    r = deeplk.align(a, b)
    assert not r.failed and _error(r, a_H_b, b.shape[:2]) < 1.0, r.details
    inputs, templates, _, _ = align_module._frames(a, b)
    _, failed = get_method("hybrid")(inputs, templates)
    assert failed.all()


@pytest.mark.parametrize("method", ["sift", "orb", "ecc", "lk", "hybrid"])
def test_every_training_free_method(method):
    from deeplk.methods import available_methods

    assert method in available_methods()
    rng = np.random.default_rng(5)
    a = _photo("astronaut", (640, 480))
    b, a_H_b = _warped_pair(a, rng, amp=0.04)
    r = deeplk.align(a, b, method=method)
    assert r.method == method
    assert not r.failed, r.details
    assert _error(r, a_H_b, b.shape[:2]) < 1.0


def test_learned_method_without_checkpoint_names_the_folder(tmp_path):
    a = _photo("coffee", (320, 240))
    with pytest.raises(FileNotFoundError, match="dlkfm"):
        deeplk.align(a, a, method="dlkfm", checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# The confidence: separates good from bad results, flags unrelated pairs
# --------------------------------------------------------------------------------------------


def test_confidence_separates_good_from_bad_and_flags_unrelated_pairs():
    names = DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES
    photos = {n: _photo(n, (640, 480)) for n in names}
    rng = np.random.default_rng(11)
    good, bad = [], []
    # `lk` from the centred start on large motions fails often: both kinds of results occur
    for n, (method, amp) in itertools.product(names[::2], [("lk", 0.05), ("lk", 0.2), ("hybrid", 0.25)]):
        b, a_H_b = _warped_pair(photos[n], rng, amp=amp)
        r = deeplk.align(photos[n], b, method=method)
        err = _error(r, a_H_b, b.shape[:2])
        if err < 3:
            good.append(r.confidence)
        elif err > 10:
            bad.append(r.confidence)
    assert len(good) >= 10 and len(bad) >= 3, (len(good), len(bad))
    assert min(good) > 0.3 > max(bad), (sorted(good)[:3], sorted(bad)[-3:])
    unrelated = [deeplk.align(photos[x], photos[y]) for x, y in itertools.permutations(names, 2)][::4]
    flagged = np.mean([r.failed for r in unrelated])
    assert len(unrelated) >= 40 and flagged >= 0.95, flagged


def _given(a_shape, b_shape, a_H_b):
    """A predictor returning, for both of `align`'s starts, the template corners that `a_H_b`
    (image_b -> image_a, original pixels) puts in the 192 frames: `align` scores that estimate."""
    a192_H_b192 = align_module._scaling(a_shape, 192) @ a_H_b @ np.linalg.inv(align_module._scaling(b_shape, 192))

    def predict(inputs, templates):
        corners = [align_module._corners(a192_H_b192 @ align_module._translation(x0, y0), (128, 128))
                   for x0, y0 in align_module._template_offsets()]
        return np.stack(corners), np.zeros(2, bool)

    return predict


def _other_modality(name: str, style: str, seed: int):
    """``(a, b, a_H_b)``: a demo photo (640 x 480) and, as image_b, a warped copy rendered in
    `style` (`deeplk.data.modality`)."""
    from deeplk.data.modality import render_modality

    rng = np.random.default_rng(seed)
    a = _photo(name, (640, 480))
    b, a_H_b = _warped_pair(a, rng, amp=0.06)
    return a, render_modality(b, style, rng), a_H_b


@pytest.mark.parametrize("style", ["map", "season"])
def test_confidence_holds_across_modalities(style):
    """A photo against its rendering as a map or in another season: the true homography is not
    flagged (intensities and their gradients differ, the MIND descriptor's minimum is sharp); the
    same shifted by 20 px of the 192 frame (about 67 px of the photo) is. Not "brick": a periodic
    texture matches sharply one period off too (there only the second start's disagreement can
    tell, and here both starts are given the same answer)."""
    shift = align_module._translation(14.0, -14.0)  # 19.8 px
    names = [n for n in DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES if n != "brick"]
    for i, name in enumerate(names[::2]):
        a, b, a_H_b = _other_modality(name, style, seed=i)
        Sa = align_module._scaling(a.shape[:2], 192)
        wrong = np.linalg.inv(Sa) @ shift @ Sa @ a_H_b
        right = deeplk.align(a, b, method="identity", predictor=_given(a.shape[:2], b.shape[:2], a_H_b))
        assert not right.failed, (name, right.details)
        assert _error(right, a_H_b, b.shape[:2]) < 2.0  # the refinement on intensities, if kept, stayed close
        off = deeplk.align(a, b, method="identity", predictor=_given(a.shape[:2], b.shape[:2], wrong), refine_size=0)
        assert off.failed, (name, off.details)


# --------------------------------------------------------------------------------------------
# Bad inputs: clear errors naming the file or argument
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A known pair as PNG files and a set of broken files."""
    d = tmp_path_factory.mktemp("align_files")
    rng = np.random.default_rng(8)
    a = _photo("chelsea", (640, 480))
    b, a_H_b = _warped_pair(a, rng, amp=0.06)
    cv2.imwrite(str(d / "a.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "b.jpg"), cv2.cvtColor(b, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(d / "other.png"), cv2.cvtColor(_photo("moon", (640, 480)), cv2.COLOR_RGB2BGR))
    data = (d / "b.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    png = (d / "a.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image\n")
    cv2.imwrite(str(d / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    return d, a_H_b, b.shape[:2]


class TestBadInput:
    @pytest.mark.parametrize(
        "name, error, match",
        [
            ("missing.png", FileNotFoundError, "image_b: image not found: .*missing.png"),
            ("truncated.jpg", ValueError, "image_b: cannot read image .*truncated.jpg"),
            ("truncated.png", ValueError, "image_b: cannot read image .*truncated.png"),
            ("empty.png", ValueError, "image_b: cannot read image .*empty.png"),
            ("text.png", ValueError, "image_b: cannot read image .*text.png"),
            ("tiny.png", ValueError, r"image_b \(.*tiny.png\): image is 1x1 pixels"),
        ],
    )
    def test_bad_files(self, files, name, error, match):
        d, _, _ = files
        with pytest.raises(error, match=match):
            deeplk.align(d / "a.png", d / name)

    def test_bad_arrays(self):
        ok = np.zeros((32, 32, 3), np.uint8)
        for bad, match in [
            (np.zeros((0, 0, 3), np.uint8), "image_a: image is 0x0"),
            (np.zeros((1, 1), np.uint8), "image_a: image is 1x1"),
            (np.zeros((32, 32, 2), np.uint8), "image_a: expected an"),
            (np.full((32, 32), np.nan, np.float32), "non-finite"),
            (np.full((32, 32), 3.0), r"in \[0, 1\]"),
            (np.zeros((32, 32), np.int64), "unsupported dtype"),
        ]:
            with pytest.raises(ValueError, match=match):
                deeplk.align(bad, ok)

    def test_bad_method_and_checkpoint_dir(self, tmp_path):
        ok = np.zeros((32, 32, 3), np.uint8)
        with pytest.raises(ValueError, match="method: unknown or unavailable method 'nope'"):
            deeplk.align(ok, ok, method="nope")
        with pytest.raises(FileNotFoundError, match="checkpoint_dir: folder not found: .*nowhere"):
            deeplk.align(ok, ok, checkpoint_dir=tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_entry_point_is_declared():
    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["deeplk-align"] == "deeplk.alignment:main"


def test_package_attribute_is_the_function_and_imports_lazily():
    """``import deeplk`` loads neither OpenCV nor TensorFlow; ``deeplk.align`` is the function of
    `deeplk.alignment`, and no module of that name shadows it. In a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, deeplk\n"
        "assert 'cv2' not in sys.modules and 'tensorflow' not in sys.modules, 'eager import'\n"
        "from deeplk import align, alignment\n"
        "assert align is alignment.align and deeplk.AlignResult is alignment.AlignResult\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('deeplk.align') is None, 'a deeplk.align module would shadow the function'\n"
    )
    lib = str(Path(deeplk.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": lib})
    assert done.returncode == 0, done.stderr[-2000:]
    assert callable(deeplk.align) and deeplk.align is align_module.align
    with pytest.raises(AttributeError, match="nothing_here"):
        deeplk.nothing_here


def test_help_shows_a_worked_example(capsys):
    with pytest.raises(SystemExit) as exc:
        align_module.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "deeplk-align a.png b.png --out aligned --gif" in out and "--checkpoint-dir" in out


def test_command_writes_the_results(files, tmp_path, capsys):
    d, a_H_b, shape_b = files
    out = tmp_path / "out"
    (out).mkdir()
    (out / "failure.json").write_text("{}")  # stale report of an earlier run
    code = align_module.main([str(d / "a.png"), str(d / "b.jpg"), "--out", str(out), "--gif"])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["homography.json", "lk_iterations.gif", "overlay.png", "warped.png"]
    record = json.loads((out / "homography.json").read_text())
    H = np.array(record["H"])
    true = cv2.perspectiveTransform(_corners_of(shape_b)[None], a_H_b)[0]
    found = cv2.perspectiveTransform(_corners_of(shape_b)[None], H)[0]
    assert np.linalg.norm(found - true, axis=1).mean() < 1.0
    assert record["failed"] is False and record["confidence"] > 0.5
    lines = printed.splitlines()
    start = lines.index("H (B pixels -> A pixels):")
    shown = np.array([[float(v) for v in line.strip(" []").split()] for line in lines[start + 1:start + 4]])
    np.testing.assert_allclose(shown, H, atol=1e-5)
    assert f"confidence {record['confidence']:.3f} (ok)" in printed
    warped = cv2.imread(str(out / "warped.png"))
    overlay = cv2.imread(str(out / "overlay.png"))
    assert warped.shape == overlay.shape == (480, 640, 3)
    # warped B matches A where it is valid (the alignment is right): a small mean difference
    a = cv2.imread(str(d / "a.png")).astype(float)
    valid = warped.sum(axis=2) > 0
    assert np.abs(warped.astype(float) - a)[valid].mean() < 6.0


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["{d}/a.png", "{d}/missing.png"], 2, "image not found: .*missing.png"),
        (["{d}/a.png", "{d}/truncated.jpg"], 2, "truncated.jpg"),
        (["{d}/tiny.png", "{d}/a.png"], 2, "A .*tiny.png.*1x1"),
        (["{d}/a.png", "{d}/b.jpg", "--method", "nope"], 2, "--method: unknown .*'nope'"),
        (["{d}/a.png", "{d}/b.jpg", "--checkpoint-dir", "{d}/nowhere"], 2, "--checkpoint-dir: folder not found"),
        (["{d}/a.png", "{d}/other.png"], 1, "alignment failed"),
    ],
)
def test_command_failures_write_only_a_report(files, tmp_path, capsys, args, code, message):
    import re

    d, _, _ = files
    out = tmp_path / "out"
    out.mkdir()
    (out / "homography.json").write_text("{}")  # stale result of an earlier run
    argv = [s.format(d=d) for s in args] + ["--out", str(out)]
    assert align_module.main(argv) == code
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert [p.name for p in out.iterdir()] == ["failure.json"]
    report = json.loads((out / "failure.json").read_text())
    assert report["failed"] is True and report["error"]


@pytest.mark.parametrize("name", ["chelsea", "motorcycle"])
def test_second_modality_flagged_with_intensities_recovered_with_gradients(name):
    """image_b = the photo warped, then rendered in the demo's inverting "season" style: on
    intensities every estimate is wrong and flagged; on gradients it is right."""
    from deeplk.data.modality import render_modality

    rng = np.random.default_rng(2)
    a = load_demo_image(name)
    b, a_H_b = _warped_pair(a, rng, amp=0.06)
    b = render_modality(b, "season", rng)
    on_intensity = deeplk.align(a, b)
    assert on_intensity.failed and _error(on_intensity, a_H_b, b.shape[:2]) > 10
    on_gradient = deeplk.align(a, b, representation="gradient")
    assert not on_gradient.failed and _error(on_gradient, a_H_b, b.shape[:2]) < 1.0
    with pytest.raises(ValueError, match="representation"):
        deeplk.align(a, b, representation="edges")


def test_demo_pair_and_write_outputs(tmp_path):
    """The notebook's offline pair: its known homography is recovered on gradients, and the
    outputs are written; a failed result has none."""
    truth = align_module.make_demo_pair(tmp_path / "a.png", tmp_path / "b.png", name="motorcycle", style="season", seed=4)
    r = deeplk.align(tmp_path / "a.png", tmp_path / "b.png", representation="gradient")
    assert not r.failed and _error(r, truth, r.shape_b) < 1.0
    written = align_module.write_outputs(tmp_path / "out", tmp_path / "a.png", tmp_path / "b.png", r)
    assert [p.name for p in written] == ["homography.json", "warped.png", "overlay.png"]
    np.testing.assert_allclose(json.loads((tmp_path / "out" / "homography.json").read_text())["H"], r.H)
    bad = deeplk.align(tmp_path / "a.png", tmp_path / "b.png", representation="intensity")
    assert bad.failed
    with pytest.raises(ValueError, match="failed alignment"):
        align_module.write_outputs(tmp_path / "out2", tmp_path / "a.png", tmp_path / "b.png", bad)
    assert not (tmp_path / "out2").exists()


def test_learned_method_from_a_checkpoint_folder(tmp_path):
    """``dlkfm`` through `align` from ``checkpoint_dir``: a DLKFM whose extractors pass the image
    through (identity weights, saved as a trained checkpoint) aligns a photo pair like LK."""
    from test_models_dlkfm import identity_feature_net, save_as_checkpoint

    save_as_checkpoint(identity_feature_net(3), tmp_path)
    rng = np.random.default_rng(9)
    a = _photo("astronaut", (512, 512))
    b, a_H_b = _warped_pair(a, rng, amp=0.03)
    r = deeplk.align(a, b, method="dlkfm", checkpoint_dir=tmp_path, refine_size=0)
    assert r.method == "dlkfm" and not r.failed, r.details
    assert _error(r, a_H_b, b.shape[:2]) < 1.0


def test_dlkfm_trained_here_aligns_a_multimodal_pair(tmp_path):
    """``dlkfm`` through `align` from a checkpoint trained in the test: a small DLKFM on the MIND
    descriptor (level 3, a few steps of the unrolled-LK loss on a generated multimodal set)
    recovers photographs against their other-season rendering to under 2 px of the full-size
    image, and says so (not failed)."""
    from deeplk import data
    from deeplk.models import dlkfm

    root = tmp_path / "mm"
    data.generate_dataset("demo_multimodal", root, num_train=16, num_val=2, seed=0, style="mix", progress=False)
    dataset = data.load_dataset(root, "train2014", batch_size=2, shuffle=True, repeat=True)
    result = dlkfm.train_stage(
        "dlkfm/level3", dataset, tmp_path / "ckpt", steps=6, learning_rate=1e-3,
        model_config=dict(channels=4, num_blocks=1, normalise=False, input_representation="mind"),
        task_options=dict(loss="unrolled", start_perturbation=8.0, unroll_iterations=3), progress=False)
    assert result.steps == 6 and dlkfm.trained_levels(tmp_path / "ckpt") == [3]
    moved = [np.abs(w).max() for w in result.model.extractor_variables(3) if "head" in w.path]
    assert moved and max(moved) > 0  # the residual heads start at zero: training moved them
    for seed, name in ((4, "motorcycle"), (1, "coffee")):
        truth = align_module.make_demo_pair(tmp_path / "a.png", tmp_path / "b.png", name=name, style="season",
                                            seed=seed)
        r = deeplk.align(tmp_path / "a.png", tmp_path / "b.png", method="dlkfm", checkpoint_dir=tmp_path / "ckpt",
                         representation="gradient", refine_size=0)
        assert not r.failed, (name, r.details)
        assert _error(r, truth, r.shape_b) < 2.0, name


def test_degenerate_or_missing_corners_count_as_the_method_failing():
    """A method returning collinear corners (no homography) or NaN on both starts: `failed`,
    confidence 0, no exception."""
    a = _photo("coffee", (320, 240))
    line = np.array([[[0, 0], [10, 10], [20, 20], [30, 30]]] * 2, np.float64)
    nan = np.full((2, 4, 2), np.nan)
    for corners, failed in ((line, np.zeros(2, bool)), (nan, np.ones(2, bool))):
        r = deeplk.align(a, a, method="identity", predictor=lambda i, t, c=corners, f=failed: (c, f))
        assert r.failed and r.confidence == 0.0 and r.details["method_failed"]
        assert not np.any(np.isfinite(r.H))


def test_overlay_and_warp_known_answers():
    """image_b = image_a shifted by (dx, dy) = (7, 4) px: warped by the true H it equals image_a
    wherever it is valid, and the checkerboard shows image_a's pixels everywhere but the outline."""
    a = _photo("coffee", (320, 240))
    b = a[4:, 7:]
    H = np.array([[1, 0, 7.0], [0, 1, 4.0], [0, 0, 1]])
    warped, mask = align_module.warp_to_a(a, b, H)
    assert mask[4:, 7:].all() and not mask[:4].any() and not mask[:, :7].any()
    np.testing.assert_allclose(warped[mask], a[mask] / 255.0, atol=1e-6)
    overlay = align_module.overlay_image(a, b, H)
    outline = np.zeros(a.shape[:2], bool)
    outline[:7, :] = outline[:, :9] = outline[-2:, :] = outline[:, -2:] = True  # around B's border
    np.testing.assert_array_equal(overlay[~outline], a[~outline])
    assert (overlay[outline] != a[outline]).any()  # the red outline is drawn


def test_command_init_h_file(tmp_path, capsys):
    """--init-h: a tile of a larger photo found from a rough homography in a file (JSON as
    homography.json, or 9 numbers); a bad file is a clear error naming it."""
    a = _photo("coffee", (1200, 800))
    a_H_b = np.array([[1.6, 0.05, 700.0], [-0.04, 1.55, 420.0], [0, 0, 1]])
    b = cv2.warpPerspective(a, a_H_b, (250, 200), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(b, cv2.COLOR_RGB2BGR))
    rough = a_H_b.copy()
    rough[:2, 2] += (9.0, -7.0)
    (tmp_path / "rough.json").write_text(json.dumps({"H": rough.tolist()}))
    (tmp_path / "rough.txt").write_text(" ".join(f"{v:.6f}" for v in rough.ravel()))
    for name in ("rough.json", "rough.txt"):
        out = tmp_path / f"out_{name}"
        assert align_module.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--init-h", str(tmp_path / name),
                                  "--out", str(out)]) == 0
        H = np.array(json.loads((out / "homography.json").read_text())["H"])
        true = cv2.perspectiveTransform(_corners_of(b.shape[:2])[None], a_H_b)[0]
        found = cv2.perspectiveTransform(_corners_of(b.shape[:2])[None], H)[0]
        assert np.linalg.norm(found - true, axis=1).mean() < 1.0
    (tmp_path / "bad.txt").write_text("1 2 3")
    out = tmp_path / "out_bad"
    assert align_module.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--init-h", str(tmp_path / "bad.txt"),
                              "--out", str(out)]) == 2
    assert "--init-h: " in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["failure.json"]
