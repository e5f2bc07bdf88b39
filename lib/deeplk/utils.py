"""Small helpers shared by notebooks and scripts."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy, TensorFlow and Keras from one integer; return a NumPy Generator.

    Notebooks call this once, in their first code cell after the parameters.
    """
    seed = int(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:  # TensorFlow is optional for data-only scripts
        import keras

        keras.utils.set_random_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)
