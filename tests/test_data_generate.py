"""deeplk.data.generate: every generator on small synthetic source folders; folder layout,
labels, template round trip, determinism, resumption, manifest guard and error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import deeplk.data as D
import numpy as np
import pytest
from deeplk.data import dlk_format as F
from deeplk.data.protocol import CORNER_BOX_ORIGINS, homography_from_corners

# ----------------------------------------------------------------------------- source folders


def _photo(name: str, h: int, w: int) -> np.ndarray:
    """A real photograph resized to (h, w), RGB uint8."""
    img = D.load_demo_image(name)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _season(a: np.ndarray) -> np.ndarray:
    """A pointwise affine "season" change (commutes with bilinear warping up to rounding)."""
    return (a.astype(np.float64) * 0.5 + 60).round().astype(np.uint8)


def _black_wedge(img: np.ndarray, frac: float) -> np.ndarray:
    """Zero a triangle at the top-right corner covering about `frac` of the image."""
    h, w = img.shape[:2]
    s = int(np.sqrt(2 * frac) * w)
    out = img.copy()
    tri = np.array([[w - s, 0], [w, 0], [w, s]], np.int32)
    cv2.fillPoly(out, [tri], (0, 0, 0))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    # MSCOCO: train2014/ with colour, single-channel grey and R == G == B images; val2014/.
    coco = root / "coco"
    sizes = [(480, 640), (427, 640), (640, 480), (300, 400), (500, 500)]
    names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"]
    for k, ((h, w), n) in enumerate(zip(sizes, names, strict=True)):
        _write_rgb(coco / "train2014" / f"COCO_train2014_{2 * k:012d}.jpg", _photo(n, h, w))
    grey = cv2.cvtColor(_photo("coffee", 480, 640), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(coco / "train2014" / f"COCO_train2014_{1:012d}.jpg"), grey)
    _write_rgb(
        coco / "train2014" / f"COCO_train2014_{3:012d}.png", np.repeat(grey[..., None], 3, -1)
    )
    for k, n in enumerate(["motorcycle", "coffee", "immunohistochemistry"]):
        _write_rgb(coco / "val2014" / f"COCO_val2014_{k:012d}.jpg", _photo(n, 480, 640))
    cv2.imwrite(str(coco / "val2014" / "COCO_val2014_000000000009.jpg"), grey)
    # GoogleMap: satellite/ and map/ (map = 255 - satellite, an exact pointwise relation).
    gmap = root / "gmap"
    for k, n in enumerate(["astronaut", "coffee", "rocket"]):
        a = _photo(n, 240, 300)
        _write_rgb(gmap / "satellite" / f"{k:03d}.png", a)
        _write_rgb(gmap / "map" / f"{k:03d}.png", 255 - a)
    # GoogleEarth: two season subfolders, sorted: 2017_summer (input) and 2019_winter.
    earth = root / "earth"
    for k, n in enumerate(["chelsea", "coffee", "astronaut", "rocket"]):
        a = _photo(n, 260, 260)
        _write_rgb(earth / "2017_summer" / f"tile_{k}.png", a)
        _write_rgb(earth / "2019_winter" / f"tile_{k}.png", _season(a))
    # Aligned pairs, side by side: NN_a.png / NN_b.png, 128 x 128, black wedges in _b.
    pairs = root / "pairs"
    for k, n in enumerate(["astronaut", "coffee", "chelsea", "rocket"]):
        a = np.maximum(_photo(n, 128, 128), 12)  # pure black only in the wedges
        _write_rgb(pairs / f"{k:02d}_a.png", a)
        _write_rgb(pairs / f"{k:02d}_b.png", _black_wedge(a, 0.12))
    return {"mscoco": coco, "googlemap": gmap, "googleearth": earth, "aligned_pairs": pairs}


# ----------------------------------------------------------------------------------- helpers


def _rgb(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _check_layout(out: Path, counts: dict[str, int], mask_allowed=False) -> None:
    assert (out / F.MANIFEST_NAME).is_file()
    for split, n in counts.items():
        d = F.split_dirs(out, split)
        names = [F.sample_name(i) for i in range(n)]
        assert sorted(os.listdir(d["input"])) == [f"{x}.jpg" for x in names]
        assert sorted(os.listdir(d["template"])) == [f"{x}.jpg" for x in names]
        assert sorted(os.listdir(d["label"])) == [f"{x}_label.txt" for x in names]
        if not mask_allowed:
            assert not d["mask"].exists()
        for x in names:
            assert _rgb(d["input"] / f"{x}.jpg").shape == (192, 192, 3)
            assert _rgb(d["template"] / f"{x}.jpg").shape == (128, 128, 3)
            assert (d["input"] / f"{x}.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG
            loc = json.loads((d["label"] / f"{x}_label.txt").read_text())["location"]
            assert [sorted(e) for e in loc] == [
                ["top_left_u", "top_left_v"],
                ["top_right_u", "top_right_v"],
                ["bottom_left_u", "bottom_left_v"],
                ["bottom_right_u", "bottom_right_v"],
            ]
            assert all(type(v) is int for e in loc for v in e.values())
            c = F.read_label(d["label"] / f"{x}_label.txt")
            assert np.all(c >= CORNER_BOX_ORIGINS) and np.all(c <= CORNER_BOX_ORIGINS + 63)
    assert not [p for p in out.rglob(".*.tmp")]


def _round_trip_errors(out: Path, split: str, modality=lambda x: x):
    """Mean |template - modality(warp(input, label H))| over valid pixels, for the label's H and
    for a wrong H (corners moved by 6 px), per sample."""
    errs, wrong = [], []
    for name in F.list_samples(out, split):
        p = F.sample_paths(out, split, name)
        inp, tpl = _rgb(p["input"]).astype(np.float64), _rgb(p["template"]).astype(np.float64)
        valid = F.read_template_mask(out, split, name)
        corners = F.read_label(p["label"]).astype(np.float64)
        for c, acc in ((corners, errs), (corners + [[6, -6], [-6, 6], [6, 6], [-6, -6]], wrong)):
            pred = cv2.warpPerspective(
                inp,
                homography_from_corners(c),
                (128, 128),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            )
            acc.append(np.abs(tpl - modality(pred))[valid].mean())
    return np.array(errs), np.array(wrong)


def _check_against_memory(out: Path, gen, split: str, n: int) -> None:
    """Disk files equal the in-memory samples (up to JPEG) and the template is the source
    warped by the label's homography (exactly, before JPEG)."""
    for i in range(n):
        s = gen.sample(split, i)
        p = F.sample_paths(out, split, F.sample_name(i))
        np.testing.assert_array_equal(F.read_label(p["label"]), s.corners)
        h = homography_from_corners(s.corners)
        np.testing.assert_array_equal(s.template, D.make_template(s.template_source, h))
        assert np.abs(_rgb(p["input"]).astype(int) - s.input).mean() < 5
        assert np.abs(_rgb(p["template"]).astype(int) - s.template).mean() < 5
        if s.template_mask is None:
            assert not p["mask"].exists()
        else:
            np.testing.assert_array_equal(
                F.read_template_mask(out, split, F.sample_name(i)), s.template_mask
            )


# ---------------------------------------------------------------------------- per generator

CASES = {
    # dataset: (options, counts, modality relation template source = f(input))
    "mscoco": ({}, {"train2014": 4, "val2014": 3}, lambda x: x),
    "googlemap": ({}, {"train2014": 6, "val2014": 3}, lambda x: 255 - x),
    "googleearth": ({}, {"train2014": 6, "val2014": 3}, lambda x: x * 0.5 + 60),
    "aligned_pairs": ({}, {"train2014": 8, "val2014": 4}, lambda x: x),
    "demo": ({}, {"train2014": 8, "val2014": 4}, lambda x: x),
}


@pytest.mark.parametrize("dataset", list(CASES))
def test_generator_layout_and_round_trip(dataset, sources, tmp_path):
    options, counts, modality = CASES[dataset]
    src = None if dataset == "demo" else sources[dataset]
    out = tmp_path / "out"
    stats = D.generate_dataset(
        dataset, out, src, counts["train2014"], counts["val2014"], seed=3, progress=False, **options
    )
    assert stats["train2014"]["written"] == counts["train2014"]
    assert stats["val2014"] == {
        "requested": counts["val2014"],
        "written": counts["val2014"],
        "existing": 0,
    }
    _check_layout(out, counts, mask_allowed=dataset == "aligned_pairs")
    manifest = json.loads((out / F.MANIFEST_NAME).read_text())
    assert manifest["generator"] == dataset and manifest["seed"] == 3
    assert (manifest["num_train"], manifest["num_val"]) == (counts["train2014"], counts["val2014"])
    for split in counts:
        errs, wrong = _round_trip_errors(out, split, modality)
        assert errs.max() < 5.0, (split, errs)
        assert np.all(wrong > 2 * errs), (split, errs, wrong)
    gen = D.make_generator(dataset, src, seed=3, **options)
    for split, n in counts.items():
        gen.prepare(split, n)
        _check_against_memory(out, gen, split, n)


@pytest.mark.parametrize("style", ["map", "season", "mix"])
def test_demo_multimodal(style, tmp_path):
    out = tmp_path / "mm"
    D.generate_dataset(
        "demo_multimodal", out, num_train=6, num_val=3, seed=1, progress=False, style=style
    )
    _check_layout(out, {"train2014": 6, "val2014": 3})
    gen = D.make_generator("demo_multimodal", seed=1, style=style)
    styles = set()
    for split, n in (("train2014", 6), ("val2014", 3)):
        _check_against_memory(out, gen, split, n)
        for i in range(n):
            s = gen.sample(split, i)
            styles.add(s.source.split("(")[-1].rstrip(")"))
            # a different modality: intensities do not match the input's
            ref = D.make_template(s.input, homography_from_corners(s.corners)).astype(float)
            assert np.abs(ref - s.template).mean() > 20
    assert styles == ({"map", "season"} if style == "mix" else {style})


def test_mscoco_skips_grey_and_keeps_file_order(sources):
    gen = D.make_generator("mscoco", sources["mscoco"])
    gen.prepare("train2014", 5)
    used = [gen.sample("train2014", i).source for i in range(5)]
    assert used == [f"COCO_train2014_{2 * k:012d}.jpg" for k in range(5)]
    with pytest.raises(ValueError, match=r"val2014.*3 colour images.*need 4"):
        gen.prepare("val2014", 4)
    gen2 = D.make_generator("mscoco", sources["mscoco"], crops_per_image=2)
    gen2.prepare("val2014", 6)
    assert [gen2.sample("val2014", i).source for i in (0, 1, 2)] == [
        "COCO_val2014_000000000000.jpg",
        "COCO_val2014_000000000000.jpg",
        "COCO_val2014_000000000001.jpg",
    ]


def test_mscoco_flat_folder_holds_out_last_images(tmp_path):
    for k, n in enumerate(["astronaut", "coffee", "chelsea", "rocket"]):
        _write_rgb(tmp_path / f"{k:012d}.jpg", _photo(n, 480, 640))
    gen = D.make_generator("mscoco", tmp_path, crops_per_image=3)
    gen.prepare("train2014", 9)
    gen.prepare("val2014", 3)
    assert {gen.sample("train2014", i).source for i in range(9)} == {
        f"{k:012d}.jpg" for k in range(3)
    }
    assert {gen.sample("val2014", i).source for i in range(3)} == {f"{3:012d}.jpg"}
    with pytest.raises(ValueError, match="need 2"):
        gen.prepare("val2014", 4)


def test_pairs_held_out_for_val(sources):
    for dataset, n_pairs in (("aligned_pairs", 4), ("googleearth", 4), ("googlemap", 3)):
        gen = D.make_generator(dataset, sources[dataset])
        train = {p.name for p in gen.split_pairs["train2014"]}
        val = {p.name for p in gen.split_pairs["val2014"]}
        assert len(train) + len(val) == n_pairs and val and not train & val
        assert {gen.sample("val2014", i).source for i in range(12)} <= val
        assert {gen.sample("train2014", i).source for i in range(12)} <= train


def test_aligned_pairs_masks(sources, tmp_path):
    out = tmp_path / "masked"
    D.generate_dataset(
        "aligned_pairs", out, sources["aligned_pairs"], 16, 0, progress=False, min_valid=0.85
    )
    masks = sorted((out / "train2014_mask").glob("*.png"))
    assert masks, "crops with black pixels must write template masks"
    for p in masks:
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert m.shape == (128, 128) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        assert (m == 0).any()
    gen = D.make_generator("aligned_pairs", sources["aligned_pairs"], min_valid=0.85)
    _check_against_memory(out, gen, "train2014", 16)
    for i in range(16):
        s = gen.sample("train2014", i)
        black = (s.template == 0).all(-1)  # read only from the black wedge
        if s.template_mask is None:
            assert not black.any()
        else:
            assert not s.template_mask[black].any()
            assert s.template_mask.mean() > 0.5
    errs, _ = _round_trip_errors(out, "train2014")
    assert errs.max() < 5.0


def test_aligned_pairs_subfolder_layout(sources, tmp_path):
    src = tmp_path / "two"
    for p in sorted(sources["aligned_pairs"].glob("*_a.png")):
        (src / "optical").mkdir(parents=True, exist_ok=True)
        (src / "optical" / p.name.replace("_a", "")).write_bytes(p.read_bytes())
        (src / "sar").mkdir(exist_ok=True)
        (src / "sar" / p.name.replace("_a", "")).write_bytes(
            p.with_name(p.name.replace("_a", "_b")).read_bytes()
        )
    pairs = D.make_generator("aligned_pairs", src).pairs
    assert [p.input_path.parent.name for p in pairs] == ["optical"] * 4
    swapped = D.make_generator("aligned_pairs", src, input_subdir="sar", template_subdir="optical")
    assert swapped.pairs[0].input_path.parent.name == "sar"


def test_no_valid_crop_names_the_pair(tmp_path):
    a = _photo("astronaut", 128, 128)
    b = a.copy()
    b[::2, ::2] = 0  # a quarter of the pixels pure black everywhere
    _write_rgb(tmp_path / "p" / "x_a.png", a)
    _write_rgb(tmp_path / "p" / "x_b.png", b)
    with pytest.warns(UserWarning, match="single pair"):
        with pytest.raises(ValueError, match=r"pair 'x'.*x_a\.png.*valid") as e:
            D.generate_dataset(
                "aligned_pairs", tmp_path / "o", tmp_path / "p", 2, 0, progress=False, max_tries=50
            )
    assert "min_valid" in str(e.value)


# ------------------------------------------------------------- determinism and resumption


def test_deterministic_whatever_the_workers(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    D.generate_dataset("demo", a, num_train=12, num_val=4, seed=5, progress=False, workers=1)
    D.generate_dataset("demo", b, num_train=12, num_val=4, seed=5, progress=False, workers=3)
    D.generate_dataset("demo", c, num_train=12, num_val=4, seed=6, progress=False, workers=2)
    ta, tb, tc = _tree(a), _tree(b), _tree(c)
    assert ta == tb
    labels = [k for k in ta if k.endswith("_label.txt")]
    assert sum(ta[k] != tc[k] for k in labels) >= len(labels) - 1


def test_pairs_deterministic(sources, tmp_path):
    for k in (1, 2):
        D.generate_dataset(
            "googleearth",
            tmp_path / f"e{k}",
            sources["googleearth"],
            5,
            2,
            seed=0,
            progress=False,
            workers=k,
        )
    assert _tree(tmp_path / "e1") == _tree(tmp_path / "e2")


def test_resume_after_damage_is_identical(tmp_path):
    clean, hurt = tmp_path / "clean", tmp_path / "hurt"
    kw = dict(num_train=10, num_val=4, seed=2, progress=False)
    D.generate_dataset("demo", clean, **kw)
    D.generate_dataset("demo", hurt, **kw)
    d = F.split_dirs(hurt, "train2014")
    (d["input"] / "000003.jpg").unlink()  # a sample without its input
    (d["label"] / "000005_label.txt").unlink()  # an interrupted sample (label written last)
    (d["input"] / "000005.jpg").write_bytes(b"garbage")
    (d["template"] / ".000007.jpg.tmp").write_bytes(b"stale temporary")
    (d["label"] / ".000009_label.txt.tmp").write_bytes(b"{")
    (F.split_dirs(hurt, "val2014")["template"] / "000001.jpg").unlink()
    stats = D.generate_dataset("demo", hurt, **kw)
    assert stats["train2014"] == {"requested": 10, "written": 2, "existing": 8}
    assert stats["val2014"]["written"] == 1
    assert _tree(clean) == _tree(hurt)


def test_extend_equals_direct_run(tmp_path):
    D.generate_dataset("demo", tmp_path / "grow", num_train=10, num_val=2, seed=4, progress=False)
    stats = D.generate_dataset(
        "demo", tmp_path / "grow", num_train=15, num_val=2, seed=4, progress=False
    )
    assert stats["train2014"] == {"requested": 15, "written": 5, "existing": 10}
    D.generate_dataset("demo", tmp_path / "direct", num_train=15, num_val=2, seed=4, progress=False)
    assert _tree(tmp_path / "grow") == _tree(tmp_path / "direct")
    # asking for fewer keeps what exists and the manifest's counts
    D.generate_dataset("demo", tmp_path / "grow", num_train=3, num_val=2, seed=4, progress=False)
    assert _tree(tmp_path / "grow") == _tree(tmp_path / "direct")


def test_manifest_mismatch_refused(tmp_path):
    out = tmp_path / "d"
    D.generate_dataset("demo", out, num_train=3, num_val=1, seed=0, progress=False)
    for kwargs in ({"seed": 1}, {"max_rotation_deg": 5.0}):
        with pytest.raises(ValueError, match="deeplk_dataset.json") as e:
            D.generate_dataset(
                "demo", out, num_train=3, num_val=1, progress=False, **{"seed": 0, **kwargs}
            )
        assert "Refusing" in str(e.value)
    with pytest.raises(ValueError, match=r"deeplk_dataset.json.*generator"):
        D.generate_dataset("demo_multimodal", out, num_train=3, num_val=1, progress=False)
    # equal settings spelled differently (list vs tuple) are the same dataset
    D.generate_dataset("demo", out, num_train=3, num_val=1, progress=False, zoom=[1.0, 1.5])


def test_refuses_dlk_folder_without_manifest(tmp_path):
    (tmp_path / "dl" / "val2014_input").mkdir(parents=True)
    (tmp_path / "dl" / "val2014_input" / "000000.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no deeplk_dataset.json"):
        D.generate_dataset("demo", tmp_path / "dl", num_train=1, num_val=1, progress=False)


# ------------------------------------------------------------------------------ bad inputs


def test_bad_arguments(tmp_path, sources):
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        D.generate_dataset("coco", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['styel'\]"):
        D.generate_dataset(
            "demo_multimodal", tmp_path / "x", num_train=1, num_val=1, progress=False, styel="map"
        )
    with pytest.raises(ValueError, match="num_train"):
        D.generate_dataset("demo", tmp_path / "x", num_train=-1, progress=False)
    with pytest.raises(ValueError, match="seed"):
        D.generate_dataset("demo", tmp_path / "x", num_train=1, seed=-3, progress=False)
    with pytest.raises(ValueError, match="needs `source_dir`"):
        D.generate_dataset("mscoco", tmp_path / "x", None, progress=False)
    with pytest.raises(ValueError, match="style"):
        D.make_generator("demo_multimodal", style="winter")


def test_missing_and_empty_sources(tmp_path, sources):
    missing = tmp_path / "nope"
    for dataset in ("mscoco", "googlemap", "googleearth", "aligned_pairs"):
        with pytest.raises(FileNotFoundError, match="nope"):
            D.generate_dataset(dataset, tmp_path / "o", missing, 1, 1, progress=False)
    (tmp_path / "empty" / "train2014").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no images .* in .*empty/train2014"):
        D.generate_dataset("mscoco", tmp_path / "o", tmp_path / "empty", 1, 0, progress=False)
    with pytest.raises(FileNotFoundError, match=r"empty/val2014"):
        D.generate_dataset("mscoco", tmp_path / "o2", tmp_path / "empty", 0, 1, progress=False)
    (tmp_path / "gm" / "satellite").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"gm/map"):
        D.generate_dataset("googlemap", tmp_path / "o", tmp_path / "gm", 1, 1, progress=False)
    (tmp_path / "ge" / "only_one").mkdir(parents=True)
    with pytest.raises(ValueError, match="two season subfolders"):
        D.generate_dataset("googleearth", tmp_path / "o", tmp_path / "ge", 1, 1, progress=False)


def test_unreadable_and_unmatched_files(tmp_path, sources):
    coco = tmp_path / "coco"
    (coco / "train2014").mkdir(parents=True)
    _write_rgb(coco / "train2014" / "a.jpg", _photo("astronaut", 240, 320))
    (coco / "train2014" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*b\.jpg"):
        D.generate_dataset("mscoco", tmp_path / "o", coco, 2, 0, progress=False)
    pairs = tmp_path / "pairs"
    _write_rgb(pairs / "00_a.png", _photo("astronaut", 64, 64))
    _write_rgb(pairs / "00_b.png", _photo("astronaut", 64, 64))
    _write_rgb(pairs / "01_a.png", _photo("coffee", 64, 64))
    with pytest.raises(ValueError, match=r"no image matching .*01_a\.png"):
        D.generate_dataset("aligned_pairs", tmp_path / "o3", pairs, 1, 1, progress=False)
    _write_rgb(pairs / "01_b.png", _photo("coffee", 60, 64))
    with pytest.raises(ValueError, match=r"pair '01' is not aligned"):
        D.generate_dataset("aligned_pairs", tmp_path / "o4", pairs, 4, 4, progress=False)


# -------------------------------------------------------------------------------- demo data


def test_demo_images_offline_and_held_out():
    assert not set(D.DEMO_TRAIN_IMAGES) & set(D.DEMO_VAL_IMAGES)
    assert len(D.DEMO_VAL_IMAGES) / (len(D.DEMO_TRAIN_IMAGES) + len(D.DEMO_VAL_IMAGES)) > 0.2
    for name in D.DEMO_TRAIN_IMAGES + D.DEMO_VAL_IMAGES:
        img = D.load_demo_image(name)
        assert (
            img.ndim == 3
            and img.shape[2] == 3
            and img.dtype == np.uint8
            and min(img.shape[:2]) >= 190
        )
    gen = D.make_generator("demo")
    assert {gen.sample("val2014", i).source for i in range(40)} == set(D.DEMO_VAL_IMAGES)
    assert {gen.sample("train2014", i).source for i in range(80)} <= set(D.DEMO_TRAIN_IMAGES)


def test_demo_samples_are_distinct():
    gen = D.make_generator("demo")
    inputs = np.stack([gen.sample("train2014", i).input[::4, ::4] for i in range(30)]).reshape(
        30, -1
    )
    d = np.abs(inputs[:, None].astype(np.int16) - inputs[None]).mean(-1)
    assert d[~np.eye(30, dtype=bool)].min() > 1.0


def test_demo_view_rgba_fast_path_is_exact():
    from deeplk.data import demo

    base = demo.demo_base_image("coffee")
    affine = demo.view_affine(base.shape[:2], np.random.default_rng(0))
    ref = cv2.warpAffine(
        base,
        affine,
        (192, 192),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    np.testing.assert_array_equal(demo.render_view(base, affine), ref)
    np.testing.assert_array_equal(demo.render_view(demo.to_rgba(base), affine), ref)
