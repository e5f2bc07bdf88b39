"""`generate_dataset`: write a DLK-format dataset, deterministic, resumable and parallel.

Guarantees:

- **Deterministic.** The same generator, seed, options and sources give byte-identical files,
  whatever the number of workers and however the run was split into resumed parts: sample ``i``
  depends only on ``(seed, split, i)`` (see `deeplk.data.generators`), images are encoded by
  OpenCV (JPEG quality `JPEG_QUALITY`, 4:2:0 chroma, PNG masks).
- **Resumable.** A sample's files are written under hidden temporary names (``.<file>.tmp``) in
  their final folders and renamed with `os.replace` when all are written, the label last, so a
  label means a complete sample. A rerun skips samples whose input, template and label all
  exist, deletes stale temporary files and writes the rest; asking for more samples than exist
  adds the missing ones.
- **Guarded.** ``<out_dir>/deeplk_dataset.json`` records the generator, seed and options; a
  folder written with different ones is never extended (ValueError naming the manifest), nor is a
  folder holding DLK data without a manifest.
- **One writer at a time** per folder (a second concurrent run would delete the first one's
  temporary files).
- **Fast.** Sources are decoded once per run (cached, resized), samples are grouped by source
  and synthesised by a thread pool (OpenCV releases the GIL; its own threading is switched off
  meanwhile).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np

from .._checks import check_positive_int
from ..paths import resolve
from ..utils import write_text_atomic
from .dlk_format import (
    IMAGE_EXT,
    LABEL_SUFFIX,
    MANIFEST_NAME,
    MASK_EXT,
    SPLITS,
    label_to_json,
    sample_name,
    split_dirs,
)
from .generators import GENERATORS, Sample, SampleGenerator

#: JPEG quality of every written image (OpenCV's default, as in the original code).
JPEG_QUALITY = 95
#: Version of the manifest layout and of the sample synthesis; bump when outputs change.
FORMAT_VERSION = 1
#: Samples per task handed to a worker.
CHUNK_SIZE = 32
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
    _JPEG_PARAMS += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]


def dataset_names() -> list[str]:
    """Names accepted by `generate_dataset`."""
    return list(GENERATORS)


def make_generator(dataset: str, source_dir=None, seed: int = 0, **options) -> SampleGenerator:
    """The sample generator behind `generate_dataset`, to synthesise samples in memory.

    ``make_generator(...).sample(split, i)`` returns exactly what `generate_dataset` writes for
    sample ``i`` (before JPEG encoding); call ``prepare(split, count)`` first for ``mscoco``.
    """
    if dataset not in GENERATORS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {dataset_names()}")
    src = None if source_dir is None else resolve(source_dir)
    return GENERATORS[dataset](src, seed, options)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image at the dataset quality."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _JPEG_PARAMS)
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_mask_png(valid: np.ndarray) -> bytes:
    """PNG bytes of a validity mask: 255 valid, 0 invalid."""
    ok, buf = cv2.imencode(".png", np.where(valid, 255, 0).astype(np.uint8))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


def _tmp(path: Path) -> Path:
    return path.with_name(f"{_TMP_PREFIX}{path.name}{_TMP_SUFFIX}")


def _sample_files(dirs: dict, index: int, sample: Sample) -> list[tuple[Path, bytes]]:
    name = sample_name(index)
    files = [
        (dirs["input"] / f"{name}{IMAGE_EXT}", encode_jpeg(sample.input)),
        (dirs["template"] / f"{name}{IMAGE_EXT}", encode_jpeg(sample.template)),
    ]
    if sample.template_mask is not None:
        files.append((dirs["mask"] / f"{name}{MASK_EXT}", encode_mask_png(sample.template_mask)))
    files.append((dirs["label"] / f"{name}{LABEL_SUFFIX}", label_to_json(sample.corners).encode()))
    return files


def write_sample(dirs: dict, index: int, sample: Sample) -> None:
    """Write one sample atomically: temporary files first, then renames, the label last."""
    files = _sample_files(dirs, index, sample)
    if sample.template_mask is not None:
        dirs["mask"].mkdir(exist_ok=True)
    for path, data in files:
        fd = os.open(_tmp(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    for path, _ in files:
        os.replace(_tmp(path), path)


def _write_chunk(gen: SampleGenerator, split: str, dirs: dict, indices: list[int]) -> int:
    for i in indices:
        write_sample(dirs, i, gen.sample(split, i))
    return len(indices)


def _visible_names(folder: Path, suffix: str) -> set[str]:
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {
            e.name[: -len(suffix)]
            for e in it
            if e.name.endswith(suffix) and not e.name.startswith(_TMP_PREFIX)
        }


def _clean_temporaries(dirs: dict) -> int:
    removed = 0
    for d in dirs.values():
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX):
                    p.unlink()
                    removed += 1
    return removed


def _check_manifest(out: Path, manifest: dict) -> dict | None:
    """The existing manifest (None if absent); raise if it does not match `manifest`."""
    path = out / MANIFEST_NAME
    if not path.is_file():
        for split in SPLITS:
            for d in split_dirs(out, split).values():
                if d.is_dir() and any(not f.startswith(".") for f in os.listdir(d)):
                    raise ValueError(
                        f"{out} already holds DLK data ({d}) but no {MANIFEST_NAME}: refusing to "
                        "add generated samples to it; choose another `out_dir`"
                    )
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the dataset manifest {path}: {e}") from None
    keys = ("generator", "seed", "options", "format_version", "jpeg_quality")
    diffs = [k for k in keys if old.get(k) != manifest[k]]
    if diffs:
        detail = "; ".join(f"{k}: folder has {old.get(k)!r}, asked {manifest[k]!r}" for k in diffs)
        raise ValueError(
            f"{path} records a different dataset ({detail}). Refusing to extend it: use another "
            "`out_dir`, the same settings, or delete the folder"
        )
    before, now = old.get("source_dir"), manifest["source_dir"]
    if (before is None) != (now is None) or (now is not None and resolve(before) != resolve(now)):
        warnings.warn(
            f"{path} was generated from source_dir={old.get('source_dir')!r}, now "
            f"{manifest['source_dir']!r}: new samples come from the new folder",
            stacklevel=3,
        )
    return old


def _write_manifest(out: Path, manifest: dict) -> None:
    write_text_atomic(out / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _count(name: str, value) -> int:
    if value == 0:
        return 0
    return check_positive_int(name, value)


def generate_dataset(
    dataset: str,
    out_dir,
    source_dir=None,
    num_train: int = 2000,
    num_val: int = 500,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    **options,
) -> dict:
    """Generate (or complete) a DLK-format dataset.

    Args:
        dataset: ``"mscoco"``, ``"googlemap"``, ``"googleearth"``, ``"aligned_pairs"``,
            ``"registered_pairs"``,
            ``"demo"`` or ``"demo_multimodal"`` (see `deeplk.data.generators` for layouts).
        out_dir: the dataset folder to write (relative paths are under the project root).
        source_dir: the raw source folder (not used by the demo datasets).
        num_train, num_val: samples wanted in ``train2014`` / ``val2014`` (0 skips a split).
        seed: non-negative integer; same seed, same bytes.
        progress: show a progress bar per split.
        workers: threads synthesising samples (default: min(4, CPU count)); does not change
            the output.
        **options: generator options (e.g. ``style="season"`` for ``demo_multimodal``,
            ``min_valid=0.95`` for pairs); recorded in the manifest.

    Returns:
        ``{"dataset", "out_dir", "manifest", "seed", "train2014": {"requested", "written",
        "existing"}, "val2014": {...}, "seconds", "pairs_per_second"}``.

    Raises:
        ValueError / FileNotFoundError naming the manifest, folder or file at fault.
    """
    t0 = time.perf_counter()
    counts = {"train2014": _count("num_train", num_train), "val2014": _count("num_val", num_val)}
    workers = (
        min(4, os.cpu_count() or 1) if workers is None else check_positive_int("workers", workers)
    )
    if dataset not in GENERATORS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {dataset_names()}")
    src = None if source_dir is None else resolve(source_dir)
    gen = GENERATORS[dataset](src, seed, options, cache_size=workers + 2)
    out = resolve(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out_dir` is not a folder: {out}")
    from .. import __version__

    manifest = {
        "format": "dlk",
        "format_version": FORMAT_VERSION,
        "generator": dataset,
        "seed": int(seed),
        "options": _jsonable(gen.options),
        "jpeg_quality": JPEG_QUALITY,
        "source_dir": None if source_dir is None else str(source_dir),
        "deeplk_version": __version__,
    }
    old = _check_manifest(out, manifest) if out.is_dir() else None
    out.mkdir(parents=True, exist_ok=True)
    for key in ("num_train", "num_val"):
        manifest[key] = int((old or {}).get(key, 0))
    _write_manifest(out, manifest)

    stats: dict = {"dataset": dataset, "out_dir": str(out), "manifest": str(out / MANIFEST_NAME)}
    stats["seed"] = int(seed)
    written_total = 0
    prev_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    executor = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for split, n in counts.items():
            dirs = split_dirs(out, split)
            todo: list[int] = []
            if n:
                for kind in ("input", "template", "label"):
                    dirs[kind].mkdir(exist_ok=True)
                _clean_temporaries(dirs)
                complete = (
                    _visible_names(dirs["input"], IMAGE_EXT)
                    & _visible_names(dirs["template"], IMAGE_EXT)
                    & _visible_names(dirs["label"], LABEL_SUFFIX)
                )
                todo = [i for i in range(n) if sample_name(i) not in complete]
            stats[split] = {"requested": n, "written": len(todo), "existing": n - len(todo)}
            if not todo:
                continue
            gen.prepare(split, todo[-1] + 1, executor.map if executor else map)
            if gen.groups_by_source:
                todo.sort(key=lambda i: (gen.source_key(split, i), i))
            chunks = [todo[k : k + CHUNK_SIZE] for k in range(0, len(todo), CHUNK_SIZE)]
            _run_chunks(gen, split, dirs, chunks, executor, progress, f"{dataset} {split}")
            written_total += len(todo)
        for key, split in (("num_train", "train2014"), ("num_val", "val2014")):
            manifest[key] = max(manifest[key], counts[split])
        _write_manifest(out, manifest)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(prev_threads)
    seconds = time.perf_counter() - t0
    stats["seconds"] = seconds
    stats["pairs_per_second"] = written_total / seconds if seconds > 0 else 0.0
    return stats


def _run_chunks(gen, split, dirs, chunks, executor, progress, desc) -> None:
    from tqdm.auto import tqdm

    total = sum(len(c) for c in chunks)
    with tqdm(total=total, desc=desc, unit="pair", disable=not progress, leave=True) as bar:
        if executor is None:
            for c in chunks:
                bar.update(_write_chunk(gen, split, dirs, c))
            return
        futures = [executor.submit(_write_chunk, gen, split, dirs, c) for c in chunks]
        try:
            for f in as_completed(futures):
                bar.update(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
