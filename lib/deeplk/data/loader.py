"""Reading DLK-format datasets: a `tf.data` pipeline and NumPy arrays for evaluation.

Elements are ``(input, template, corners)``: (B, 192, 192, 3) and (B, 128, 128, 3) float32 in
[0, 1] (RGB), and (B, 4, 2) float32 template corners in input pixels, order TL, TR, BR, BL
(so ``input_H_template`` maps the template corners (0, 0), (127, 0), (127, 127), (0, 127) onto
them). Labels are parsed in Python up front; images are decoded in parallel inside the
pipeline. With ``validate=True`` every image header is checked up front (readable, right size,
RGB or grey, JPEG not truncated), so bad files fail early with their name in the message; wrong
sizes found while iterating also name the file.

TensorFlow is imported on first use, so ``import deeplk.data`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._checks import check_positive_int
from ..paths import resolve
from .dlk_format import list_samples, read_label, sample_paths, split_name
from .protocol import INPUT_SIZE, TEMPLATE_SIZE


def check_image_file(path, size: int, kind: str = "image") -> None:
    """Raise ValueError naming `path` unless it is a readable `size` x `size` RGB/grey image.

    Reads the header only, plus the last kilobyte of JPEG files (a truncated JPEG lacks its
    end-of-image marker).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            (w, h), mode, fmt = im.size, im.mode, im.format
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} image not found: {p}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {kind} image {p}: {e}") from None
    if (w, h) != (size, size):
        raise ValueError(f"{kind} image {p} is {w} x {h}, expected {size} x {size}")
    if mode not in ("RGB", "L"):
        raise ValueError(f"{kind} image {p} has mode {mode}, expected RGB or grey")
    if fmt == "JPEG":
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - 1024))
            if b"\xff\xd9" not in f.read():
                raise ValueError(f"{kind} image {p} is truncated (no JPEG end marker)")


def _sample_table(data_root, split: str, max_samples, validate: bool):
    names = list_samples(data_root, split)
    if not names:
        raise ValueError(f"no samples in {resolve(data_root)} for {split_name(split)}")
    if max_samples is not None:
        names = names[: check_positive_int("max_samples", max_samples)]
    inputs, templates, corners = [], [], []
    for name in names:
        p = sample_paths(data_root, split, name)
        corners.append(read_label(p["label"]))
        if validate:
            check_image_file(p["input"], INPUT_SIZE, "input")
            check_image_file(p["template"], TEMPLATE_SIZE, "template")
        inputs.append(str(p["input"]))
        templates.append(str(p["template"]))
    return names, inputs, templates, np.stack(corners).astype(np.float32)


def _decode(path, size: int, kind: str):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    shape = tf.shape(image)
    ok = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    check = tf.debugging.Assert(
        ok, [f"{kind} image has the wrong size (expected {size} x {size}):", path, shape]
    )
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    image = tf.ensure_shape(image, (size, size, 3))
    return tf.image.convert_image_dtype(image, tf.float32)


def load_dataset(
    data_root,
    split: str = "val2014",
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    max_samples: int | None = None,
    validate: bool = True,
):
    """A `tf.data.Dataset` of batches ``(input, template, corners)`` from a DLK-format folder.

    Args:
        data_root: the dataset folder (relative paths are under the project root).
        split: ``"train2014"`` or ``"val2014"`` (``"train"``/``"val"`` accepted).
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: reshuffle the samples every epoch (seeded by `seed`).
        seed: shuffle seed.
        repeat: repeat forever.
        max_samples: keep only the first samples (natural order, before shuffling).
        validate: check every image header up front (see `check_image_file`).

    Returns:
        Dataset of ``(input (B, 192, 192, 3), template (B, 128, 128, 3), corners (B, 4, 2))``,
        all float32; images in [0, 1].

    Raises:
        FileNotFoundError / ValueError naming the folder or file at fault.
    """
    import tensorflow as tf

    batch_size = check_positive_int("batch_size", batch_size)
    _, inputs, templates, corners = _sample_table(data_root, split, max_samples, validate)
    ds = tf.data.Dataset.from_tensor_slices((inputs, templates, corners))
    if shuffle:
        ds = ds.shuffle(len(inputs), seed=int(seed), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def load(input_path, template_path, c):
        return (
            _decode(input_path, INPUT_SIZE, "input"),
            _decode(template_path, TEMPLATE_SIZE, "template"),
            c,
        )

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_arrays(
    data_root,
    split: str = "val2014",
    max_samples: int | None = None,
    validate: bool = True,
    return_names: bool = False,
):
    """The whole split as NumPy arrays (decoded by the same pipeline as `load_dataset`).

    Returns:
        ``(inputs (N, 192, 192, 3), templates (N, 128, 128, 3), corners (N, 4, 2))`` float32,
        in natural sample order, plus the list of sample names if `return_names`.
    """
    names = list_samples(data_root, split)
    if max_samples is not None:
        names = names[: check_positive_int("max_samples", max_samples)]
    ds = load_dataset(data_root, split, batch_size=64, max_samples=max_samples, validate=validate)
    parts = [tuple(t.numpy() for t in batch) for batch in ds]
    inputs, templates, corners = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return (inputs, templates, corners, names) if return_names else (inputs, templates, corners)
