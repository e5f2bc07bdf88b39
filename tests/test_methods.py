"""The method registry and the batch evaluation runner."""

import cv2
import numpy as np
import pytest
from skimage import data

from deeplk import methods

TEMPLATE = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], np.float32)


@pytest.fixture(scope="module")
def pairs():
    """Six textured DLK-protocol pairs (a photo warped by known homographies)."""
    img = cv2.resize(data.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)[20:212, 60:252]
    img = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32) / 255.0
    rng = np.random.default_rng(7)
    inputs, templates, corners = [], [], []
    for _ in range(6):
        c = (TEMPLATE + 32 + rng.integers(-20, 20, size=(4, 2))).astype(np.float32)
        H = cv2.getPerspectiveTransform(TEMPLATE, c)
        templates.append(cv2.warpPerspective(img, H, (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        inputs.append(img)
        corners.append(c)
    return np.stack(inputs), np.stack(templates), np.stack(corners)


def test_names_and_errors():
    assert set(methods.available_methods()) >= {"identity", "sift", "orb", "ecc", "lk", "hybrid"}
    assert set(methods.available_methods()) <= set(methods.METHOD_NAMES)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get_method("nope")
    with pytest.raises(ValueError, match="methods"):
        methods.evaluate_methods(np.zeros((1, 192, 192, 3)), np.zeros((1, 128, 128, 3)), np.zeros((1, 4, 2)), [])


@pytest.mark.parametrize("name, bound", [("sift", 1.0), ("ecc", 0.5), ("lk", 0.5), ("hybrid", 0.5)])
def test_methods_recover_synthetic_warps(pairs, name, bound):
    inputs, templates, corners = pairs
    pred, failed = methods.get_method(name)(inputs, templates)
    assert pred.shape == (6, 4, 2) and failed.shape == (6,)
    pe = np.linalg.norm(pred - corners, axis=-1).mean(-1)
    assert np.mean(pe < bound) >= 5 / 6, pe


def test_lk_mind_aligns_inverted_contrast_where_lk_cannot():
    """Known answer: the template is 1 - (a photo warped by a known homography, corners moved by
    up to 8 px). `lk_mind` (LK on the MIND descriptor) recovers the corners to < 1 px; `lk` on
    intensities, which sees a negative image, does not."""
    img = cv2.resize(data.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)[20:212, 60:252]
    img = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32) / 255.0
    offsets = np.array([[[6, -5], [-7, 4], [5, 8], [-8, -6]], [[-6, 7], [8, 3], [-4, -8], [7, -5]]], np.float32)
    corners = TEMPLATE + 32 + offsets
    templates = np.stack([
        1.0 - cv2.warpPerspective(img, cv2.getPerspectiveTransform(TEMPLATE, c), (128, 128),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        for c in corners
    ])
    inputs = np.stack([img, img])
    errors = {}
    for name in ("lk", "lk_mind"):
        pred, failed = methods.get_method(name)(inputs, templates)
        errors[name] = np.where(failed, np.inf, np.linalg.norm(pred - corners, axis=-1).mean(-1))
    assert np.all(errors["lk_mind"] < 1.0), errors
    assert np.all(errors["lk"] > 3.0), errors


def test_lk_mind_options():
    """The descriptor and its options reach `deeplk.descriptors`; a bad name is a clear error."""
    with pytest.raises(ValueError, match="unknown descriptor 'nope'"):
        methods.get_method("lk_mind", descriptor="nope")
    with pytest.raises(ValueError, match="`distance`"):
        methods.get_method("lk_mind", descriptor_options={"distance": 0})
    with pytest.raises(ValueError, match="`epsilon` must be > 0"):
        methods.get_method("lk_mind", descriptor="orientation", descriptor_options={"epsilon": 0})


def test_lk_mind_builds_share_one_compiled_descriptor():
    """Building the method again (deeplk.align, evaluations) reuses the compiled descriptor of the
    same setting instead of tracing a new one; another setting gets its own."""
    methods.get_method("lk_mind")
    methods.get_method("lk_mind", descriptor_options={"distance": 2})
    n = len(methods._COMPILED_DESCRIPTORS)
    methods.get_method("lk_mind")
    methods.get_method("lk_mind", descriptor_options={"distance": 2})
    assert len(methods._COMPILED_DESCRIPTORS) == n >= 2


def test_hybrid_falls_back_when_sift_fails(pairs):
    """A flat template: SIFT finds nothing, LK flags it: a failure, never NaN corners passed on."""
    inputs, templates, _ = pairs
    templates = templates.copy()
    templates[1] = 0.5
    pred, failed = methods.get_method("hybrid")(inputs[:2], templates[:2])
    assert failed.tolist() == [False, True]
    assert np.all(np.isfinite(pred[0])) and np.all(np.isnan(pred[1]))


def test_photometric_residual_prefers_the_right_homography(pairs):
    inputs, templates, corners = pairs
    right = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c) for c in corners])
    wrong = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c + 4) for c in corners])
    r_right = methods.photometric_residual(inputs, templates, right)
    r_wrong = methods.photometric_residual(inputs, templates, wrong)
    assert np.all(r_right < 0.2 * r_wrong)
    far = right.copy()
    far[:, 0, 2] += 500  # template placed outside the input: no valid pixels
    assert np.all(np.isinf(methods.photometric_residual(inputs, templates, far)))


def test_photometric_residual_matches_warp_image(pairs):
    """Known answer: the mean squared grey difference over the valid pixels of `deeplk.warp.warp_image`
    (TensorFlow, an independent implementation of the warp), in float64; inf below half valid."""
    import tensorflow as tf

    from deeplk.lk import to_greyscale
    from deeplk.warp import warp_image

    inputs, templates, corners = pairs
    rng = np.random.default_rng(3)
    H = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c + rng.uniform(-6, 6, (4, 2)).astype(np.float32))
                  for c in corners]).astype(np.float64)
    H[3] = [[1, 0, 32], [0, 1, 32], [0, 0, 1]]  # the centred guess (computed as a crop)
    H[4, 0, 2] += 60  # part of the template outside the input (about 70 % valid)
    H[5, 0, 2] += 100  # about 40 % valid: below `min_valid_fraction`
    warped, mask = warp_image(to_greyscale(tf.constant(inputs)), tf.constant(H, tf.float32), 128)
    w = warped.numpy()[..., 0].astype(np.float64)
    m = mask.numpy()[..., 0] > 0.5
    t = to_greyscale(tf.constant(templates)).numpy()[..., 0].astype(np.float64)
    expected = np.array([np.mean((w[i][m[i]] - t[i][m[i]]) ** 2) for i in range(6)])
    valid = m.mean(axis=(1, 2))
    assert 0.5 < valid[4] < 0.9 and valid[5] < 0.5
    expected[valid < 0.5] = np.inf
    got = methods.photometric_residual(inputs, templates, H)
    assert np.isinf(got[5])
    np.testing.assert_allclose(got[:5], expected[:5], rtol=1e-3)
    H[0] = np.nan
    assert np.isinf(methods.photometric_residual(inputs[:1], templates[:1], H[:1]))[0]
    with pytest.raises(ValueError, match="input_H_template"):
        methods.photometric_residual(inputs, templates, H[:2])


class TestDescriptorPeakRatio:
    def test_matches_a_float64_reference(self, pairs):
        """Known answer: the MIND SSD at H over its mean at the eight moves, with the template's
        descriptor warped into the input by `deeplk.warp.warp_image` in float64 (an independent
        warp: TensorFlow, inverse of H), its mask eroded by 2 px with SciPy."""
        import tensorflow as tf
        from scipy.ndimage import binary_erosion

        from deeplk.descriptors import mind
        from deeplk.lk import to_greyscale
        from deeplk.warp import warp_image

        inputs, templates, corners = pairs
        rng = np.random.default_rng(4)
        H = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c + rng.uniform(-3, 3, (4, 2)).astype(np.float32))
                      for c in corners]).astype(np.float64)
        grey = [to_greyscale(tf.constant(x)).numpy().astype(np.float64) for x in (inputs, templates)]
        d_in, d_t = (mind(tf.constant(g)).numpy() for g in grey)
        k = methods.PEAK_SHIFT / np.sqrt(2)
        s = methods.PEAK_SHIFT
        moves = [(0, 0), (s, 0), (-s, 0), (0, s), (0, -s), (k, k), (-k, k), (k, -k), (-k, -k)]
        expected = []
        for i in range(len(H)):
            ssd, valid = [], np.ones((192, 192), bool)
            for dx, dy in moves:
                Hm = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]) @ H[i]
                w, m = warp_image(d_t[i:i + 1], np.linalg.inv(Hm)[None], 192)
                ssd.append(np.sum((w.numpy()[0] - d_in[i]) ** 2, axis=-1))
                valid &= m.numpy()[0, ..., 0] > 0.5
            valid = binary_erosion(valid, np.ones((5, 5)), border_value=1)
            r = [x[valid].mean() for x in ssd]
            expected.append(r[0] / np.mean(r[1:]))
        got = methods.descriptor_peak_ratio(inputs, templates, H)
        np.testing.assert_allclose(got, expected, rtol=2e-2)

    def test_sharp_at_the_truth_flat_elsewhere_whatever_the_contrast(self, pairs):
        """The true homography is a sharp minimum (ratio well below 1), for the template and for
        its inverted contrast alike (a second modality); 20 px off, the floor is flat (about 1)."""
        inputs, templates, corners = pairs
        right = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c) for c in corners])
        off = right.copy()
        off[:, 0, 2] += 20
        for t in (templates, 1.0 - templates):
            assert np.all(methods.descriptor_peak_ratio(inputs, t, right) < 0.4)
            assert np.all(np.abs(methods.descriptor_peak_ratio(inputs, t, off) - 1) < 0.1)

    def test_undefined_and_bad_input(self, pairs):
        inputs, templates, corners = pairs
        H = np.repeat(np.array([[1, 0, 32.0], [0, 1, 32], [0, 0, 1]])[None], 3, axis=0)
        H[1] = np.nan
        H[2, 0, 2] = 500  # the template outside the input
        got = methods.descriptor_peak_ratio(inputs[:3], templates[:3], H)
        assert np.isfinite(got[0]) and np.isnan(got[1:]).all()
        with pytest.raises(ValueError, match="input_H_template"):
            methods.descriptor_peak_ratio(inputs[:3], templates[:3], H[:2])
        with pytest.raises(ValueError, match="batch size"):
            methods.descriptor_peak_ratio(inputs[:3], templates[:2], H)
        with pytest.raises(ValueError, match="shift"):
            methods.descriptor_peak_ratio(inputs[:3], templates[:3], H, shift=0)


class TestDiverged:
    CENTRED = TEMPLATE + 32

    def test_protocol_prior(self):
        """Known answers: the protocol's prior flags a corner more than 48 px (x or y) from the
        centred guess, a fold-over, a mirror image, collinear and non-finite corners."""
        c = self.CENTRED
        shifted = lambda d: c + np.array([[d, 0], [0, 0], [0, 0], [0, 0]])
        cases = {
            "centred": (c, False),
            "protocol corners": (np.array([[0, 0], [191, 10], [180, 180], [20, 191]]), False),
            "a corner 48 px out": (shifted(-48), False),
            "a corner 48.5 px out": (shifted(-48.5), True),
            "translated 40 px": (c + 40, False),
            "translated 49 px": (c + [0, 49], True),
            "mirrored": (c[[1, 0, 3, 2]], True),
            "fold-over": (c[[0, 2, 1, 3]], True),
            "collinear": (np.array([[32, 32], [96, 32], [159, 32], [32, 159]]), True),
            "nan": (np.full((4, 2), np.nan), True),
        }
        flags = methods.diverged(np.stack([v[0] for v in cases.values()]).astype(np.float64), 192, 128)
        assert dict(zip(cases, flags.tolist())) == {k: v[1] for k, v in cases.items()}

    def test_residual_rule(self):
        """An estimate that moved more than 2 px from the centred guess must bring the residual
        below 0.9 times the centred guess's; one that stayed put is not judged by it."""
        moved = self.CENTRED + [[10, 5], [12, 4], [9, 8], [11, 6]]  # about 12 px
        near = self.CENTRED + 1.0  # 1.4 px
        corners = np.stack([moved, moved, moved, near, near]).astype(np.float64)
        residual = np.array([0.5, 0.95, np.inf, 1.0, 2.0])
        flags = methods.diverged(corners, (192, 192), (128, 128), residual, np.ones(5))
        assert flags.tolist() == [False, True, True, False, False]
        assert not methods.diverged(corners[:1], 192, 128, [0.0], [0.0])[0]  # identical images

    def test_peak_rule(self):
        """An estimate that moved more than 2 px from the centred guess must be a sharp minimum
        of the descriptor SSD (peak ratio at most 0.95; undefined counts as flat); one that
        stayed put is not judged by it."""
        moved = self.CENTRED + [[10, 5], [12, 4], [9, 8], [11, 6]]
        near = self.CENTRED + 1.0
        corners = np.stack([moved, moved, moved, moved, near]).astype(np.float64)
        peak = np.array([0.5, 0.95, 0.96, np.nan, 1.0])
        flags = methods.diverged(corners, 192, 128, peak_ratio=peak)
        assert flags.tolist() == [False, False, True, True, False]

    def test_errors(self):
        with pytest.raises(ValueError, match="peak_ratio"):
            methods.diverged(np.zeros((2, 4, 2)), 192, 128, peak_ratio=np.ones(3))
        with pytest.raises(ValueError, match="corners"):
            methods.diverged(np.zeros((2, 3, 2)), 192, 128)
        with pytest.raises(ValueError, match="centred_residual"):
            methods.diverged(np.zeros((2, 4, 2)), 192, 128, residual=np.ones(2))
        with pytest.raises(ValueError, match="residual"):
            methods.diverged(np.zeros((2, 4, 2)), 192, 128, np.ones(3), np.ones(3))
        for name in methods.DIVERGENCE_CHECKED:
            with pytest.raises(ValueError, match="flag_divergence"):
                methods.get_method(name, flag_divergence="yes")


@pytest.fixture(scope="module")
def unalignable(pairs):
    """Pairs intensity LK cannot align: the templates of `pairs` inverted (1 - template), and the
    same warps applied to an unrelated photograph; the inputs and true corners of `pairs`."""
    inputs, templates, corners = pairs
    other = cv2.resize(data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)[20:212, 60:252]
    other = cv2.GaussianBlur(other, (0, 0), 1.0).astype(np.float32) / 255.0
    unrelated = [cv2.warpPerspective(other, cv2.getPerspectiveTransform(TEMPLATE, c), (128, 128),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) for c in corners[3:]]
    return inputs, np.concatenate([1.0 - templates[:3], np.stack(unrelated)]), corners


@pytest.mark.parametrize("name", ["lk", "hybrid"])
def test_divergence_is_flagged_and_alignments_are_not(pairs, unalignable, name):
    """Known answers. Raw (``flag_divergence=False``), `name` reports an answer for every pair
    it cannot align, each worse than the centred guess; by default it flags every one of them
    (failed, NaN corners), while pairs related by known homographies within the protocol are
    recovered to 0.5 px and none is flagged."""
    inputs, templates, corners = unalignable
    centred_pe = np.linalg.norm(TEMPLATE + 32 - corners, axis=-1).mean(-1)
    raw, raw_failed = methods.get_method(name, flag_divergence=False)(inputs, templates)
    assert not raw_failed.any()
    assert np.all(np.linalg.norm(raw - corners, axis=-1).mean(-1) > centred_pe)
    pred, failed = methods.get_method(name)(inputs, templates)
    assert failed.all() and np.isnan(pred).all()
    inputs, templates, corners = pairs
    pred, failed = methods.get_method(name)(inputs, templates)
    assert not failed.any()
    assert np.all(np.linalg.norm(pred - corners, axis=-1).mean(-1) < 0.5)


def test_lk_mind_flags_what_the_prior_and_the_peak_test_reject(unalignable):
    """``lk_mind`` flags exactly the raw estimates that the protocol's prior or the peak test
    rejects (no residual test: grey levels are not its objective): it keeps the inverted pairs,
    which it aligns, and flags every unrelated one."""
    inputs, templates, corners = unalignable
    raw, raw_failed = methods.get_method("lk_mind", flag_divergence=False)(inputs, templates)
    pred, failed = methods.get_method("lk_mind")(inputs, templates)
    H = np.stack([cv2.getPerspectiveTransform(TEMPLATE, c.astype(np.float32)) if np.all(np.isfinite(c))
                  else np.full((3, 3), np.nan) for c in raw])
    peak = methods.descriptor_peak_ratio(inputs, templates, H)
    expected = raw_failed | methods.diverged(raw, 192, 128) | methods.diverged(raw, 192, 128, peak_ratio=peak)
    assert failed.tolist() == expected.tolist()
    assert not failed[:3].any() and np.all(np.linalg.norm(pred[:3] - corners[:3], axis=-1).mean(-1) < 1.0)
    assert failed[3:].all()
    np.testing.assert_array_equal(pred[~failed], raw[~failed])
    assert np.isnan(pred[failed]).all()


def test_evaluate_methods_records(pairs):
    inputs, templates, corners = pairs
    summaries, errors = methods.evaluate_methods(inputs, templates, corners, ["identity", "ecc"], batch_size=4, progress=False)
    assert list(summaries) == ["identity", "ecc"]
    s = summaries["ecc"]
    assert s["n"] == 6 and s["ms_per_pair"] > 0
    assert set(s["success"]) == {"0.1", "0.5", "1", "3", "5", "10", "20"}
    assert errors["identity"].shape == (6,) and summaries["identity"]["success"]["1"] == 0.0


def test_evaluate_methods_passes_method_options(pairs):
    inputs, templates, corners = pairs
    with pytest.raises(ValueError, match="algorithm"):  # the options reach get_method("lk", ...)
        methods.evaluate_methods(inputs, templates, corners, ["identity", "lk"], progress=False,
                                 method_options={"lk": {"algorithm": "newton"}})
    with pytest.raises(ValueError, match=r"names \['sift'\], which are not among"):
        methods.evaluate_methods(inputs, templates, corners, ["identity"], progress=False,
                                 method_options={"sift": {}})


def test_lk_options_are_validated_when_the_method_is_built():
    from deeplk.lk import LKOptions

    with pytest.raises(ValueError, match="algorithm"):
        methods.get_method("lk", algorithm="newton")
    with pytest.raises(ValueError, match="max_iterations"):
        methods.get_method("hybrid", lk_options={"max_iterations": 0})
    with pytest.raises(TypeError, match="unexpected"):
        methods.get_method("lk", bogus=1)
    with pytest.raises(ValueError, match="one value per level"):
        methods.get_method("lk", lk_options=LKOptions(tolerance=(0.1, 0.1)))(
            np.zeros((1, 192, 192, 3), np.float32), np.zeros((1, 128, 128, 3), np.float32))


def test_every_family_builds_its_methods_and_only_those():
    import importlib

    for name, family in methods.FAMILIES.items():
        module = importlib.import_module(f"deeplk.models.{family}")
        assert name in module.METHOD_DESCRIPTIONS
        assert set(module.METHOD_DESCRIPTIONS) <= set(methods.FAMILIES)
        with pytest.raises(ValueError, match="not 'sift'"):
            module.build_method("sift")


def test_every_family_has_one_interface(tmp_path):
    """Each family: an architecture dataclass, stages named by their run folder (whose first part
    is one of the family's methods), and `train_stage` / `stage_dir` / `build_method` with the
    same parameters as every other family."""
    import dataclasses
    import importlib
    import inspect

    configs = {"regression": "RegressionConfig", "homography_net": "HomographyNetConfig",
               "clkn": "CLKNConfig", "dlkfm": "DLKFMConfig"}
    signatures = {}
    for family in sorted(set(methods.FAMILIES.values())):
        module = importlib.import_module(f"deeplk.models.{family}")
        assert dataclasses.is_dataclass(getattr(module, configs[family]))
        for stage in module.STAGE_NAMES:
            assert module.stage_dir(tmp_path, stage) == tmp_path / stage
            assert stage.split("/")[0] in module.METHOD_DESCRIPTIONS, stage
        with pytest.raises(ValueError, match="stage"):
            module.stage_dir(tmp_path, "nonsense")
        with pytest.raises(ValueError, match="stage"):
            module.train_stage("nonsense", None, tmp_path)
        for fn in ("train_stage", "stage_dir", "build_method"):
            params = inspect.signature(getattr(module, fn)).parameters.values()
            signatures.setdefault(fn, {})[family] = [(p.name, p.kind) for p in params]
    for fn, by_family in signatures.items():
        assert len({tuple(v) for v in by_family.values()}) == 1, (fn, by_family)
    assert [name for name, _ in signatures["train_stage"]["dlkfm"]] == [
        "stage", "dataset", "checkpoint_dir", "steps", "learning_rate", "seed", "model_config",
        "task_options", "notes", "train_options"]


def test_dlkfm_started_by_mhn_receives_the_mhn_method(monkeypatch):
    from deeplk.models import dlkfm

    mhn_predictor = object()
    got = {}
    monkeypatch.setattr(methods, "_initial_guess", lambda name, checkpoint_dir: (name, checkpoint_dir, mhn_predictor))
    monkeypatch.setattr(dlkfm, "build_dlkfm_method", lambda checkpoint_dir, **options: got.update(options, ckpt=checkpoint_dir))
    methods._REGISTRY.pop("dlkfm", None)
    methods.get_method("dlkfm", checkpoint_dir="somewhere", init="mhn")
    assert got["init_predictor"] == ("mhn", "somewhere", mhn_predictor) and got["ckpt"] == "somewhere"
    got.clear()
    methods.get_method("dlkfm", checkpoint_dir="somewhere", init="centred")
    assert got == {"init": "centred", "ckpt": "somewhere"}  # no MHN built for other starts
    methods._REGISTRY.pop("dlkfm", None)


def test_dependencies_point_one_way():
    """Nothing under deeplk/models imports deeplk.methods; deeplk.evaluate does not import viz."""
    import ast
    from pathlib import Path

    import deeplk

    root = Path(deeplk.__file__).parent

    def imports(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    for path in sorted((root / "models").glob("*.py")):
        assert "deeplk.methods" not in imports(path), path
    assert not {n for n in imports(root / "evaluate.py") if n.startswith("deeplk.viz")}
