"""The feature-map explorer behind notebook 06: callbacks that return figures, and their widgets.

`Explorer` holds a few samples and feature sources (learned features, intensities) and answers
the questions of the notebook with plain methods that return Matplotlib figures or arrays:

- `Explorer.feature_figure(sample, level, branch, channel)`: input, template, their feature maps
  (one channel, the mean absolute activation or DLKFM's "special" map) and the aligned overlay;
- `Explorer.playback_figure(sample, iteration)`: the LK estimate at one frame of the
  coarse-to-fine iterations, for every source, with the corner-error curves;
- `Explorer.landscape_figure(sample, params, radius, steps, level)`: the alignment loss around
  the true H for every source;
- `Explorer.save_animation(source, sample, path)`: the playback as a GIF (+ MP4 with ffmpeg).

`build_widgets` wires these callbacks to ipywidgets (sliders for sample and iteration,
dropdowns for source, level, branch and channel). Notebooks call it only when
`frontend_available()` says a live frontend will render the widgets; under papermill or nbval
they show the same callbacks' static figures.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence, Union

import numpy as np

from deeplk._checks import check_shape
from deeplk.viz.figures import (PRED_COLOUR, TRUE_COLOUR, draw_quadrilateral, feature_grid, normalise_map,
                                overlay_array, show_image)
from deeplk.viz.sources import BRANCHES, FeatureSource

__all__ = ["CHANNEL_VIEWS", "Explorer", "channel_map", "build_widgets", "frontend_available", "untrained_banner"]

#: Channel choices besides a channel index: DLKFM's one-channel map and the mean |activation|.
CHANNEL_VIEWS = ("special", "mean")

Channel = Union[int, str]


def channel_map(features, channel: Channel) -> np.ndarray:
    """One 2-D view ``(h, w)`` of a feature map ``(h, w, C)``.

    Args:
        features: ``(h, w, C)`` map.
        channel: a channel index (``0 <= channel < C``), ``"special"`` (DLKFM's special map of
            all channels, `deeplk.features.special_feature_map`; identically 0 for one channel) or
            ``"mean"`` (mean absolute value over the channels).
    """
    f = np.asarray(features, dtype=np.float32)
    check_shape("features", f, (None, None, None), "h x w x C feature map")
    if isinstance(channel, str):
        if channel == "special":
            from deeplk.features import special_feature_map

            return special_feature_map(f[None]).numpy()[0, ..., 0]
        if channel == "mean":
            return np.abs(f).mean(axis=-1)
        raise ValueError(f"`channel` must be an index or one of {CHANNEL_VIEWS}, got {channel!r}")
    if isinstance(channel, bool) or int(channel) != channel or not 0 <= int(channel) < f.shape[-1]:
        raise ValueError(f"`channel` must be an index in [0, {f.shape[-1]}) or one of {CHANNEL_VIEWS}, got {channel!r}")
    return f[..., int(channel)]


def untrained_banner(source: FeatureSource) -> str:
    """The warning shown with every figure of an untrained source (empty for a trained one)."""
    if source.trained:
        return ""
    return (f"UNTRAINED WEIGHTS: {source.name!r} is a random initialisation ({source.note}). "
            "Its maps show the architecture, not what DLKFM learns; train it for real features.")


class Explorer:
    """Samples + feature sources, with cached features and LK playbacks (module docstring).

    Args:
        inputs: ``(N, 192, 192, 3)`` inputs in [0, 1]; templates: ``(N, 128, 128, 3)``;
            corners: ``(N, 4, 2)`` ground truth (display only: LK never sees it).
        sources: feature sources, e.g. ``[learned, intensity_source()]``; the first is the
            default of the feature view.
        names: optional sample names for titles.
        lk_options: options of `deeplk.viz.playback.trace_pyramid_lk` (``max_iterations``,
            ``tolerance``, ``jit_compile``, ...).
    """

    def __init__(self, inputs, templates, corners, sources: Sequence[FeatureSource], names=None,
                 lk_options: Optional[dict] = None):
        inputs = np.asarray(inputs, dtype=np.float32)
        templates = np.asarray(templates, dtype=np.float32)
        corners = np.asarray(corners, dtype=np.float64)
        check_shape("inputs", inputs, (None, None, None, 3), "N x Hi x Wi x 3")
        n = inputs.shape[0]
        check_shape("templates", templates, (n, None, None, 3), "N x h x w x 3")
        check_shape("corners", corners, (n, 4, 2), "N x 4 x 2")
        if n == 0:
            raise ValueError("`inputs` is empty")
        sources = list(sources)
        if not sources:
            raise ValueError("`sources` is empty")
        self.sources = {s.name: s for s in sources}
        if len(self.sources) != len(sources):
            raise ValueError(f"source names must be distinct, got {[s.name for s in sources]}")
        self.inputs, self.templates, self.corners = inputs, templates, corners
        self.names = list(names) if names is not None else [f"#{i}" for i in range(n)]
        self.lk_options = dict(lk_options or {})
        self._features: dict = {}
        self._playbacks: dict = {}

    def __len__(self) -> int:
        return self.inputs.shape[0]

    # -- data ---------------------------------------------------------------------------------

    def source(self, name: Optional[str] = None) -> FeatureSource:
        """The source called `name` (default: the first one)."""
        if name is None:
            return next(iter(self.sources.values()))
        if name not in self.sources:
            raise ValueError(f"unknown source {name!r}; available: {list(self.sources)}")
        return self.sources[name]

    def _check_sample(self, sample: int) -> int:
        if isinstance(sample, bool) or int(sample) != sample or not 0 <= int(sample) < len(self):
            raise ValueError(f"`sample` must be an index in [0, {len(self)}), got {sample!r}")
        return int(sample)

    def features(self, sample: int, level: int, branch: str, source: Optional[str] = None) -> np.ndarray:
        """``(h, w, C)`` features of the sample's input or template at `level` (cached)."""
        sample = self._check_sample(sample)
        src = self.source(source)
        key = (src.name, sample, level, branch)
        if key not in self._features:
            images = self.inputs if branch == "input" else self.templates
            self._features[key] = src(images[sample:sample + 1], level, branch)[0]
        return self._features[key]

    def playback(self, sample: int, source: Optional[str] = None):
        """The LK `Playback` of the sample on the source's features (cached)."""
        from deeplk.viz.playback import run_playback

        sample = self._check_sample(sample)
        src = self.source(source)
        key = (src.name, sample)
        if key not in self._playbacks:
            self._playbacks[key] = run_playback(src, self.inputs[sample], self.templates[sample], self.corners[sample],
                                                **self.lk_options)
        return self._playbacks[key]

    # -- callbacks ----------------------------------------------------------------------------

    def feature_figure(self, sample: int = 0, level: int = 1, branch: str = "input", channel: Channel = 0,
                       source: Optional[str] = None, max_grid_channels: int = 16):
        """Figure: input (true outline green, LK estimate red dashed), template, aligned overlay;
        below, the input's and the template's map at `level` for `channel`, and the first channels
        of the `branch` features. Untrained sources carry a red banner. A one-channel source (the
        intensities) shows that channel for ``channel="special"``, whose map would be flat."""
        import matplotlib.pyplot as plt

        src = self.source(source)
        if branch not in BRANCHES:
            raise ValueError(f"`branch` must be one of {BRANCHES}, got {branch!r}")
        sample = self._check_sample(sample)
        f_in = self.features(sample, level, "input", src.name)
        f_t = self.features(sample, level, "template", src.name)
        if not isinstance(channel, str) and int(channel) >= f_in.shape[-1]:
            channel = f_in.shape[-1] - 1  # e.g. a channel index from a 64-channel source on intensities
        why = ""
        if channel == "special" and f_in.shape[-1] == 1:
            # The special map of one channel is identically 0 (flat panels): show the channel
            # itself, what LK aligns on such a source (grey intensities for `intensity_source`).
            channel, why = 0, "\n(one channel: no special map)"
        pb = self.playback(sample, src.name)
        pred_H, pred = pb.H[-1], pb.corners[-1]
        true = self.corners[sample]
        fig, axes = plt.subplots(2, 3, figsize=(11, 8.2))
        show_image(axes[0, 0], self.inputs[sample], f"input {self.names[sample]}")
        draw_quadrilateral(axes[0, 0], true, TRUE_COLOUR, label="true")
        draw_quadrilateral(axes[0, 0], pred, PRED_COLOUR, label=f"LK on {src.name}", linestyle="--")
        axes[0, 0].legend(loc="lower left", fontsize=7)
        show_image(axes[0, 1], self.templates[sample], "template")
        err = pb.errors[-1]
        show_image(axes[0, 2], overlay_array(self.inputs[sample], self.templates[sample], pred_H),
                   f"template warped by the LK estimate\nPE {err:.2f} px" + (" (failed)" if pb.failed else ""))
        draw_quadrilateral(axes[0, 2], true, TRUE_COLOUR)
        draw_quadrilateral(axes[0, 2], pred, PRED_COLOUR, linestyle="--")
        hi, wi = self.inputs.shape[1:3]
        for ax in axes[0, ::2]:  # the estimate may leave the image: keep the image's frame (+16 px)
            ax.set_xlim(-16.5, wi + 15.5)
            ax.set_ylim(hi + 15.5, -16.5)
        what = channel if isinstance(channel, str) else f"channel {channel}{why}"
        show_image(axes[1, 0], normalise_map(channel_map(f_in, channel)), f"input features, level {level}, {what}", cmap="viridis")
        show_image(axes[1, 1], normalise_map(channel_map(f_t, channel)), f"template features, level {level}, {what}", cmap="viridis")
        f_b = f_in if branch == "input" else f_t
        if channel == "special":
            show_image(axes[1, 2], normalise_map(channel_map(f_b, "special")), f"{branch} branch: special map", cmap="viridis")
        else:
            k = min(f_b.shape[-1], max_grid_channels)
            show_image(axes[1, 2], feature_grid(f_b, max_channels=k),
                       f"{branch} branch: channel{'s 0-' if k > 1 else ' '}{k - 1} of {f_b.shape[-1]}", cmap="viridis")
        title = f"{src.label} features · {f_in.shape[-1]} channels · level {level} ({f_in.shape[1]}/{f_t.shape[1]} px)"
        fig.suptitle(title, fontsize=11)
        banner = untrained_banner(src)
        if banner:
            fig.text(0.5, 0.005, banner, ha="center", va="bottom", color="white", fontsize=8, wrap=True,
                     bbox=dict(facecolor="#d62728", edgecolor="none", boxstyle="round,pad=0.3"))
        fig.tight_layout(rect=(0, 0.04 if banner else 0, 1, 0.96), h_pad=2.5)
        return fig

    def num_frames(self, sample: int) -> int:
        """Frames of the longest playback of the sample over the sources."""
        return max(len(self.playback(sample, name)) for name in self.sources)

    def playback_figure(self, sample: int = 0, iteration: int = 0, sources: Optional[Sequence[str]] = None):
        """Figure for frame `iteration` of the LK playbacks of every source (see
        `deeplk.viz.playback.plot_playback`)."""
        from deeplk.viz.playback import plot_playback

        sample = self._check_sample(sample)
        names = list(self.sources) if sources is None else list(sources)
        pbs = {self.source(n).label: self.playback(sample, n) for n in names}
        fig = plot_playback(self.inputs[sample], self.templates[sample], pbs, int(iteration))
        banners = [untrained_banner(self.source(n)) for n in names if not self.source(n).trained]
        if banners:
            fig.suptitle("UNTRAINED WEIGHTS in: " + ", ".join(n for n in names if not self.source(n).trained),
                         color="#d62728", fontsize=9)
            fig.tight_layout()
        return fig

    def filmstrip_figure(self, sample: int = 0, source: Optional[str] = None, frames=None):
        """The playback of the sample on `source` at a few frames (default: the first of every
        level and the last), `deeplk.viz.playback.plot_filmstrip`."""
        from deeplk.viz.playback import plot_filmstrip

        sample = self._check_sample(sample)
        src = self.source(source)
        return plot_filmstrip(self.inputs[sample], self.templates[sample], self.playback(sample, src.name), frames,
                              title=f"LK on {src.label}")

    def landscapes(self, sample: int = 0, params=("tx", "ty"), radius: float = 16.0, steps: int = 17,
                   level: int = 1, sources: Optional[Sequence[str]] = None) -> list:
        """`deeplk.viz.landscape.Landscape` of every source for the sample, on the maps LK aligns
        (``source.lk_features``)."""
        from deeplk.viz.landscape import loss_landscape

        sample = self._check_sample(sample)
        out = []
        for name in (list(self.sources) if sources is None else list(sources)):
            src = self.source(name)
            fi, ft = self.features(sample, level, "input", name), self.features(sample, level, "template", name)
            if src.lk_features == "special":
                fi, ft = channel_map(fi, "special")[..., None], channel_map(ft, "special")[..., None]
            out.append(loss_landscape(fi[None], ft[None], self.corners[sample], params, radius, steps, level,
                                      template_size=self.templates.shape[1:3], name=src.label,
                                      half_pixel_centers=src.half_pixel_centers))
        return out

    def landscape_figure(self, sample: int = 0, params=("tx", "ty"), radius: float = 16.0, steps: int = 17,
                         level: int = 1, sources: Optional[Sequence[str]] = None):
        """Figure: the landscapes of every source side by side (`plot_landscapes`)."""
        from deeplk.viz.landscape import plot_landscapes

        return plot_landscapes(self.landscapes(sample, params, radius, steps, level, sources))

    def save_animation(self, path, sample: int = 0, source: Optional[str] = None, fps: float = 4.0,
                       scale: int = 2, mp4: Optional[bool] = None) -> dict:
        """Write the LK playback of the sample on `source` as a GIF (and MP4 when ffmpeg is
        installed); see `deeplk.viz.playback.save_animation`."""
        from deeplk.viz.playback import playback_frames, save_animation

        sample = self._check_sample(sample)
        src = self.source(source)
        frames = playback_frames(self.inputs[sample], self.templates[sample], self.playback(sample, src.name),
                                 scale=scale, title=src.label)
        return save_animation(frames, path, fps=fps, mp4=mp4)


# --------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------


def frontend_available() -> bool:
    """Whether widgets displayed now will be rendered live by a frontend.

    True inside an IPython kernel started by a Jupyter server (JupyterLab / Notebook set
    ``JPY_SESSION_NAME`` for their kernels), VS Code or Colab; False in a plain Python process and
    in a kernel run headlessly by papermill or nbval. ``DEEPLK_INTERACTIVE=1``/``0`` overrides.
    """
    forced = os.environ.get("DEEPLK_INTERACTIVE")
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no", "off")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    return ("JPY_SESSION_NAME" in os.environ or "VSCODE_PID" in os.environ
            or "google.colab" in sys.modules)


def _channel_options(n_channels: int) -> list:
    return [("special map", "special"), ("mean |f|", "mean")] + [(f"channel {k}", k) for k in range(n_channels)]


def build_widgets(explorer: Explorer, sample: int = 0, level: int = 1, branch: str = "input",
                  channel: Channel = 0, show_figures: bool = True):
    """ipywidgets for the explorer: a feature view and an LK playback view.

    Controls: an `IntSlider` for the sample, `Dropdown`s for the source, level, branch and
    channel (feature view) and an `IntSlider` over the LK frames (playback view). Each change
    calls the explorer's callback (`Explorer.feature_figure`, `Explorer.playback_figure`) and
    shows its figure in an `Output` widget.

    Args:
        explorer: the `Explorer`.
        sample, level, branch, channel: initial values.
        show_figures: display the figures (False: only call the callbacks, e.g. in tests).

    Returns:
        ``(box, controls)``: the `VBox` to display and a dict of the control widgets
        (``sample``, ``source``, ``level``, ``branch``, ``channel``, ``iteration``) plus the two
        ``Output`` widgets (``feature_out``, ``playback_out``).
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    src = explorer.source()
    n_channels = max(explorer.features(sample, level, "input", name).shape[-1] for name in explorer.sources)
    c = {
        "sample": W.IntSlider(value=int(sample), min=0, max=len(explorer) - 1, description="sample", continuous_update=False),
        "source": W.Dropdown(options=list(explorer.sources), value=src.name, description="features"),
        "level": W.Dropdown(options=sorted(src.levels), value=int(level), description="level"),
        "branch": W.Dropdown(options=list(BRANCHES), value=branch, description="branch"),
        "channel": W.Dropdown(options=_channel_options(n_channels), value=channel, description="channel"),
        "iteration": W.IntSlider(value=0, min=0, max=explorer.num_frames(sample) - 1, description="LK frame", continuous_update=False),
        "feature_out": W.Output(),
        "playback_out": W.Output(),
    }

    def show(out, fig):
        if show_figures:
            with out:
                out.clear_output(wait=True)
                display_figure(fig)
        plt.close(fig)

    def on_features(_=None):
        show(c["feature_out"], explorer.feature_figure(c["sample"].value, c["level"].value, c["branch"].value,
                                                       c["channel"].value, c["source"].value))

    def on_playback(_=None):
        show(c["playback_out"], explorer.playback_figure(c["sample"].value, c["iteration"].value))

    def on_sample(_=None):
        c["iteration"].max = explorer.num_frames(c["sample"].value) - 1
        on_features()
        on_playback()

    def on_source(_=None):
        levels = sorted(explorer.source(c["source"].value).levels)
        if list(c["level"].options) != levels:
            current = c["level"].value
            with c["level"].hold_trait_notifications():
                c["level"].options = levels
                c["level"].value = current if current in levels else levels[0]
        on_features()

    c["sample"].observe(on_sample, names="value")
    c["source"].observe(on_source, names="value")
    for key in ("level", "branch", "channel"):
        c[key].observe(on_features, names="value")
    c["iteration"].observe(on_playback, names="value")
    on_features()
    on_playback()
    box = W.VBox([
        W.HBox([c["sample"], c["source"], c["level"]]),
        W.HBox([c["branch"], c["channel"]]),
        c["feature_out"],
        c["iteration"],
        c["playback_out"],
    ])
    return box, c


def display_figure(fig) -> None:
    """Display a Matplotlib figure in the current output (IPython), else do nothing."""
    try:
        from IPython.display import display
    except ImportError:
        return
    display(fig)
