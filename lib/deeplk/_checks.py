"""Shape and argument checks shared by the public functions of `deeplk`.

Every public function validates its inputs on entry and raises `ValueError` that names the
argument, the expected shape and the actual one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


#: Names the project spelt the American way before it settled on the British spelling
#: (architecture keys of ``model_config.json``, notebook parameters, option values): old -> new.
#: Run folders written with the old names still load (`deeplk.train.read_run_config` translates
#: them); code and profiles passing an old name are refused with a message naming the new one
#: (`renamed_hint`).
RENAMED = {"normalize": "normalise", "standardize": "standardise"}


def renamed_hint(names) -> str:
    """``" ('normalize' is now spelt 'normalise')"`` for those of `names` that are old spellings
    (`RENAMED`), ``""`` when there are none: the tail of an unknown-name error message."""
    old = [n for n in names if isinstance(n, str) and n in RENAMED]
    return f" ({', '.join(f'{n!r} is now spelt {RENAMED[n]!r}' for n in old)})" if old else ""


def _shape_str(shape: Sequence) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_shape(name: str, x, expected: Sequence, description: str = "") -> None:
    """Raise `ValueError` unless `x.shape` matches `expected`.

    `expected` holds ints for fixed dimensions and `None` for free ones, e.g. `(None, 4, 2)`.
    Works on NumPy arrays and tensors (unknown static dimensions are accepted).
    """
    shape = tuple(getattr(x, "shape", np.shape(x)))
    shape = tuple(None if d is None else int(d) for d in shape)
    ok = len(shape) == len(expected) and all(
        e is None or a is None or a == e for a, e in zip(shape, expected)
    )
    if not ok:
        what = f" ({description})" if description else ""
        raise ValueError(
            f"`{name}` must have shape {_shape_str(expected)}{what}, got {_shape_str(shape)}"
        )


def check_positive_int(name: str, value) -> int:
    """Return `value` as int, or raise `ValueError` naming `name` if it is not a positive integer."""
    if isinstance(value, bool) or not float(value).is_integer() or int(value) <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative(name: str, value) -> float:
    """Return `value` as float, or raise `ValueError` naming `name` unless it is a finite real
    number >= 0 (bools and strings are refused)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.floating, np.integer))
                                       and np.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """Return `value` as bool, or raise `ValueError` naming `name` unless it is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def check_momentum(name: str, value) -> float:
    """Return `value` as float, or raise `ValueError` naming `name` unless it is a number in
    [0, 1) (a moving-average momentum)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}")
    return float(value)
