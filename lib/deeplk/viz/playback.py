"""LK playback: every iteration's estimate at every level, as corners, errors, frames and GIFs.

`trace_pyramid_lk` runs the coarse-to-fine inverse-compositional LK of `deeplk.lk` one level at a
time (`deeplk.lk.lucas_kanade` with ``return_history=True``, the estimate rescaled between levels
exactly as `deeplk.lk.pyramid_lucas_kanade` does), so that every recorded estimate carries its
level and iteration. `Playback` holds them at full resolution; `playback_frames` renders them and
`save_animation` writes an animated GIF (and an MP4 when ``ffmpeg`` is installed).

The ground truth is used for *display only* (the corner error of each frame); LK never sees it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from deeplk._checks import check_shape
from deeplk.viz.figures import PRED_COLOUR, TRUE_COLOUR, draw_quadrilateral, overlay_array, show_image

__all__ = [
    "Playback",
    "playback_from_history",
    "trace_pyramid_lk",
    "run_playback",
    "playback_frames",
    "save_animation",
    "plot_playback",
    "filmstrip_frames",
    "plot_filmstrip",
]


def _corners_of(H: np.ndarray, template_size) -> np.ndarray:
    """``(T, 4, 2)`` images of the template corners under ``H`` ``(T, 3, 3)`` (float64 NumPy)."""
    h, w = template_size
    src = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    uvw = np.einsum("tij,kj->tki", H, src)
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[..., :2] / uvw[..., 2:3]


@dataclass(frozen=True)
class Playback:
    """The LK estimates of one sample, frame by frame, at full resolution.

    Attributes:
        H: ``(T, 3, 3)`` float64 ``input_H_template`` of every frame (full resolution).
        levels: ``(T,)`` int, the level of each frame (DLKFM numbering, 1 = finest; 0 when
            unknown).
        iterations: ``(T,)`` int, the iteration within its level (0 = the level's initial guess).
        template_size: ``(h, w)`` of the full-resolution template.
        true_corners: ``(4, 2)`` ground-truth corners (display only) or None.
        failed, converged: as `deeplk.lk.LKResult` (for the whole run).
    """

    H: np.ndarray
    levels: np.ndarray
    iterations: np.ndarray
    template_size: tuple
    true_corners: Optional[np.ndarray] = None
    failed: bool = False
    converged: bool = False

    def __len__(self) -> int:
        return int(self.H.shape[0])

    @property
    def corners(self) -> np.ndarray:
        """``(T, 4, 2)`` where the template corners land in the input at every frame."""
        return _corners_of(self.H, self.template_size)

    @property
    def errors(self) -> Optional[np.ndarray]:
        """``(T,)`` mean corner error (PE, px) of every frame against `true_corners`, or None."""
        if self.true_corners is None:
            return None
        return np.linalg.norm(self.corners - self.true_corners[None], axis=-1).mean(axis=-1)

    def caption(self, t: int) -> str:
        """One line describing frame `t`: level, iteration and corner error."""
        level = int(self.levels[t])
        text = (f"level {level} " if level else "") + f"iteration {int(self.iterations[t])}"
        errors = self.errors
        if errors is not None:
            text += f"   PE {errors[t]:.2f} px"
        return text


def playback_from_history(history, template_size, true_corners=None, level_lengths: Optional[Sequence[int]] = None,
                          level_numbers: Optional[Sequence[int]] = None, sample: int = 0,
                          failed: bool = False, converged: bool = False) -> Playback:
    """A `Playback` from the history of a `deeplk.lk.LKResult`.

    Args:
        history: ``(T, B, 3, 3)`` (or ``(T, 3, 3)``) full-resolution estimates, as
            ``LKResult.history`` (for a pyramid: the levels' histories concatenated, coarsest first,
            each starting with its initial guess).
        template_size: int or ``(h, w)`` of the full-resolution template.
        true_corners: ``(4, 2)`` ground truth of the sample (display only), or None.
        level_lengths: frames per level, coarsest first (must sum to T); None = one level.
        level_numbers: level number of each entry of `level_lengths` (default DLKFM's: n, ..., 1).
        sample: which sample of the batch.
        failed, converged: flags to keep with the playback.
    """
    hist = np.asarray(history, dtype=np.float64)
    if hist.ndim == 3:
        hist = hist[:, None]
    check_shape("history", hist, (None, None, 3, 3), "T x B x 3 x 3 estimates")
    if not 0 <= sample < hist.shape[1]:
        raise ValueError(f"`sample` must be in [0, {hist.shape[1]}), got {sample}")
    T = hist.shape[0]
    if T == 0:
        raise ValueError("`history` is empty")
    size = (int(template_size),) * 2 if np.ndim(template_size) == 0 else tuple(int(v) for v in template_size)
    if level_lengths is None:
        level_lengths = [T]
        numbers = [0] if level_numbers is None else list(level_numbers)
    else:
        level_lengths = [int(n) for n in level_lengths]
        numbers = list(range(len(level_lengths), 0, -1)) if level_numbers is None else list(level_numbers)
    if sum(level_lengths) != T or any(n < 1 for n in level_lengths):
        raise ValueError(f"`level_lengths` {level_lengths} must be positive and sum to the {T} frames of `history`")
    if len(numbers) != len(level_lengths):
        raise ValueError(f"`level_numbers` {numbers} must have one entry per level ({len(level_lengths)})")
    levels = np.concatenate([np.full(n, k, int) for n, k in zip(level_lengths, numbers)])
    iterations = np.concatenate([np.arange(n) for n in level_lengths])
    if true_corners is not None:
        true_corners = np.asarray(true_corners, dtype=np.float64)
        check_shape("true_corners", true_corners, (4, 2), "(x, y) pixels, TL, TR, BR, BL")
    return Playback(hist[:, sample], levels, iterations, size, true_corners, bool(failed), bool(converged))


def trace_pyramid_lk(input_pyramid, template_pyramid, init_H=None, true_corners=None, level_numbers=None,
                     max_iterations=None, tolerance=1e-2, damping: float = 1e-4, jit_compile: bool = False,
                     half_pixel_centers: bool = True, **lk_options) -> Playback:
    """Coarse-to-fine LK of one sample, recording every iteration with its level.

    Same algorithm and defaults as `deeplk.lk.pyramid_lucas_kanade` (``half_pixel_centers=True``):
    `init_H` is scaled to the coarsest level, refined, scaled up by 2 for the next level, ... A
    level that fails keeps its initial guess and the next level goes on from there.

    Args:
        input_pyramid, template_pyramid: lists of ``(1, h_k, w_k, C)`` maps, coarsest first.
        init_H: ``(1, 3, 3)`` or ``(3, 3)`` full-resolution initial ``input_H_template``;
            None = the centred placement.
        true_corners: ``(4, 2)`` or ``(1, 4, 2)`` ground truth for the displayed errors only.
        level_numbers: level number of each pyramid entry (default n, ..., 1).
        max_iterations, tolerance, damping, half_pixel_centers, **lk_options: `deeplk.lk.LKOptions`
            fields, as in `deeplk.lk.pyramid_lucas_kanade` (``half_pixel_centers``: how the
            coordinates of consecutive levels relate, see `deeplk.geometry.scale_homography`).
        jit_compile: XLA for each level's loop. Off by default: for one sample the XLA compilation
            (tens of seconds on a loaded 2-core CPU) costs far more than it saves; graph mode
            traces each level once per shape (a few seconds).

    Returns:
        `Playback` with ``sum_k (iterations_k + 1)`` frames: each level contributes its initial
        guess and one frame per update.
    """
    import tensorflow as tf

    from deeplk.geometry import centred_homography, scale_homography
    from deeplk.lk import LKOptions
    from deeplk.lk.solver import pyramid_defaults

    inputs, templates = list(input_pyramid), list(template_pyramid)
    n = len(inputs)
    if n == 0 or len(templates) != n:
        raise ValueError(f"`input_pyramid` and `template_pyramid` must be non-empty lists of the same "
                         f"length, got {len(inputs)} and {len(templates)}")
    for k in range(n):
        check_shape(f"input_pyramid[{k}]", inputs[k], (1, None, None, None), "1 x h x w x C (one sample)")
        check_shape(f"template_pyramid[{k}]", templates[k], (1, None, None, None), "1 x h x w x C (one sample)")
    options = LKOptions.coerce(lk_options, max_iterations=max_iterations, tolerance=tolerance, damping=damping,
                               half_pixel_centers=bool(half_pixel_centers))
    per_level = options.resolve(n, **pyramid_defaults(n))
    ht, wt = (int(d) for d in np.shape(templates[-1])[1:3])
    hi, wi = (int(d) for d in np.shape(inputs[-1])[1:3])
    if init_H is None:
        H = centred_homography((hi, wi), (ht, wt), batch=1, dtype=tf.float64)
    else:
        H = tf.reshape(tf.cast(tf.convert_to_tensor(init_H), tf.float64), [1, 3, 3])
    numbers = list(range(n, 0, -1)) if level_numbers is None else [int(v) for v in level_numbers]
    if len(numbers) != n:
        raise ValueError(f"`level_numbers` must have one entry per level ({n}), got {numbers}")
    hpc = bool(half_pixel_centers)
    H = scale_homography(H, 0.5 ** (n - 1), hpc)
    histories, lengths = [], []
    failed = False
    converged = False
    # Each level has its own shapes, so the LK function is traced once per level and shape;
    # TensorFlow's "excessive retracing" warning is expected here and only noise.
    tf_logger = tf.get_logger()
    tf_level = tf_logger.level
    tf_logger.setLevel("ERROR")
    try:
        for k in range(n):
            level_options = options.replace(
                max_iterations=per_level.max_iterations[k], tolerance=per_level.tolerance[k],
                algorithm=per_level.algorithm[k], coarse_motions=per_level.coarse_motions if k == 0 else ())
            res, hist, steps = _trace_level(inputs[k], templates[k], H, level_options, jit_compile,
                                            2.0 ** (n - 1 - k), hpc)
            histories.append(hist[: steps + 1])
            lengths.append(steps + 1)
            failed |= bool(res.failed.numpy()[0])
            converged = bool(res.converged.numpy()[0])
            H = tf.cast(res.H, tf.float64)
            if k + 1 < n:
                H = scale_homography(H, 2.0, hpc)
    finally:
        tf_logger.setLevel(tf_level)
    if true_corners is not None:
        true_corners = np.asarray(true_corners, dtype=np.float64).reshape(4, 2)
    return playback_from_history(np.concatenate(histories), (ht, wt), true_corners, lengths, numbers,
                                 failed=failed, converged=converged)


def _trace_level(inp, tmpl, H, options, jit_compile, to_full, hpc):
    """One level of `trace_pyramid_lk`: ``(LKResult, history (T, 1, 3, 3) at full resolution, updates)``."""
    import tensorflow as tf

    from deeplk import lk
    from deeplk.geometry import scale_homography

    feats_i = tf.convert_to_tensor(inp)
    res = lk.lucas_kanade(feats_i, tmpl, tf.cast(H, feats_i.dtype), options, return_history=True,
                          jit_compile=jit_compile)
    hist = tf.cast(res.history, tf.float64)  # (T, 1, 3, 3) at this level
    if to_full != 1.0:
        hist = tf.reshape(scale_homography(tf.reshape(hist, [-1, 3, 3]), to_full, hpc), tf.shape(hist))
    # Rows after the sample stopped repeat its final value: keep its own updates only.
    return res, hist.numpy(), int(res.iterations.numpy()[0])


def run_playback(source, input_image, template_image, true_corners=None, init_H=None, **lk_options) -> Playback:
    """LK on the features of `source` for one sample, over all its levels, recorded frame by frame.

    The source says what LK aligns (``source.lk_features``: all channels, or DLKFM's special
    map) and how its levels' coordinates relate (``source.half_pixel_centers``); its finest level
    must be level 1 (full resolution).

    Args:
        source: a `deeplk.viz.sources.FeatureSource`.
        input_image: ``(Hi, Wi, 3)`` input in [0, 1]; template_image: ``(h, w, 3)``.
        true_corners: ``(4, 2)`` ground truth, display only.
        init_H: full-resolution initial estimate (None = centred).
        **lk_options: `trace_pyramid_lk` options (``max_iterations``, ``jit_compile``, ...).
    """
    if min(source.levels) != 1:
        raise ValueError(f"source {source.name!r} must provide level 1 (full resolution), has {source.levels}")
    levels = sorted(source.levels, reverse=True)
    inp = np.asarray(input_image, np.float32)[None]
    tmpl = np.asarray(template_image, np.float32)[None]
    ip, tp = source.pyramid(inp, "input", levels), source.pyramid(tmpl, "template", levels)
    lk_options.setdefault("half_pixel_centers", source.half_pixel_centers)
    if source.lk_features == "special":
        from deeplk.features import special_feature_map

        ip = [special_feature_map(x).numpy() for x in ip]
        tp = [special_feature_map(x).numpy() for x in tp]
    return trace_pyramid_lk(ip, tp, init_H, true_corners, levels, **lk_options)


# --------------------------------------------------------------------------------------------
# Frames and files
# --------------------------------------------------------------------------------------------


def _caption_bar(width: int, text: str, height: int = 22) -> np.ndarray:
    import cv2

    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def playback_frames(input_image, template_image, playback: Playback, scale: int = 2, title: str = "",
                    alpha: float = 0.5) -> list:
    """One ``uint8`` RGB frame per playback entry: the template warped into the input by the
    frame's estimate and blended over it (`deeplk.viz.figures.overlay_array`), the true outline in
    green and the current one in red, above a caption (title, level, iteration, corner error).

    Returns:
        list of ``len(playback)`` arrays ``(Hi * scale + 22, Wi * scale, 3)``.
    """
    frames = []
    true = playback.true_corners
    corners = playback.corners
    for t in range(len(playback)):
        img = overlay_array(input_image, template_image, playback.H[t], true, corners[t], alpha=alpha,
                            scale=scale, thickness=max(1, scale // 2 + 1))
        caption = (f"{title}  " if title else "") + playback.caption(t)
        frames.append(np.concatenate([img, _caption_bar(img.shape[1], caption)], axis=0))
    return frames


def _check_frames(frames) -> list:
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError("`frames` is empty")
    shape = frames[0].shape
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3 or f.shape != shape:
            raise ValueError(f"`frames[{i}]` must be a uint8 (H, W, 3) array of shape {shape}, got {f.dtype} {f.shape}")
    return frames


def _temporary(path: Path) -> Path:
    """A new empty file next to `path` (hidden name), with the permissions of an ordinary new file
    (`tempfile.mkstemp` makes it private, 0600, which the rename would keep)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _write_gif(frames, path: Path, fps: float, loop: int) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    tmp = _temporary(path)
    try:
        # disposal=1 and no optimisation keep every frame (Pillow would merge identical ones).
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                       loop=loop, optimize=False, disposal=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_mp4(frames, path: Path, fps: float, ffmpeg: str) -> None:
    h, w = frames[0].shape[:2]
    # yuv420p needs even sizes: pad with white.
    ph, pw = h + h % 2, w + w % 2
    tmp = _temporary(path)
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{pw}x{ph}",
           "-r", f"{fps:g}", "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(tmp)]
    try:
        data = b"".join(np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), constant_values=255).tobytes() for f in frames)
        proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path} (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_animation(frames, path, fps: float = 4.0, mp4: Optional[bool] = None, loop: int = 0) -> dict:
    """Write `frames` as an animated GIF at `path` (and an MP4 next to it), atomically.

    Args:
        frames: list of ``(H, W, 3)`` ``uint8`` RGB frames of one shape (e.g. `playback_frames`).
        path: the ``.gif`` file; folders are created. The MP4 goes to the same name with ``.mp4``.
        fps: frames per second.
        mp4: None = also write an MP4 when ``ffmpeg`` is on the PATH; True = required (error if
            missing); False = GIF only.
        loop: GIF loop count (0 = forever).

    Returns:
        ``{"gif": Path, "mp4": Path or None, "frames": int}``. Each file is written to a temporary
        name in the same folder and renamed when complete; a failure leaves no partial file.
    """
    frames = _check_frames(frames)
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"`path` must end in .gif, got {str(path)!r}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"`fps` must be a positive number, got {fps!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_gif(frames, path, float(fps), int(loop))
    out = {"gif": path, "mp4": None, "frames": len(frames)}
    ffmpeg = shutil.which("ffmpeg")
    if mp4 is True and ffmpeg is None:
        raise RuntimeError("`mp4=True` but ffmpeg is not installed (not on the PATH); the GIF was written")
    if mp4 is not False and ffmpeg is not None:
        mp4_path = path.with_suffix(".mp4")
        _write_mp4(frames, mp4_path, float(fps), ffmpeg)
        out["mp4"] = mp4_path
    return out


def plot_playback(input_image, template_image, playbacks: dict, t: int, figsize_per_column=(3.2, 3.6)):
    """Figure for frame `t` of several playbacks side by side (e.g. learned vs intensities): one
    overlay per playback (true outline green, current estimate red dashed) and the corner error
    curves with frame `t` marked. Frames past a playback's end show its last frame.
    """
    import matplotlib.pyplot as plt

    if not playbacks:
        raise ValueError("`playbacks` is empty")
    n = len(playbacks)
    fig, axes = plt.subplots(1, n + 1, figsize=(figsize_per_column[0] * (n + 1), figsize_per_column[1]), squeeze=False)
    axes = axes[0]
    ax_err = axes[-1]
    for ax, (name, pb) in zip(axes, playbacks.items()):
        k = int(np.clip(t, 0, len(pb) - 1))
        show_image(ax, overlay_array(input_image, template_image, pb.H[k]), title=f"{name}\n{pb.caption(k)}")
        if pb.true_corners is not None:
            draw_quadrilateral(ax, pb.true_corners, TRUE_COLOUR, label="true")
        draw_quadrilateral(ax, pb.corners[k], PRED_COLOUR, label="estimate", linestyle="--")
        ax.set_xlim(-16.5, np.shape(input_image)[1] + 15.5)
        ax.set_ylim(np.shape(input_image)[0] + 15.5, -16.5)
        errors = pb.errors
        if errors is not None:
            errors = np.maximum(errors, 1e-3)  # log axis
            line, = ax_err.plot(np.arange(len(pb)), errors, marker=".", label=name)
            ax_err.plot([k], [errors[k]], "o", color=line.get_color(), markersize=8)
            # Level boundaries.
            for b in np.flatnonzero(np.diff(pb.levels)) + 1:
                ax_err.axvline(b - 0.5, color=line.get_color(), alpha=0.25, linestyle=":")
    axes[0].legend(loc="lower left", fontsize=7)
    ax_err.set_yscale("log")
    ax_err.set_xlabel("frame (iterations, coarse to fine)")
    ax_err.set_ylabel("corner error PE (px)")
    ax_err.axvline(t, color="k", linewidth=0.8)
    ax_err.legend(fontsize=7)
    ax_err.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def filmstrip_frames(playback: Playback) -> list:
    """Frames worth showing statically: the first frame of every level and the last frame."""
    starts = [0] + [int(i) for i in np.flatnonzero(np.diff(playback.levels)) + 1]
    return sorted(set(starts + [len(playback) - 1]))


def plot_filmstrip(input_image, template_image, playback: Playback, frames: Optional[Sequence[int]] = None,
                   title: str = "", figsize_per_frame=(2.6, 2.9)):
    """A row of overlays at chosen frames (default `filmstrip_frames`): the static version of the
    playback slider. True outline green, estimate red dashed, caption = level, iteration, PE."""
    import matplotlib.pyplot as plt

    frames = filmstrip_frames(playback) if frames is None else [int(t) for t in frames]
    for t in frames:
        if not 0 <= t < len(playback):
            raise ValueError(f"frame {t} is outside the playback's {len(playback)} frames")
    fig, axes = plt.subplots(1, len(frames), figsize=(figsize_per_frame[0] * len(frames), figsize_per_frame[1]),
                             squeeze=False)
    hi, wi = np.shape(input_image)[:2]
    corners = playback.corners
    for ax, t in zip(axes[0], frames):
        show_image(ax, overlay_array(input_image, template_image, playback.H[t]),
                   f"frame {t}\n{playback.caption(t).replace('   ', chr(10))}")
        if playback.true_corners is not None:
            draw_quadrilateral(ax, playback.true_corners, TRUE_COLOUR)
        draw_quadrilateral(ax, corners[t], PRED_COLOUR, linestyle="--")
        ax.set_xlim(-16.5, wi + 15.5)
        ax.set_ylim(hi + 15.5, -16.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
