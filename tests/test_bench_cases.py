"""The training-step benchmark cases of ``bench/cases.py`` (used by ``bench/train_step.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deeplk.geometry import corners_to_homography
from deeplk.models import homography_net as hn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cases  # noqa: E402

TINY = dict(vgg_weights=None, input_size=48, template_size=32, inception_filters=4,
            num_inception_blocks=3, dense_units=16)


def test_regression_cases():
    task, batch = cases.regression_case("dhn_half", batch_size=2)
    assert batch[0].shape == (2, 192, 192, 3) and batch[1].shape == (2, 128, 128, 3)
    assert task.net_config["input_scale"] == 0.5 and not task.previous
    demo, _ = cases.regression_case("dhn_demo", batch_size=1)
    assert demo.net_config["input_scale"] == 0.25 and demo.net_config["normalise"]
    assert len(cases.regression_case("mhn_stage3", batch_size=1)[0].previous) == 2
    with pytest.raises(ValueError, match="benchmark case"):
        cases.regression_case("nope")


def test_homography_net_cases():
    task, (inputs, templates, corners) = cases.homography_net_case("hnet_unsup", batch_size=2, **TINY)
    assert isinstance(task, hn.UnsupervisedTask)
    assert inputs.shape == (2, 48, 48, 3) and templates.shape == (2, 32, 32, 3) and corners.shape == (2, 4, 2)
    loss = hn.masked_photometric_l1(inputs, templates, corners_to_homography(corners, 32))
    assert float(loss) < 1e-5  # the templates are cut from the inputs at the corners
    assert task.loss_pools == (1,)
    pooled, _ = cases.homography_net_case("hnet_unsup", batch_size=2, loss_pools=(2, 4), **TINY)
    assert pooled.loss_pools == (2, 4) and pooled.outside_weight == 0.0
    assert cases.homography_net_case("hnet_unsup", batch_size=2, outside_weight=0.1, **TINY)[0].outside_weight == 0.1
    with pytest.raises(ValueError, match="loss_pools"):
        cases.homography_net_case("hnet_sup", batch_size=2, loss_pools=(2,), **TINY)
    with pytest.raises(ValueError, match="name"):
        cases.homography_net_case("dhn")


def test_train_step_script_lists_the_cases():
    import train_step

    assert {"dhn", "dhn_half", "dhn_demo", "mhn_stage2", "mhn_stage3", "hnet_sup", "hnet_unsup"} <= set(train_step.CASES)
    task, batch = train_step.CASES["dhn_demo"][0](1)
    assert batch[0].shape == (1, 192, 192, 3)
