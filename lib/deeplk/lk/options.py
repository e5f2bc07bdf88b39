"""`LKOptions`: the settings of the Lucas-Kanade solver as one validated, immutable object.

Every entry point of `deeplk.lk` (`lucas_kanade`, `pyramid_lucas_kanade`, `align_images`,
`LucasKanadeLayer`) and every caller that configures it (the DLKFM aligner, the ``lk`` and
``hybrid`` methods) takes one `LKOptions`; a bad value fails when the object is made, with an
error naming the field. Per-level settings left at ``None`` take the defaults of the function
that runs them (`lucas_kanade`: 50 iterations, tolerance 0.01; `pyramid_lucas_kanade`: 30 / 10
/ 5 iterations; `align_images`: its tuned defaults), resolved for the number of levels by
`LKOptions.resolve`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from deeplk._checks import check_positive_int

__all__ = ["LKOptions", "ALGORITHMS", "MOTIONS"]

#: Update rules (``algorithm``): see `deeplk.lk.solver`.
ALGORITHMS = ("inverse_compositional", "esm")
#: Restricted motion models of the coarse stages (``coarse_motions``).
MOTIONS = ("translation", "affine")

PerLevel = Union[None, int, float, str, Sequence]


def _non_negative(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)):
        v = float("nan")
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return v


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def _algorithm(name: str, value) -> str:
    if value not in ALGORITHMS:
        raise ValueError(f"`{name}` must be one of {ALGORITHMS}, got {value!r}")
    return str(value)


def _scalar_or_levels(name: str, value, check):
    """``None``, one checked value, or a non-empty tuple of checked values (one per level)."""
    if value is None:
        return None
    if isinstance(value, str) or np.ndim(value) == 0:
        return check(name, value)
    values = tuple(check(name, v) for v in np.asarray(value, dtype=object).reshape(-1))
    if not values:
        raise ValueError(f"`{name}` must be a value or one value per level, got {value!r}")
    return values


def _motions(value) -> Optional[tuple]:
    if value is None:
        return None
    out = []
    try:
        stages = list(value)
    except TypeError:
        stages = [value]
    for stage in stages:
        if isinstance(stage, str) or np.ndim(stage) != 1 or len(stage) != 2 or stage[0] not in MOTIONS:
            raise ValueError(
                f"`coarse_motions` must be a sequence of (motion, max_iterations) with motion in "
                f"{MOTIONS}, got {value!r}"
            )
        out.append((str(stage[0]), check_positive_int("coarse_motions iterations", stage[1])))
    return tuple(out)


class LevelSettings(NamedTuple):
    """`LKOptions` resolved for a number of levels (coarsest first)."""

    max_iterations: tuple
    tolerance: tuple
    algorithm: tuple
    coarse_motions: tuple


@dataclass(frozen=True)
class LKOptions:
    """Settings of the Lucas-Kanade solver, validated on construction (ValueError naming the
    field); immutable (derive variants with `replace`).

    Attributes:
        max_iterations: updates per sample and level: an int, one int per level (coarsest
            first), or ``None`` (the running function's default).
        tolerance: a sample stops once an update moves its template corners by less than this
            many pixels of the level (maximum over the corners): a number, one per level, or
            ``None`` (the function's default).
        damping: relative Levenberg-Marquardt damping, ``Hessian + damping * trace / 8 * I``.
        adaptive_damping: reject error-increasing steps and adapt the damping per sample.
        masked_hessian: recompute the Hessian over the valid pixels at every iteration.
        min_rcond: a template whose undamped Hessian has an estimated reciprocal condition number
            below this fails (textureless, or texture in one direction only).
        min_valid_fraction: a sample fails if fewer than this fraction of its template pixels
            sample inside the input.
        algorithm: ``"inverse_compositional"`` or ``"esm"``, one per level, or ``None`` (the
            function's default).
        coarse_motions: ``((motion, max_iterations), ...)`` stages with a restricted motion
            model (``"translation"``, ``"affine"``) at the coarsest level before the full
            homography; ``()`` none; ``None`` the function's default.
        half_pixel_centers: coordinate convention between pyramid levels (True: pixel areas, as
            2x2 average pooling; False: corner-aligned, as strided sampling).

    >>> LKOptions(max_iterations=(15, 5, 2), algorithm="esm").replace(damping=1e-3).damping
    0.001
    """

    max_iterations: PerLevel = None
    tolerance: PerLevel = None
    damping: float = 1e-4
    adaptive_damping: bool = False
    masked_hessian: bool = False
    min_rcond: float = 1e-7
    min_valid_fraction: float = 0.1
    algorithm: PerLevel = None
    coarse_motions: Optional[Sequence] = None
    half_pixel_centers: bool = True

    def __post_init__(self):
        values = {
            "max_iterations": _scalar_or_levels("max_iterations", self.max_iterations, check_positive_int),
            "tolerance": _scalar_or_levels("tolerance", self.tolerance, _non_negative),
            "damping": _non_negative("damping", self.damping),
            "adaptive_damping": _flag("adaptive_damping", self.adaptive_damping),
            "masked_hessian": _flag("masked_hessian", self.masked_hessian),
            "min_rcond": _non_negative("min_rcond", self.min_rcond),
            "min_valid_fraction": _non_negative("min_valid_fraction", self.min_valid_fraction),
            "algorithm": _scalar_or_levels("algorithm", self.algorithm, _algorithm),
            "coarse_motions": _motions(self.coarse_motions),
            "half_pixel_centers": _flag("half_pixel_centers", self.half_pixel_centers),
        }
        if values["min_valid_fraction"] > 1:
            raise ValueError(f"`min_valid_fraction` must be in [0, 1], got {self.min_valid_fraction!r}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def coerce(cls, options: Union[None, "LKOptions", Mapping] = None, **settings) -> "LKOptions":
        """An `LKOptions` from ``None`` (the defaults), an `LKOptions` or a dict of its fields
        (e.g. a saved config), with `settings` (field names) replacing entries.

        Raises:
            TypeError: a name that is not a field; ValueError: a bad value.
        """
        if options is None:
            base = cls()
        elif isinstance(options, LKOptions):
            base = options
        elif isinstance(options, Mapping):
            base = cls(**options)
        else:
            raise TypeError(f"`options` must be an LKOptions, a dict of its fields or None, got "
                            f"{type(options).__name__}")
        return base.replace(**settings) if settings else base

    def replace(self, **changes) -> "LKOptions":
        """A copy with `changes` (field names), validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as plain JSON-friendly values (tuples as lists): ``LKOptions(**d)`` gives
        the same options back."""
        out = {}
        for field in dataclasses.fields(self):
            v = getattr(self, field.name)
            if isinstance(v, tuple):
                v = [list(s) if isinstance(s, tuple) else s for s in v]
            out[field.name] = v
        return out

    def resolve(self, levels: int, *, max_iterations: tuple, tolerance: tuple, algorithm: tuple,
                coarse_motions: tuple) -> LevelSettings:
        """Per-level settings for `levels` levels; the keyword arguments are the running
        function's defaults (one value per level) for the fields left at ``None``.

        Raises:
            ValueError: a per-level field whose length is not `levels`.
        """

        def per_level(name, value, default):
            if value is None:
                return tuple(default)
            if not isinstance(value, tuple):
                return (value,) * levels
            if len(value) != levels:
                raise ValueError(f"`{name}` must be a scalar or one value per level ({levels}), "
                                 f"got {value!r}")
            return value

        return LevelSettings(
            per_level("max_iterations", self.max_iterations, max_iterations),
            per_level("tolerance", self.tolerance, tolerance),
            per_level("algorithm", self.algorithm, algorithm),
            tuple(coarse_motions) if self.coarse_motions is None else self.coarse_motions,
        )
