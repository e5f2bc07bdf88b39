"""Reading DLK-format datasets: a `tf.data` pipeline and NumPy arrays for evaluation.

Elements are ``(input, template, corners)``: (B, 192, 192, 3) and (B, 128, 128, 3) float32 in
[0, 1] (RGB), and (B, 4, 2) float32 template corners in input pixels, order TL, TR, BR, BL
(so ``input_H_template`` maps the template corners (0, 0), (127, 0), (127, 127), (0, 127) onto
them). Labels are parsed in Python up front; images are decoded in parallel inside the
pipeline. With ``validate=True`` every image header is checked up front (readable, right size,
RGB or grey, JPEG not truncated), so bad files fail early with their name in the message.

Errors found while iterating name the files too: an image that cannot be decoded (corrupt,
truncated, not an image) or has the wrong size raises ``tf.errors.InvalidArgumentError`` naming
the sample's input and template files. (TensorFlow's decoders do not name files: a failed
element is dropped by ``ignore_errors`` and a ``scan`` over the batches' sample positions, which
must run without gaps, raises at the first missing one.) Some damage inside a JPEG's compressed
data is not an error for any JPEG decoder (libjpeg only prints "Corrupt JPEG data" and returns
the damaged pixels); nothing here detects that.

Shuffling is stateless: epoch ``e`` reads the samples in the order
``tf.random.experimental.stateless_shuffle(range(n), seed=[seed, e])``, whatever the global
seed, so the same `seed` gives the same batches in every process.

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


#: Label corners must lie within this many pixels outside the 192 input (real labels can lie
#: slightly outside it; DLK sampling keeps them inside).
LABEL_MARGIN = INPUT_SIZE


def check_label(corners: np.ndarray, path) -> np.ndarray:
    """Return `corners` ((4, 2) TL, TR, BR, BL) if plausible, else raise ValueError naming `path`.

    Plausible: every coordinate within `LABEL_MARGIN` px of the 192 input frame, and the
    quadrilateral strictly convex in the order TL, TR, BR, BL (collinear, crossed or flipped
    corners would make a degenerate or mirrored homography). Every DLK-protocol label is.
    """
    from ..geometry_np import is_convex_quad
    from .protocol import MIN_CROSS

    lo, hi = -LABEL_MARGIN, INPUT_SIZE - 1 + LABEL_MARGIN
    if np.any(corners < lo) or np.any(corners > hi):
        raise ValueError(
            f"label {path} is out of range: corners {corners.tolist()} must lie in "
            f"[{lo}, {hi}] (the {INPUT_SIZE} x {INPUT_SIZE} input frame plus {LABEL_MARGIN} px)"
        )
    if not is_convex_quad(corners, MIN_CROSS):
        raise ValueError(
            f"label {path} is degenerate: corners {corners.tolist()} (TL, TR, BR, BL) do not form "
            "a convex quadrilateral (collinear, crossed or mirrored corners)"
        )
    return corners


def _sample_table(data_root, split: str, max_samples, validate: bool):
    names = list_samples(data_root, split)
    if not names:
        raise ValueError(f"no samples in {resolve(data_root)} for {split_name(split)}")
    if max_samples is not None:
        names = names[: check_positive_int("max_samples", max_samples)]
    inputs, templates, corners = [], [], []
    for name in names:
        p = sample_paths(data_root, split, name)
        corners.append(check_label(read_label(p["label"]), p["label"]))
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


def _order(n: int, shuffle: bool, seed: int, repeat: bool):
    """``(position, sample index)`` in reading order, and ``index_at(position)``."""
    import tensorflow as tf

    def permutation(epoch):
        seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=seeds)

    if shuffle:
        epochs = tf.data.Dataset.range(2**62 if repeat else 1)
        order = epochs.flat_map(lambda e: tf.data.Dataset.from_tensor_slices(permutation(e)))
    else:
        order = tf.data.Dataset.range(n)
        if repeat:
            order = order.repeat()

    def index_at(position):
        if shuffle:
            return tf.gather(permutation(position // n), position % n)
        return position % n

    return order.enumerate(), index_at


def _checked_batches(ds, batch_size: int, paths, index_at, finite: bool, n: int):
    """Batches of decoded elements ``(position, index, input, template)``; an element whose
    decoding failed is dropped by ``ignore_errors`` and the first gap in the positions raises
    ``InvalidArgumentError`` naming that sample's files (`paths`: (input, template) per index).
    """
    import tensorflow as tf

    ds = ds.ignore_errors()
    if finite:  # a sentinel after the last position, so failing last elements are caught too
        sentinel = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype),
                                         ds.element_spec)
        sentinel = (tf.constant(n, tf.int64), tf.constant(-1, tf.int64), *sentinel[2:])
        ds = ds.concatenate(tf.data.Dataset.from_tensors(sentinel))
    ds = ds.batch(batch_size)

    def check(expected, batch):
        positions = batch[0]
        count = tf.shape(positions, out_type=tf.int64)[0]
        want = expected + tf.range(count, dtype=tf.int64)
        gaps = tf.not_equal(positions, want)

        def fail():
            first = expected + tf.argmax(tf.cast(gaps, tf.int64), output_type=tf.int64)
            i = index_at(first)
            assert_op = tf.debugging.Assert(False, [
                "cannot decode input image", tf.gather(paths[0], i), "or template image",
                tf.gather(paths[1], i), "(corrupt, truncated, not an image, or the wrong size; "
                "check each with deeplk.data.check_image_file)"])
            with tf.control_dependencies([assert_op]):
                return tf.identity(count)

        checked = tf.cond(tf.reduce_any(gaps), fail, lambda: count)
        return expected + checked, batch

    ds = ds.scan(tf.constant(0, tf.int64), check)
    if finite:  # drop the sentinel (always the very last element) and a batch it leaves empty
        def strip(*batch):
            keep = tf.reduce_sum(tf.cast(batch[1] >= 0, tf.int32))
            return tuple(x[:keep] for x in batch)

        ds = ds.map(strip)
        if n % batch_size == 0:  # the sentinel is alone in the last batch
            ds = ds.filter(lambda *batch: tf.size(batch[0]) > 0)
    return ds


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
        data_root: the dataset folder (relative paths are under the project root), or a list of
            folders read as one dataset (a mix: their samples in the order of the list, so a
            shuffle draws from all of them in proportion to their sizes; `max_samples` applies to
            each folder).
        split: ``"train2014"`` or ``"val2014"`` (``"train"``/``"val"`` accepted).
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: reshuffle the samples every epoch (stateless: by `seed` and the epoch number).
        seed: shuffle seed (an integer).
        repeat: repeat forever.
        max_samples: keep only the first samples (natural order, before shuffling).
        validate: check every image header up front (see `check_image_file`).

    Returns:
        Dataset of ``(input (B, 192, 192, 3), template (B, 128, 128, 3), corners (B, 4, 2))``,
        all float32; images in [0, 1].

    Raises:
        FileNotFoundError / ValueError naming the folder or file at fault.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    _, inputs, templates, corners = _samples(data_root, split, max_samples, validate)
    return _batches(inputs, templates, corners, batch_size, shuffle, int(seed), repeat)


def _samples(data_root, split: str, max_samples, validate: bool):
    """`_sample_table` of one folder, or of a list of folders one after the other."""
    if not isinstance(data_root, (list, tuple)):
        return _sample_table(data_root, split, max_samples, validate)
    if not data_root:
        raise ValueError("`data_root` is an empty list: give at least one dataset folder")
    tables = [_sample_table(root, split, max_samples, validate) for root in data_root]
    names, inputs, templates = ([item for table in tables for item in table[k]] for k in range(3))
    return names, inputs, templates, np.concatenate([table[3] for table in tables])


def _batches(inputs: list, templates: list, corners: np.ndarray, batch_size: int, shuffle: bool,
             seed: int, repeat: bool):
    """The `load_dataset` batches of the samples listed by `_samples`."""
    import tensorflow as tf

    n = len(inputs)
    input_paths, template_paths = tf.constant(inputs), tf.constant(templates)
    corners = tf.constant(corners)
    ds, index_at = _order(n, shuffle, seed, repeat)

    def load(position, i):
        return (position, i, _decode(input_paths[i], INPUT_SIZE, "input"),
                _decode(template_paths[i], TEMPLATE_SIZE, "template"))

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = _checked_batches(ds, batch_size, (input_paths, template_paths), index_at, not repeat, n)
    ds = ds.map(lambda position, i, x, t: (x, t, tf.gather(corners, i)))
    return ds.prefetch(tf.data.AUTOTUNE)


def load_arrays(
    data_root,
    split: str = "val2014",
    max_samples: int | None = None,
    validate: bool = True,
    return_names: bool = False,
):
    """The whole split as NumPy arrays (decoded by the same pipeline as `load_dataset`).

    `data_root` is a folder or a list of folders (as in `load_dataset`: their samples one after
    the other, `max_samples` from each).

    Returns:
        ``(inputs (N, 192, 192, 3), templates (N, 128, 128, 3), corners (N, 4, 2))`` float32,
        in natural sample order, plus the list of sample names if `return_names`.
    """
    names, inputs, templates, corners = _samples(data_root, split, max_samples, validate)
    ds = _batches(inputs, templates, corners, 64, shuffle=False, seed=0, repeat=False)
    parts = [tuple(t.numpy() for t in batch) for batch in ds]
    inputs, templates, corners = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return (inputs, templates, corners, names) if return_names else (inputs, templates, corners)
