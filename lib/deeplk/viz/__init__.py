"""Pictures, animations and widgets: samples with outlines, feature maps, LK playback, loss landscapes.

Figures are returned (never shown) so that notebooks display them and scripts save them; files are
written through a temporary name and renamed when complete.

- `deeplk.viz.figures`: `show_samples`, `draw_quadrilateral`, `save_figure`, and exact ``uint8``
  arrays (`overlay_array`, `draw_outline`, `feature_grid`, ...); imported eagerly (no TensorFlow).
- `deeplk.viz.sources`: feature functions ``(images, level, branch) -> (B, h, w, C)``
  (`intensity_source`, `untrained_source`, `dlkfm_source`, `load_learned_source`, `FeatureSource`).
- `deeplk.viz.playback`: LK iterations frame by frame (`run_playback`, `Playback`),
  `playback_frames`, `save_animation` (GIF, MP4 with ffmpeg).
- `deeplk.viz.landscape`: `loss_landscape`, `alignment_loss`, `plot_landscapes`.
- `deeplk.viz.explore`: the `Explorer` callbacks of notebook 06, `build_widgets`,
  `frontend_available`.
- `deeplk.viz.report`: `plot_success_curves`, `save_success_curve` (figures of an evaluation).

Every public name of the submodules is also available here (``from deeplk import viz;
viz.overlay_array``); the TensorFlow-backed submodules load on first use.
"""

from __future__ import annotations

import importlib

from deeplk.viz.figures import *  # noqa: F401,F403
from deeplk.viz.figures import __all__ as _figures_all

_LAZY_MODULES = ("sources", "playback", "landscape", "explore", "report")
_LAZY_NAMES = {
    "sources": ("BRANCHES", "FeatureSource", "intensity_source", "untrained_source", "level_scale", "dlkfm_source",
                "load_learned_source"),
    "playback": ("Playback", "playback_from_history", "trace_pyramid_lk", "run_playback", "playback_frames",
                 "save_animation", "plot_playback", "filmstrip_frames", "plot_filmstrip"),
    "landscape": ("PARAMETERS", "Landscape", "alignment_loss", "perturbed_homographies", "loss_landscape",
                  "plot_landscapes"),
    "report": ("plot_success_curves", "save_success_curve"),
    "explore": ("CHANNEL_VIEWS", "Explorer", "channel_map", "build_widgets", "frontend_available",
                "untrained_banner"),
}
_WHERE = {name: module for module, names in _LAZY_NAMES.items() for name in names}

__all__ = list(_figures_all) + list(_WHERE)


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"deeplk.viz.{name}")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'deeplk.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deeplk.viz.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_LAZY_MODULES))
