"""Shared pytest setup: quiet TensorFlow, a seeded random generator, the DLKFM corner sampler."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np
import pytest

#: Template corners (128 x 128) and where an unperturbed template sits in the 192 x 192 input.
TEMPLATE_CORNERS_128 = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], dtype=np.float64)
INPUT_CORNERS_192 = np.array([[32, 32], [159, 32], [159, 159], [32, 159]], dtype=np.float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20210619)


@pytest.fixture
def dlkfm_corners(rng):
    """Factory ``(batch, dtype=np.float32) -> (template corners, input corners)``, each
    ``(batch, 4, 2)``: the 128 template's corners and the centred 128 square of the 192 input plus
    uniform integer perturbations in [-32, 31] per coordinate (DLKFM sampling)."""

    def sample(batch: int, dtype=np.float32):
        src = np.broadcast_to(TEMPLATE_CORNERS_128, (batch, 4, 2)).astype(dtype)
        dst = (INPUT_CORNERS_192 + rng.integers(-32, 32, size=(batch, 4, 2))).astype(dtype)
        return src, dst

    return sample


@pytest.fixture(autouse=True)
def _working_directory_unchanged():
    """A test that leaves the process in another directory breaks every later relative path
    (nbval's ``--nbval-sanitize-with notebooks/...``): restore it and fail the test."""
    before = os.getcwd()
    yield
    after = os.getcwd()
    if after != before:
        os.chdir(before)
        pytest.fail(f"the test changed the working directory to {after!r}")
