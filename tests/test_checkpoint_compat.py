"""Run folders written before `deeplk.train.write_run_config` (one ``model_config.json`` per run
folder, written by the training loop) still load, and an unknown layout is refused with a message
that says how to convert it.

The old files are written here by hand, exactly as the earlier code wrote them: the regression
stages' ``model_config.json`` of format 1, HomographyNet's ``model_config.json`` without a format,
CLKN's ``clkn_config.json`` and DLKFM's one ``dlkfm/config.json`` for every level folder; and
``model_config.json`` files of the current format written before the architecture names were spelt
the British way (``normalize``, ``standardize``, ``input_norm="standardize"``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from deeplk import methods
from deeplk.models import clkn, dlkfm, homography_net, regression
from deeplk.train import FINAL_WEIGHTS_NAME, RUN_CONFIG_NAME, read_run_config

BASE = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], np.float64)


def _pairs(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 192, 192, 3), dtype=np.float32), rng.random((n, 128, 128, 3), dtype=np.float32)


def test_regression_format_1_loads(tmp_path):
    net_options = dict(filters=(2, 2), final_filters=4, dense_units=8, input_scale=0.25)
    folder = tmp_path / "dhn"
    folder.mkdir()
    net = regression.RegressionNet(**net_options)
    net.build((None, 192, 192, 2))
    offsets = np.array([7, -3, -12, 4, 9, 11, -6, -8], np.float32)
    net.layers[-1].bias.assign(offsets / net.offset_scale)  # the last dense layer: constant output
    net.save_weights(str(folder / FINAL_WEIGHTS_NAME))
    (folder / "model_config.json").write_text(json.dumps(
        {"format": 1, "model": "dhn", "stage": 1, "net": net.get_config()}, indent=2))

    record = read_run_config(folder)
    assert (record.family, record.legacy, record.task) == ("regression", "regression format 1",
                                                           {"model": "dhn", "stage": 1})
    corners, failed = methods.get_method("dhn", checkpoint_dir=tmp_path)(*_pairs())
    assert not failed.any()
    np.testing.assert_allclose(corners, np.broadcast_to(BASE + offsets.reshape(4, 2), (2, 4, 2)), atol=1e-4)


def test_homography_net_unversioned_config_loads(tmp_path):
    options = dict(vgg_weights=None, input_scale=0.25, inception_filters=4, num_inception_blocks=2,
                   dense_units=16)
    folder = homography_net.stage_dir(tmp_path, "hnet_sup/rho16")
    folder.mkdir(parents=True)
    (folder / "model_config.json").write_text(json.dumps(
        {"mode": "supervised", "rho": 16, "pairs": "synthetic", "model": options}))
    model = homography_net.HomographyNet(**options).build_for_inputs()
    offsets = np.arange(8, dtype=np.float32) - 4
    model.out.bias.assign(offsets / model.offset_scale)
    model.save_weights(str(folder / FINAL_WEIGHTS_NAME))

    assert read_run_config(folder).family == "homography_net"
    corners, failed = methods.get_method("hnet_sup", checkpoint_dir=tmp_path)(*_pairs())
    assert not failed.any()
    np.testing.assert_allclose(corners, np.broadcast_to(BASE + offsets.reshape(4, 2), (2, 4, 2)), atol=1e-4)


def test_clkn_config_json_loads(tmp_path):
    config = dict(levels=3, filters=[4, 4, 4], depth=[1, 1, 1], channels=4, lk_iterations=1,
                  damping=1e-4, standardize=False)
    new = {**{k: v for k, v in config.items() if k != "standardize"}, "standardise": False}
    folder = tmp_path / "clkn"
    folder.mkdir()
    (folder / "clkn_config.json").write_text(json.dumps(
        {"format": 1, "model": config, "training": {"margins": [2.0, 1.0, 0.5]}}, indent=1))
    model = clkn.CLKNTask(new).build_model()
    model.save_weights(str(folder / FINAL_WEIGHTS_NAME))

    record = read_run_config(folder, "clkn")
    assert record.legacy == "clkn_config.json" and record.task == {"margins": [2.0, 1.0, 0.5]}
    assert record.model == new
    loaded = clkn.load_clkn(folder)
    assert loaded.model_config() == new and loaded.standardise is False
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    corners, failed = methods.get_method("clkn", checkpoint_dir=tmp_path, jit_compile=False)(*_pairs())
    assert corners.shape == (2, 4, 2) and failed.shape == (2,)


def test_dlkfm_shared_config_json_loads(tmp_path):
    # The old config.json had no "normalize" key: those models were trained without it.
    arch = dict(channels=4, num_blocks=1, leaky_alpha=0.2, bn_momentum=0.9, feature_type="regular")
    root = tmp_path / "dlkfm"
    (root / "level1").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(arch, indent=2) + "\n")
    model = dlkfm.make_dlkfm_net(1, **arch)
    model.save_weights(str(root / "level1" / FINAL_WEIGHTS_NAME))

    assert dlkfm.trained_levels(tmp_path) == [1]
    assert dlkfm.level_architecture(tmp_path, 1) == {**arch, "normalise": False, "input_representation": "rgb"}
    loaded = dlkfm.load_dlkfm(tmp_path, 1)
    assert loaded.normalise is False and loaded.channels == 4
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Level 2 trained on top of it takes the old architecture.
    assert dlkfm.DLKFMTask(2, tmp_path).arch == {**arch, "normalise": False, "input_representation": "rgb"}


def _format_2(folder, family, model, task, weights_of):
    """A run folder as the training loop wrote it before the British names: the record by hand,
    the weights of `weights_of` (the same architecture built by the current code)."""
    folder.mkdir(parents=True)
    (folder / RUN_CONFIG_NAME).write_text(json.dumps(
        {"format": 2, "family": family, "model": model, "task": task}, indent=1, sort_keys=True) + "\n")
    weights_of.save_weights(str(folder / FINAL_WEIGHTS_NAME))
    return weights_of.get_weights()


def _assert_same_weights(model, weights):
    assert len(model.get_weights()) == len(weights)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def test_american_keys_of_format_2_load_with_the_british_names(tmp_path):
    # regression: "normalize" (True: not the default, so a dropped key would show)
    net = dict(filters=[2, 2], final_filters=4, dense_units=8, dropout=0.0, input_scale=0.25,
               batch_norm=True, offset_scale=32.0, bn_momentum=0.9)
    weights = _format_2(tmp_path / "dhn", "regression", {**net, "normalize": True}, {"model": "dhn", "stage": 1},
                        regression._net({**net, "normalise": True}))
    assert read_run_config(tmp_path / "dhn").model == {**net, "normalise": True}
    loaded = regression.load_stage(tmp_path / "dhn")
    assert loaded.normalise is True
    _assert_same_weights(loaded, weights)

    # CLKN: "standardize" (False: not the default)
    arch = dict(levels=2, filters=[4, 4], depth=[1, 1], channels=4, lk_iterations=1, damping=1e-4)
    weights = _format_2(tmp_path / "clkn", "clkn", {**arch, "standardize": False}, {"margins": [2.0, 1.0]},
                        clkn.CLKNTask({**arch, "standardise": False}).build_model())
    loaded = clkn.load_clkn(tmp_path / "clkn")
    assert loaded.standardise is False and loaded.model_config() == {**arch, "standardise": False}
    _assert_same_weights(loaded, weights)

    # DLKFM: "normalize" (True: the older layout's missing key meant False)
    arch = dict(channels=4, num_blocks=1, leaky_alpha=0.2, bn_momentum=0.9, feature_type="regular",
                input_representation="rgb")
    weights = _format_2(tmp_path / "dlkfm" / "level1", "dlkfm", {**arch, "normalize": True}, {"level": 1},
                        dlkfm.make_dlkfm_net(1, **arch, normalise=True))
    assert dlkfm.level_architecture(tmp_path, 1) == {**arch, "normalise": True}
    loaded = dlkfm.load_dlkfm(tmp_path, 1)
    assert loaded.normalise is True
    _assert_same_weights(loaded, weights)

    # HomographyNet: the value input_norm="standardize"
    options = dict(vgg_weights=None, input_scale=0.25, inception_filters=4, num_inception_blocks=2,
                   dense_units=16)
    folder = homography_net.stage_dir(tmp_path, "hnet_sup/rho16")
    weights = _format_2(folder, "homography_net", {**options, "input_norm": "standardize"},
                        {"mode": "supervised", "rho": 16},
                        homography_net.HomographyNet(**options, input_norm="standardise").build_for_inputs())
    loaded, rho = homography_net.load_stage_model(tmp_path, "supervised")
    assert rho == 16 and loaded.input_norm == "standardise"
    _assert_same_weights(loaded, weights)


def test_american_names_from_code_are_refused_with_the_british_one():
    with pytest.raises(ValueError, match="'normalize' is now spelt 'normalise'"):
        regression._config({"normalize": True})
    with pytest.raises(ValueError, match="'standardize' is now spelt 'standardise'"):
        clkn.CLKNTask({"standardize": False})
    with pytest.raises(ValueError, match="'normalize' is now spelt 'normalise'"):
        dlkfm.train_stage("dlkfm/level1", None, model_config={"normalize": True})
    with pytest.raises(ValueError, match="'standardize' is now spelt 'standardise'"):
        homography_net.HomographyNet(vgg_weights=None, input_norm="standardize")


@pytest.mark.parametrize("record", [
    {"format": 7, "family": "clkn", "model": {}},
    {"format": 1, "something": "else"},
])
def test_unknown_layout_is_refused_with_how_to_convert(tmp_path, record):
    folder = tmp_path / "clkn"
    folder.mkdir()
    (folder / RUN_CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="write_run_config") as info:
        clkn.load_clkn(folder)
    assert str(folder / RUN_CONFIG_NAME) in str(info.value)


def test_new_record_of_another_family_is_refused(tmp_path):
    folder = tmp_path / "clkn"
    (folder).mkdir()
    (folder / RUN_CONFIG_NAME).write_text(json.dumps(
        {"format": 2, "family": "dlkfm", "model": {}, "task": {}}))
    with pytest.raises(ValueError, match="'dlkfm' model, expected 'clkn'"):
        clkn.load_clkn(folder)
