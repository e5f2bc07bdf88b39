"""Download the published datasets into the ``Dataset/`` layout, verified, resumable and atomic.

Command line (progress bars by tqdm)::

    python -m deeplk.data.download mscoco [--dest Dataset/raw/coco2014] [--generate]
    python -m deeplk.data.download googleearth [--dest Dataset/GoogleEarth]
    python -m deeplk.data.download googlemap [--dest Dataset/GoogleMap]
    python -m deeplk.data.download srif [--dest Dataset/raw/SRIF]

What each does:

- ``mscoco``: the MS-COCO 2014 image archives ``train2014.zip`` (13,510,573,713 bytes) and
  ``val2014.zip`` (6,645,013,297 bytes) from ``http://images.cocodataset.org/zips/``, checked
  against their published sizes and MD5 sums, extracted to ``Dataset/raw/coco2014/train2014/``
  and ``val2014/`` (what the ``mscoco`` generator and profile read). ``--generate`` then writes
  the DLK samples to ``Dataset/MSCOCO`` (`deeplk.data.generate_dataset`, the paper's counts by
  default: 82783 train, 6400 val).
- ``googleearth`` / ``googlemap``: the DLKFM authors' archive on Google Drive (file id
  `GOOGLE_DRIVE_ID`, one archive holding both datasets as DLK samples) through ``gdown``;
  its ``GoogleEarth/`` (or ``GoogleMap/``) folder is moved to ``Dataset/GoogleEarth`` (or
  ``Dataset/GoogleMap``). The published samples need no generation; the command counts them.
  No size or checksum is published for this archive: it is checked by reading the whole archive
  (ZIP CRCs, or a full tar listing) and by the DLK layout of the folder it must hold.
- ``srif``: the SRIF multimodal dataset (Li, Hu & Zhang, ISPRS J. 2023) from its public GitHub
  repository ``LJY-RS/SRIF``: GitHub's ZIP of the ``main`` branch (`SRIF_ARCHIVE`, the whole
  repository; no size or checksum is published, the ZIP CRCs are checked). Its ``dataset/``
  folder's six sets (`SRIF_SETS`) go to ``Dataset/raw/SRIF/<set>/``, each checked to hold
  `SRIF_PAIRS` pairs ``pair{i}_1.jpg``, ``pair{i}_2.jpg`` and their ``gt_{i}.txt`` affines
  (`check_srif`; Optical-Map's are identities). These are registered raw pairs: the
  ``registered_pairs`` generator makes DLK samples from a set folder.

Guarantees:

- **Resumable.** Downloads stream into ``<archive>.part``; a rerun continues it with an HTTP
  ``Range`` request (from the start if the server ignores ranges). ``gdown`` resumes its own
  partial file the same way.
- **Verified.** Size and MD5 (where published) are checked before an archive is renamed from
  ``.part`` to its name; a mismatch deletes the partial file and raises `DownloadError`.
- **Atomic.** Archives are extracted into a hidden temporary folder next to the destination and
  renamed into place when complete, so the destination either does not exist or is complete
  (a rerun skips it). Members with absolute paths, ``..`` or links are refused.
- **Offline.** When the download fails (no network), `DownloadUnavailableError` says which URL
  to fetch, under which file name and where to put it; rerun the command and it verifies and
  extracts the local file. ``--archive FILE`` uses an archive you already have.

Archives are kept in ``Dataset/raw/downloads/`` (``--remove-archives`` deletes each once it
is extracted).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..paths import resolve

__all__ = [
    "Archive",
    "DownloadError",
    "DownloadUnavailableError",
    "GOOGLE_ARCHIVE",
    "GOOGLE_DRIVE_ID",
    "MSCOCO_ARCHIVES",
    "download_file",
    "download_google_drive",
    "extract_archive",
    "fetch_google",
    "fetch_mscoco",
    "fetch_srif",
    "check_srif",
    "SRIF_ARCHIVE",
    "SRIF_SETS",
    "main",
    "verify_file",
]

#: Google Drive file id of the DLKFM authors' GoogleEarth + GoogleMap archive.
GOOGLE_DRIVE_ID = "1-voX6dJtIb1Dbq9_m2Ed9xvPhCjM_FLo"
#: Where archives are kept, and the default destinations (relative to the project root).
DOWNLOADS_DIR = "Dataset/raw/downloads"
MSCOCO_RAW_DIR = "Dataset/raw/coco2014"
MSCOCO_OUT_DIR = "Dataset/MSCOCO"
GOOGLE_DIRS = {"googleearth": "GoogleEarth", "googlemap": "GoogleMap"}
SRIF_RAW_DIR = "Dataset/raw/SRIF"
#: The SRIF repository, its six set folders under ``dataset/`` and the pairs each holds.
SRIF_REPOSITORY = "https://github.com/LJY-RS/SRIF"
SRIF_SETS = (
    "Optical-Map",
    "Optical-SAR",
    "Optical-Infrared",
    "Optical-Depth",
    "Nighttime",
    "Optical-Optical",
)
SRIF_PAIRS = 200
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive.

    Attributes:
        name: file name in the downloads folder.
        url: HTTP(S) URL, or None for a Google Drive file.
        size: expected size in bytes, or None when not published.
        md5: expected MD5 (hex), or None.
        sha256: expected SHA-256 (hex), or None.
        gdrive_id: Google Drive file id (when `url` is None).
    """

    name: str
    url: str | None = None
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    gdrive_id: str | None = None

    @property
    def source(self) -> str:
        """Where a person downloads it by hand."""
        if self.url:
            return self.url
        return f"https://drive.google.com/file/d/{self.gdrive_id}/view"


#: MS-COCO 2014 image archives: published sizes and MD5 sums.
MSCOCO_ARCHIVES = {
    "train2014": Archive(
        "train2014.zip",
        "http://images.cocodataset.org/zips/train2014.zip",
        size=13_510_573_713,
        md5="0da8c0bd3d6becc4dcb32757491aca88",
    ),
    "val2014": Archive(
        "val2014.zip",
        "http://images.cocodataset.org/zips/val2014.zip",
        size=6_645_013_297,
        md5="a3d79f5ed8d289b7a7554ce06a5782b3",
    ),
}
#: The DLKFM GoogleEarth + GoogleMap archive (no published size or checksum).
GOOGLE_ARCHIVE = Archive("DLKFM_GoogleEarth_GoogleMap.archive", gdrive_id=GOOGLE_DRIVE_ID)
#: GitHub's ZIP of the SRIF repository's ``main`` branch (no published size or checksum).
SRIF_ARCHIVE = Archive(
    "SRIF-main.zip", "https://codeload.github.com/LJY-RS/SRIF/zip/refs/heads/main"
)


class DownloadError(ValueError):
    """A downloaded or local archive is wrong (size, checksum, unreadable, unexpected content)."""


class DownloadUnavailableError(RuntimeError):
    """The file could not be fetched (no network, server error); the message says what to
    download by hand and where to put it."""


def _manual_message(archive: Archive, path: Path, reason: str) -> str:
    size = f" ({archive.size:,} bytes)" if archive.size else ""
    check = f"; MD5 {archive.md5}" if archive.md5 else ""
    how = (
        f"  curl -L -C - -o {path} {archive.url}\n"
        if archive.url
        else "  (open the link in a browser and save the file; any name works with --archive)\n"
    )
    return (
        f"cannot download {archive.name} from {archive.source}: {reason}\n"
        f"Download it yourself{size}{check}, e.g.\n{how}"
        f"and put it at {path}\n"
        "(or pass its location with --archive), then run the same command again: it verifies "
        "and extracts the local file."
    )


# ------------------------------------------------------------------------------ verification


def _hashers(archive: Archive) -> dict:
    out = {}
    if archive.md5:
        out["md5"] = hashlib.md5(usedforsecurity=False)
    if archive.sha256:
        out["sha256"] = hashlib.sha256()
    return out


def _check(path: Path, archive: Archive, size: int, hashers: dict) -> None:
    if archive.size is not None and size != archive.size:
        raise DownloadError(
            f"{path} has {size:,} bytes, expected {archive.size:,} ({archive.name} from "
            f"{archive.source})"
        )
    for kind, h in hashers.items():
        want = getattr(archive, kind).lower()
        if h.hexdigest() != want:
            raise DownloadError(
                f"{path}: {kind.upper()} {h.hexdigest()} does not match the published {want} "
                f"({archive.name} from {archive.source}); the file is corrupt"
            )


def verify_file(path, archive: Archive, progress: bool = False) -> None:
    """Check `path` against `archive`'s size and checksums (raises `DownloadError`)."""
    path = Path(path)
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        _check(path, archive, size, {})
    hashers = _hashers(archive)
    if hashers:
        with _bar(size, f"verify {path.name}", progress) as bar, open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                for h in hashers.values():
                    h.update(chunk)
                bar.update(len(chunk))
    _check(path, archive, size, hashers)


def _bar(total, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, leave=False)


# ---------------------------------------------------------------------------------- download


def download_file(
    archive: Archive,
    downloads_dir=DOWNLOADS_DIR,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download `archive` over HTTP into `downloads_dir`, resuming a ``.part`` file; verify.

    An existing complete file is verified and reused (a wrong one raises, naming it).

    Returns:
        The verified archive's path.

    Raises:
        DownloadUnavailableError: the server cannot be reached or refuses (the message says
            what to download by hand and where to put it).
        DownloadError: the downloaded bytes do not match the published size or checksum (the
            partial file is deleted).
    """
    if not archive.url:
        raise ValueError(f"archive {archive.name} has no HTTP URL")
    folder = resolve(downloads_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive.name
    if path.is_file():
        verify_file(path, archive, progress)
        return path
    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if archive.size is not None and have > archive.size:
        part.unlink()  # longer than the file can be: start afresh
        have = 0
    hashers = _hashers(archive)
    request = urllib.request.Request(archive.url, headers={"User-Agent": "deeplk-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only)
    except urllib.error.HTTPError as e:
        if e.code == 416 and archive.size is not None and have == archive.size:
            response = None  # the partial file is already complete
        else:
            raise DownloadUnavailableError(_manual_message(archive, path, f"HTTP {e.code} "
                                                           f"{e.reason}")) from None
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        reason = getattr(e, "reason", e)
        raise DownloadUnavailableError(_manual_message(archive, path, str(reason))) from None
    mode = "ab"
    if response is not None and have and response.status != 206:
        have, mode = 0, "wb"  # the server ignored the range: start from the beginning
    if have:
        with open(part, "rb") as f:  # the checksum covers the bytes already there
            while chunk := f.read(_CHUNK):
                for h in hashers.values():
                    h.update(chunk)
    total = archive.size
    if total is None and response is not None and response.headers.get("Content-Length"):
        total = have + int(response.headers["Content-Length"])
    try:
        if response is not None:
            with response, open(part, mode) as f, _bar(total, archive.name, progress) as bar:
                bar.update(have)
                while chunk := response.read1(_CHUNK):  # what has arrived, up to 1 MiB
                    f.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException) as e:
        raise DownloadUnavailableError(
            _manual_message(archive, path, f"connection lost ({e!r}); rerun to resume from "
                                           f"{part.stat().st_size:,} bytes")
        ) from None
    size = part.stat().st_size
    if archive.size is not None and size < archive.size:
        raise DownloadUnavailableError(_manual_message(
            archive, path, f"the server sent {size:,} of {archive.size:,} bytes; rerun to resume"))
    try:
        _check(part, archive, size, hashers)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, path)
    return path


def download_google_drive(
    archive: Archive, downloads_dir=DOWNLOADS_DIR, progress: bool = True
) -> Path:
    """Download a Google Drive file with ``gdown`` (it resumes its own ``.part`` file).

    Raises:
        DownloadUnavailableError: gdown is missing or the download failed (message: what to
            download by hand and where to put it).
    """
    folder = resolve(downloads_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive.name
    if path.is_file():
        return path
    try:
        import gdown
    except ImportError:
        raise DownloadUnavailableError(_manual_message(
            archive, path, "the gdown package is not installed (pip install gdown)")) from None
    try:
        out = gdown.download(id=archive.gdrive_id, output=str(path), quiet=not progress,
                             resume=True)
    except Exception as e:  # gdown raises requests / its own errors; all mean "not fetched"
        raise DownloadUnavailableError(
            _manual_message(archive, path, f"{type(e).__name__}: {e}")) from None
    if out is None or not path.is_file():
        raise DownloadUnavailableError(_manual_message(archive, path, "gdown fetched nothing"))
    return path


# ---------------------------------------------------------------------------------- extract


def _safe_name(name: str, archive_path: Path) -> None:
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts:
        raise DownloadError(f"{archive_path} holds an unsafe member path {name!r}; not extracting")


def extract_archive(archive_path, dest, progress: bool = True) -> None:
    """Extract a ZIP or tar archive (format from its content) into the new folder `dest`.

    Extraction happens in a hidden temporary folder next to `dest`, renamed to `dest` when
    complete; on any error the temporary folder is deleted. ZIP members are CRC-checked.

    Raises:
        DownloadError naming the archive if it is unreadable, not an archive, or holds unsafe
        member paths or links; FileExistsError if `dest` exists.
    """
    archive_path, dest = Path(archive_path), Path(dest)
    if dest.exists():
        raise FileExistsError(f"extraction target exists: {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive_path):
            _extract_zip(archive_path, tmp, progress)
        elif tarfile.is_tarfile(archive_path):
            _extract_tar(archive_path, tmp, progress)
        else:
            raise DownloadError(f"{archive_path} is not a ZIP or tar archive")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract_zip(path: Path, out: Path, progress: bool) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            for m in members:
                _safe_name(m.filename, path)
                if (m.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(f"{path} holds a symbolic link {m.filename!r}")
            total = sum(m.file_size for m in members)
            with _bar(total, f"extract {path.name}", progress) as bar:
                for m in members:
                    z.extract(m, out)  # reads through the CRC check
                    bar.update(m.file_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DownloadError(f"cannot extract {path}: {e} (the archive is damaged)") from None


def _extract_tar(path: Path, out: Path, progress: bool) -> None:
    try:
        with tarfile.open(path) as t:
            members = t.getmembers()
            for m in members:
                _safe_name(m.name, path)
                if not (m.isfile() or m.isdir()):
                    raise DownloadError(f"{path} holds a link or special file {m.name!r}")
            with _bar(len(members), f"extract {path.name}", progress) as bar:
                # Members were checked above; the "data" filter (Python >= 3.11.4) rechecks.
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                for m in members:
                    t.extract(m, out, set_attrs=False, **kw)
                    bar.update(1)
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"cannot extract {path}: {e} (the archive is damaged)") from None


def _find_dir(root: Path, name: str, accept: Callable[[Path], bool]) -> Path | None:
    """The shallowest folder called `name` under `root` that `accept`s, or None."""
    found = sorted((p for p in root.rglob(name) if p.is_dir() and accept(p)),
                   key=lambda p: len(p.parts))
    return found[0] if found else None


def _is_dlk_folder(p: Path) -> bool:
    return any((p / f"{s}_input").is_dir() for s in ("train2014", "val2014"))


def _has_images(p: Path) -> bool:
    return any(f.suffix.lower() in (".jpg", ".jpeg", ".png") for f in p.iterdir())


def _install_from(archive_path: Path, name: str, dest: Path, accept, what: str,
                  progress: bool, check: Callable[[Path], object] | None = None) -> None:
    """Extract `archive_path`, move its folder `name` (found by `accept`) to `dest`; `check`,
    if given, inspects the folder before the move (and raises to leave `dest` absent)."""
    staging = dest.parent / f".{dest.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract_archive(archive_path, staging, progress)
        found = _find_dir(staging, name, accept)
        if found is None:
            raise DownloadError(f"{archive_path} holds no {name}/ folder with {what}")
        if check is not None:
            check(found)
        os.replace(found, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _clean_stale(dest: Path) -> None:
    """Remove temporary folders left next to `dest` by an interrupted extraction."""
    if dest.parent.is_dir():
        for p in dest.parent.iterdir():
            if p.name.startswith((f".{dest.name}.staging-", f".{dest.name}.extract-")):
                shutil.rmtree(p, ignore_errors=True)


def _complete(dest: Path) -> bool:
    return dest.is_dir() and any(dest.iterdir())


# ------------------------------------------------------------------------------- per dataset


def fetch_mscoco(
    dest=MSCOCO_RAW_DIR,
    splits: Sequence[str] = ("train2014", "val2014"),
    downloads_dir=DOWNLOADS_DIR,
    archives: dict | None = None,
    local_archives: dict | None = None,
    remove_archives: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """MS-COCO 2014 raw images into ``<dest>/<split>/`` (skipped when already there).

    Args:
        dest: the raw image folder (the ``mscoco`` generator's `source_dir`).
        splits: ``"train2014"`` and/or ``"val2014"``.
        downloads_dir: where archives are downloaded (and looked for).
        archives: split -> `Archive` (default `MSCOCO_ARCHIVES`; tests point it elsewhere).
        local_archives: split -> path of an archive you already have (verified, not copied).
        remove_archives: delete each downloaded archive once it is extracted.
        progress: progress bars.

    Returns:
        split -> the image folder.
    """
    archives = MSCOCO_ARCHIVES if archives is None else archives
    local_archives = local_archives or {}
    dest = resolve(dest)
    out = {}
    for split in splits:
        if split not in archives:
            raise ValueError(f"unknown MS-COCO split {split!r}; choose from {sorted(archives)}")
        target = dest / split
        _clean_stale(target)
        if _complete(target):
            print(f"{target} exists: skipping {split}", file=sys.stderr)
            out[split] = target
            continue
        if target.exists():
            target.rmdir()  # empty
        archive = archives[split]
        if split in local_archives:
            path = Path(local_archives[split])
            verify_file(path, archive, progress)
        else:
            path = download_file(archive, downloads_dir, progress)
        _install_from(path, split, target, _has_images, "images", progress)
        if remove_archives and split not in local_archives:
            path.unlink()
        out[split] = target
    return out


def fetch_google(
    which: str,
    dest=None,
    downloads_dir=DOWNLOADS_DIR,
    archive: Archive = GOOGLE_ARCHIVE,
    local_archive=None,
    remove_archive: bool = False,
    progress: bool = True,
) -> Path:
    """The published GoogleEarth or GoogleMap DLK samples into `dest` (default
    ``Dataset/GoogleEarth`` / ``Dataset/GoogleMap``); skipped when already there.

    The archive (both datasets) is kept in `downloads_dir` unless `remove_archive`, so fetching
    the other dataset later needs no second download.
    """
    if which not in GOOGLE_DIRS:
        raise ValueError(f"`which` must be one of {sorted(GOOGLE_DIRS)}, got {which!r}")
    name = GOOGLE_DIRS[which]
    dest = resolve(dest if dest is not None else f"Dataset/{name}")
    _clean_stale(dest)
    if _complete(dest):
        print(f"{dest} exists: skipping the download", file=sys.stderr)
        return dest
    if dest.exists():
        dest.rmdir()
    path = Path(local_archive) if local_archive else download_google_drive(
        archive, downloads_dir, progress)
    _install_from(path, name, dest, _is_dlk_folder, "DLK samples ({train,val}2014_input/...)",
                  progress)
    if remove_archive and not local_archive:
        path.unlink()
    return dest


def _is_srif_folder(p: Path) -> bool:
    return all((p / name).is_dir() for name in SRIF_SETS)


_SRIF_FILES = {
    "pair*_1": re.compile(r"pair(\d+)_1\.(jpe?g|png|tiff?|bmp)", re.IGNORECASE),
    "pair*_2": re.compile(r"pair(\d+)_2\.(jpe?g|png|tiff?|bmp)", re.IGNORECASE),
    "gt_*.txt": re.compile(r"gt_(\d+)\.txt"),
}


def check_srif(root, sets: Sequence[str] = SRIF_SETS, pairs: int = SRIF_PAIRS) -> dict:
    """Check that every SRIF set folder ``<root>/<set>/`` holds `pairs` pairs with transforms.

    Counts the files ``pair{i}_1.<image>``, ``pair{i}_2.<image>`` and ``gt_{i}.txt``; each kind
    must number `pairs` with the same ids ``i``.

    Returns:
        set -> number of pairs.

    Raises:
        DownloadError naming the set folder, what it holds and what it should.
    """
    root = Path(root)
    counts = {}
    for name in sets:
        folder = root / name
        if not folder.is_dir():
            raise DownloadError(f"SRIF set {name} is missing: no folder {folder}")
        files = [f.name for f in folder.iterdir() if f.is_file()]
        ids = {kind: {m.group(1) for f in files if (m := rx.fullmatch(f))}
               for kind, rx in _SRIF_FILES.items()}
        have = ", ".join(f"{len(v)} {kind}" for kind, v in ids.items())
        if any(len(v) != pairs for v in ids.values()) or len({frozenset(v) for v in
                                                                ids.values()}) != 1:
            raise DownloadError(
                f"SRIF set {name} ({folder}) holds {have}; expected {pairs} pairs, each with "
                "pair{i}_1, pair{i}_2 and gt_{i}.txt (an incomplete download or copy: delete "
                f"{root} and run `python -m deeplk.data.download srif` again)"
            )
        counts[name] = pairs
    return counts


def fetch_srif(
    dest=SRIF_RAW_DIR,
    downloads_dir=DOWNLOADS_DIR,
    archive: Archive | None = None,
    local_archive=None,
    remove_archive: bool = False,
    progress: bool = True,
) -> Path:
    """The SRIF registered pairs into ``<dest>/<set>/`` (default ``Dataset/raw/SRIF``), checked
    by `check_srif`; skipped (but checked) when already there. `archive` defaults to
    `SRIF_ARCHIVE`.

    Raises:
        DownloadUnavailableError: the repository cannot be fetched (the message says what to
            download by hand and where to put it).
        DownloadError: the archive is damaged or lacks sets or pairs (`dest` is then left
            absent), or an existing `dest` is incomplete.
    """
    archive = SRIF_ARCHIVE if archive is None else archive
    dest = resolve(dest)
    _clean_stale(dest)
    if _complete(dest):
        check_srif(dest)
        print(f"{dest} exists: skipping the download", file=sys.stderr)
        return dest
    if dest.exists():
        dest.rmdir()
    if local_archive:
        path = Path(local_archive)
    else:
        try:
            path = download_file(archive, downloads_dir, progress)
        except DownloadUnavailableError as e:
            raise DownloadUnavailableError(
                f"{e}\nOr clone {SRIF_REPOSITORY} elsewhere and copy its dataset/<set>/ folders "
                f"({', '.join(SRIF_SETS)}) to {dest}/<set>/."
            ) from None
    _install_from(path, "dataset", dest, _is_srif_folder,
                  f"the SRIF sets ({', '.join(SRIF_SETS)})", progress, check=check_srif)
    if remove_archive and not local_archive:
        path.unlink()
    return dest


# -------------------------------------------------------------------------------------- CLI


def _summary(root: Path) -> str:
    from .dlk_format import list_samples

    parts = []
    for split in ("train2014", "val2014"):
        try:
            parts.append(f"{split}: {len(list_samples(root, split))} samples")
        except FileNotFoundError:
            parts.append(f"{split}: none")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deeplk.data.download",
        description="Download MS-COCO 2014, the published GoogleEarth / GoogleMap data or the "
        "SRIF registered pairs into Dataset/ (resumable, verified, atomic).",
    )
    parser.add_argument("dataset", choices=["mscoco", *GOOGLE_DIRS, "srif"])
    parser.add_argument("--dest", help="destination folder (mscoco: raw images, default "
                        f"{MSCOCO_RAW_DIR}; google*: Dataset/GoogleEarth or Dataset/GoogleMap; "
                        f"srif: {SRIF_RAW_DIR})")
    parser.add_argument("--downloads", default=DOWNLOADS_DIR,
                        help=f"where archives go (default {DOWNLOADS_DIR})")
    parser.add_argument("--archive", action="append", default=[], metavar="FILE",
                        help="use this local archive instead of downloading (mscoco: give "
                        "train2014.zip and/or val2014.zip, recognised by name)")
    parser.add_argument("--splits", nargs="+", default=["train2014", "val2014"],
                        choices=["train2014", "val2014"], help="mscoco splits to fetch")
    parser.add_argument("--remove-archives", action="store_true",
                        help="delete downloaded archives once extracted")
    parser.add_argument("--generate", action="store_true",
                        help="mscoco: then write DLK samples (see --out, --num-train, ...)")
    parser.add_argument("--out", default=MSCOCO_OUT_DIR, help="mscoco --generate output folder")
    parser.add_argument("--num-train", type=int, default=82783)
    parser.add_argument("--num-val", type=int, default=6400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    try:
        if args.dataset == "mscoco":
            local = {}
            for a in args.archive:
                split = Path(a).name.split(".")[0]
                if split not in MSCOCO_ARCHIVES:
                    parser.error(f"--archive {a}: expected train2014.zip or val2014.zip")
                local[split] = a
            dest = args.dest or MSCOCO_RAW_DIR
            folders = fetch_mscoco(dest, args.splits, args.downloads, local_archives=local,
                                   remove_archives=args.remove_archives, progress=progress)
            for split, folder in folders.items():
                print(f"{split}: {folder}")
            if args.generate:
                from .generate import generate_dataset

                counts = {"train2014": args.num_train, "val2014": args.num_val}
                stats = generate_dataset(
                    "mscoco", args.out, resolve(dest),
                    num_train=counts["train2014"] if "train2014" in args.splits else 0,
                    num_val=counts["val2014"] if "val2014" in args.splits else 0,
                    seed=args.seed, progress=progress)
                print(f"generated {stats['out_dir']}: {_summary(Path(stats['out_dir']))}")
        elif args.dataset == "srif":
            if len(args.archive) > 1:
                parser.error("give at most one --archive for SRIF")
            dest = fetch_srif(args.dest or SRIF_RAW_DIR, args.downloads,
                              local_archive=args.archive[0] if args.archive else None,
                              remove_archive=args.remove_archives, progress=progress)
            for name, n in check_srif(dest).items():
                print(f"{dest / name}: {n} pairs")
            if args.generate:
                print("generate samples from a set with the registered_pairs generator "
                      "(notebook 00, dataset='registered_pairs', source_dir=<set folder>)")
        else:
            if len(args.archive) > 1:
                parser.error("give at most one --archive for the Google data")
            dest = fetch_google(args.dataset, args.dest, args.downloads,
                                local_archive=args.archive[0] if args.archive else None,
                                remove_archive=args.remove_archives, progress=progress)
            print(f"{dest}: {_summary(dest)}")
            if args.generate:
                print("the published archive already holds DLK samples: nothing to generate")
    except (DownloadUnavailableError, DownloadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
