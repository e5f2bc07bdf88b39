"""deeplk.data.download: end to end against a local HTTP server with Range support serving small
archives built here (download, resume, verification, extraction, generation), Google Drive
through a fake ``gdown``, and the messages when nothing can be downloaded."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import deeplk.data as D
import numpy as np
import pytest
from deeplk.data import download as DL
from deeplk.data import dlk_format as F

# ------------------------------------------------------------------------------ HTTP server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes); honours ``Range: bytes=N-`` unless
    ``server.ignore_range``; ``server.cut`` (path -> n) sends only n bytes of the body and
    closes the connection; every request is logged as (path, Range header or None)."""

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.cut, srv.ignore_range = {}, [], {}, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------- archives


def _jpeg(name: str, h: int = 240, w: int = 320) -> bytes:
    img = cv2.resize(D.load_demo_image(name), (w, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


COCO_IMAGES = {
    "train2014": ["astronaut", "coffee", "chelsea", "rocket"],
    "val2014": ["motorcycle", "coffee", "immunohistochemistry"],
}


def _coco_zip(split: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{split}/", b"")
        for k, name in enumerate(COCO_IMAGES[split]):
            z.writestr(f"{split}/COCO_{split}_{k:012d}.jpg", _jpeg(name))
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco_zips():
    return {split: _coco_zip(split) for split in COCO_IMAGES}


def _archive(name: str, url: str, data: bytes, md5=True) -> DL.Archive:
    return DL.Archive(name, url, size=len(data),
                      md5=hashlib.md5(data).hexdigest() if md5 else None)


def _serve_coco(server, coco_zips) -> dict:
    archives = {}
    for split, data in coco_zips.items():
        server.files[f"/zips/{split}.zip"] = data
        archives[split] = _archive(f"{split}.zip", f"{server.url}/zips/{split}.zip", data)
    return archives


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() \
        else []


# -------------------------------------------------------------------------------------- tests


def test_cli_end_to_end_download_verify_extract_generate(server, coco_zips, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setattr(DL, "MSCOCO_ARCHIVES", _serve_coco(server, coco_zips))
    raw, dl, out = tmp_path / "raw", tmp_path / "dl", tmp_path / "MSCOCO"
    argv = ["mscoco", "--dest", str(raw), "--downloads", str(dl), "--generate", "--out",
            str(out), "--num-train", "3", "--num-val", "2", "--no-progress"]
    assert DL.main(argv) == 0
    for split, names in COCO_IMAGES.items():
        files = sorted(p.name for p in (raw / split).iterdir())
        assert files == [f"COCO_{split}_{k:012d}.jpg" for k in range(len(names))]
        with zipfile.ZipFile(io.BytesIO(coco_zips[split])) as z:  # bytes as in the archive
            assert (raw / split / files[0]).read_bytes() == z.read(f"{split}/{files[0]}")
        assert (dl / f"{split}.zip").read_bytes() == coco_zips[split]  # kept, verified
    assert sorted(p.name for p in dl.iterdir()) == ["train2014.zip", "val2014.zip"]  # no .part
    assert _hidden(raw) == []  # no temporary extraction folders
    assert [r for r in server.log if r[1] is not None] == []  # fresh: no Range requests
    # Sample generation followed: a loadable DLK dataset.
    assert len(F.list_samples(out, "train2014")) == 3 and len(F.list_samples(out, "val2014")) == 2
    inputs, templates, corners = D.load_arrays(out, "val2014")
    assert inputs.shape == (2, 192, 192, 3) and corners.shape == (2, 4, 2)
    assert "train2014: 3 samples, val2014: 2 samples" in capsys.readouterr().out
    # A rerun finds everything in place and downloads nothing.
    n = len(server.log)
    assert DL.main(argv[:5] + ["--no-progress"]) == 0
    assert len(server.log) == n


def test_resume_from_a_partial_file_with_range(server, coco_zips, tmp_path):
    data = coco_zips["val2014"]
    server.files["/v.zip"] = data
    archive = _archive("val2014.zip", f"{server.url}/v.zip", data)
    dl = tmp_path / "dl"
    dl.mkdir()
    half = len(data) // 2
    (dl / "val2014.zip.part").write_bytes(data[:half])
    path = DL.download_file(archive, dl, progress=False)
    assert server.log == [("/v.zip", f"bytes={half}-")]
    assert path.read_bytes() == data and not (dl / "val2014.zip.part").exists()


def test_connection_lost_then_resumed(server, coco_zips, tmp_path):
    data = coco_zips["train2014"]
    server.files["/t.zip"] = data
    server.cut["/t.zip"] = 5000  # the first response stops after 5000 bytes
    archive = _archive("train2014.zip", f"{server.url}/t.zip", data)
    with pytest.raises(DL.DownloadUnavailableError, match="rerun to resume"):
        DL.download_file(archive, tmp_path, progress=False)
    part = tmp_path / "train2014.zip.part"
    assert part.read_bytes() == data[:5000] and not (tmp_path / "train2014.zip").exists()
    path = DL.download_file(archive, tmp_path, progress=False)
    assert server.log[-1] == ("/t.zip", "bytes=5000-")
    assert path.read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server, coco_zips, tmp_path):
    data = coco_zips["val2014"]
    server.files["/v.zip"] = data
    server.ignore_range = True
    (tmp_path / "val2014.zip.part").write_bytes(b"junk that is not the start of the file")
    path = DL.download_file(_archive("val2014.zip", f"{server.url}/v.zip", data), tmp_path,
                            progress=False)
    assert path.read_bytes() == data


def test_corrupt_download_is_rejected_and_nothing_is_extracted(server, coco_zips, tmp_path):
    good = coco_zips["val2014"]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, one byte flipped in transit
    server.files["/zips/val2014.zip"] = bytes(bad)
    archives = {"val2014": _archive("val2014.zip", f"{server.url}/zips/val2014.zip", good)}
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    with pytest.raises(DL.DownloadError, match=r"val2014\.zip.*MD5 .* does not match"):
        DL.fetch_mscoco(raw, ["val2014"], dl, archives=archives, progress=False)
    assert list(dl.iterdir()) == []  # neither the archive nor its .part remains
    assert not (raw / "val2014").exists() and _hidden(raw) == []
    # A wrong size is caught too (before the checksum).
    short = DL.Archive("val2014.zip", f"{server.url}/zips/val2014.zip", size=len(good) + 1)
    with pytest.raises(DL.DownloadUnavailableError, match="sent .* of .* bytes"):
        DL.download_file(short, dl, progress=False)


def test_damaged_archive_without_checksum_leaves_nothing_half_extracted(tmp_path, coco_zips):
    bad = bytearray(coco_zips["train2014"])
    bad[len(bad) // 2] ^= 0xFF  # inside a JPEG member: the ZIP CRC check fails
    path = tmp_path / "train2014.zip"
    path.write_bytes(bytes(bad))
    raw = tmp_path / "raw"
    unchecked = {"train2014": DL.Archive("train2014.zip", "http://unused/")}
    with pytest.raises(DL.DownloadError, match=r"cannot extract .*train2014\.zip"):
        DL.fetch_mscoco(raw, ["train2014"], tmp_path, archives=unchecked,
                        local_archives={"train2014": path}, progress=False)
    assert not (raw / "train2014").exists() and _hidden(raw) == []
    with pytest.raises(DL.DownloadError, match="not a ZIP or tar archive"):
        DL.extract_archive(_write(tmp_path / "x.zip", b"plain text"), tmp_path / "x")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_unsafe_member_paths_are_refused(tmp_path, member):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ok/file.txt", b"fine")
        z.writestr(member, b"evil")
    target = tmp_path / "deep" / "out"
    with pytest.raises(DL.DownloadError, match="unsafe member path"):
        DL.extract_archive(_write(tmp_path / "a.zip", buf.getvalue()), target)
    assert not target.exists() and not list(tmp_path.rglob("evil.txt"))
    assert _hidden(tmp_path / "deep") == []


def test_tar_archive_and_links(tmp_path):
    def tar_with(link: bool) -> Path:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo("d/f.txt")
            info.size = 5
            t.addfile(info, io.BytesIO(b"hello"))
            if link:
                s = tarfile.TarInfo("d/link")
                s.type, s.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(s)
        return _write(tmp_path / f"a{int(link)}.tar.gz", buf.getvalue())

    DL.extract_archive(tar_with(False), tmp_path / "ok", progress=False)
    assert (tmp_path / "ok" / "d" / "f.txt").read_bytes() == b"hello"
    with pytest.raises(DL.DownloadError, match="link or special file"):
        DL.extract_archive(tar_with(True), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_no_server_gives_the_manual_instructions_then_uses_the_local_file(
        coco_zips, tmp_path, monkeypatch, capsys):
    data = coco_zips["val2014"]
    url = f"{_dead_url()}/zips/val2014.zip"
    monkeypatch.setattr(DL, "MSCOCO_ARCHIVES", {"val2014": _archive("val2014.zip", url, data)})
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    argv = ["mscoco", "--dest", str(raw), "--downloads", str(dl), "--splits", "val2014",
            "--no-progress"]
    assert DL.main(argv) == 2
    err = capsys.readouterr().err
    for text in (f"cannot download val2014.zip from {url}", f"put it at {dl / 'val2014.zip'}",
                 f"curl -L -C - -o {dl / 'val2014.zip'} {url}", "run the same command again"):
        assert text in err
    assert "Traceback" not in err and not (raw / "val2014").exists()
    # The user puts the file where the message says: the command continues offline.
    (dl / "val2014.zip").write_bytes(data)
    assert DL.main(argv) == 0
    assert len(list((raw / "val2014").iterdir())) == len(COCO_IMAGES["val2014"])
    # A wrong local file is named.
    other = tmp_path / "val2014.zip"
    other.write_bytes(data[:-1])
    with pytest.raises(DL.DownloadError, match=f"{other} has"):
        DL.verify_file(other, DL.MSCOCO_ARCHIVES["val2014"])


# ----------------------------------------------------------------------------- Google Drive


def _google_zip() -> bytes:
    """The published layout: Dataset/GoogleEarth/<split>_{input,template,label}/ and the same
    for GoogleMap, a few DLK samples each."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("GoogleEarth", "GoogleMap"):
            for split in ("train2014", "val2014"):
                for k in range(2):
                    stem = f"{k}"
                    for kind, size in (("input", 192), ("template", 128)):
                        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                        ok, jpg = cv2.imencode(".jpg", img)
                        z.writestr(f"Dataset/{name}/{split}_{kind}/{stem}.jpg", jpg.tobytes())
                    corners = np.array([[30, 31], [160, 33], [158, 161], [33, 157]])
                    z.writestr(f"Dataset/{name}/{split}_label/{stem}_label.txt",
                               F.label_to_json(corners))
    return buf.getvalue()


def _fake_gdown(data: bytes, calls: list, fail: Exception | None = None):
    def download(id=None, output=None, quiet=False, resume=False, **kw):  # noqa: A002
        calls.append({"id": id, "output": output, "resume": resume})
        if fail is not None:
            raise fail
        Path(output).write_bytes(data)
        return output

    return types.SimpleNamespace(download=download)


def test_google_drive_archive_through_gdown(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "gdown", _fake_gdown(_google_zip(), calls))
    dl = tmp_path / "dl"
    earth = DL.fetch_google("googleearth", tmp_path / "Dataset" / "GoogleEarth", dl,
                            progress=False)
    assert calls == [{"id": DL.GOOGLE_DRIVE_ID, "output": str(dl / DL.GOOGLE_ARCHIVE.name),
                      "resume": True}]
    assert F.list_samples(earth, "val2014") == ["0", "1"]
    corners = D.load_arrays(earth, "train2014")[2]
    np.testing.assert_array_equal(corners[0], [[30, 31], [160, 33], [158, 161], [33, 157]])
    assert _hidden(tmp_path / "Dataset") == []
    # The archive is kept: GoogleMap comes from it without a second download.
    gmap = DL.fetch_google("googlemap", tmp_path / "Dataset" / "GoogleMap", dl, progress=False)
    assert len(calls) == 1 and F.list_samples(gmap, "train2014") == ["0", "1"]
    # Already there: nothing to do.
    assert DL.fetch_google("googlemap", gmap, dl, progress=False) == gmap


def test_google_drive_failure_and_wrong_archive(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "gdown",
                        _fake_gdown(b"", calls, fail=ConnectionError("no network")))
    dl = tmp_path / "dl"
    argv = ["googlemap", "--dest", str(tmp_path / "GoogleMap"), "--downloads", str(dl),
            "--no-progress"]
    assert DL.main(argv) == 2
    err = capsys.readouterr().err
    assert f"https://drive.google.com/file/d/{DL.GOOGLE_DRIVE_ID}/view" in err
    assert f"put it at {dl / DL.GOOGLE_ARCHIVE.name}" in err and "no network" in err
    # A local archive without the expected folder is refused, and nothing is left behind.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Something/else.txt", b"x")
    wrong = _write(tmp_path / "wrong.zip", buf.getvalue())
    with pytest.raises(DL.DownloadError, match="holds no GoogleMap/ folder with DLK samples"):
        DL.fetch_google("googlemap", tmp_path / "GoogleMap", dl, local_archive=wrong,
                        progress=False)
    assert not (tmp_path / "GoogleMap").exists() and _hidden(tmp_path) == []
    # --archive with the right file works offline.
    good = _write(tmp_path / "from_browser.zip", _google_zip())
    assert DL.main(argv + ["--archive", str(good)]) == 0
    assert F.list_samples(tmp_path / "GoogleMap", "val2014") == ["0", "1"]


def test_published_mscoco_constants():
    a = DL.MSCOCO_ARCHIVES
    assert a["train2014"].url == "http://images.cocodataset.org/zips/train2014.zip"
    assert a["val2014"].url == "http://images.cocodataset.org/zips/val2014.zip"
    assert (a["train2014"].size, a["val2014"].size) == (13_510_573_713, 6_645_013_297)
    assert a["train2014"].md5 == "0da8c0bd3d6becc4dcb32757491aca88"
    assert a["val2014"].md5 == "a3d79f5ed8d289b7a7554ce06a5782b3"


# ------------------------------------------------------------------------------------- SRIF

_TINY_JPEG = cv2.imencode(".jpg", np.full((4, 4, 3), 90, np.uint8))[1].tobytes()


def _srif_zip(drop: dict | None = None) -> bytes:
    """GitHub's ZIP layout of the repository: SRIF-main/{README.md, algorithms/, dataset/<set>/}
    with 200 pairs and transforms per set; `drop` (set -> file names) leaves files out."""
    drop = drop or {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("SRIF-main/README.md", b"# SRIF\n")
        z.writestr("SRIF-main/algorithms/SRIF/matches.txt", b"1 2\n")
        for name in DL.SRIF_SETS:
            for i in range(1, 201):
                files = {f"pair{i}_1.jpg": _TINY_JPEG, f"pair{i}_2.jpg": _TINY_JPEG,
                         f"gt_{i}.txt": b"1 0 0\n0 1 0\n"}
                for f, data in files.items():
                    if f not in drop.get(name, ()):
                        z.writestr(f"SRIF-main/dataset/{name}/{f}", data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def srif_zip():
    return _srif_zip()


def _serve_srif(server, data: bytes, monkeypatch) -> DL.Archive:
    path = "/LJY-RS/SRIF/zip/refs/heads/main"
    server.files[path] = data
    archive = DL.Archive("SRIF-main.zip", f"{server.url}{path}")
    monkeypatch.setattr(DL, "SRIF_ARCHIVE", archive)
    return archive


def test_srif_download_install_and_check(server, srif_zip, tmp_path, monkeypatch, capsys):
    _serve_srif(server, srif_zip, monkeypatch)
    raw, dl = tmp_path / "Dataset" / "raw" / "SRIF", tmp_path / "dl"
    argv = ["srif", "--dest", str(raw), "--downloads", str(dl), "--no-progress"]
    assert DL.main(argv) == 0
    assert sorted(p.name for p in raw.iterdir()) == sorted(DL.SRIF_SETS)
    for name in DL.SRIF_SETS:
        files = {p.name for p in (raw / name).iterdir()}
        assert len(files) == 600 and {"pair200_2.jpg", "gt_1.txt", "pair1_1.jpg"} <= files
    assert (raw / "Optical-SAR" / "pair7_2.jpg").read_bytes() == _TINY_JPEG
    assert not (raw / "README.md").exists()  # only the dataset/ folder is installed
    assert _hidden(raw.parent) == [] and (dl / "SRIF-main.zip").read_bytes() == srif_zip
    out = capsys.readouterr().out
    assert f"{raw / 'Optical-Map'}: 200 pairs" in out and f"{raw / 'Nighttime'}: 200 pairs" in out
    assert DL.check_srif(raw) == {name: 200 for name in DL.SRIF_SETS}
    # The registered-pairs reader accepts the installed layout (identity transforms here).
    from deeplk.data.sources import find_registered_pairs

    pairs = find_registered_pairs(raw / "Optical-Map")
    assert len(pairs) == 200 and pairs[-1].name == "pair200"
    # A rerun finds it in place: no request.
    n = len(server.log)
    assert DL.main(argv) == 0 and len(server.log) == n
    # A set that lost files is reported on the next run, naming the set and the counts.
    (raw / "Nighttime" / "pair42_1.jpg").unlink()
    assert DL.main(argv) == 2
    err = capsys.readouterr().err
    assert "SRIF set Nighttime" in err and "199 pair*_1, 200 pair*_2, 200 gt_*.txt" in err


def test_srif_archive_missing_pairs_is_refused(srif_zip, tmp_path):
    bad = _write(tmp_path / "SRIF-main.zip",
                 _srif_zip({"Optical-SAR": ["pair17_2.jpg", "gt_17.txt", "gt_18.txt"]}))
    raw = tmp_path / "SRIF"
    with pytest.raises(DL.DownloadError,
                       match=r"SRIF set Optical-SAR .* holds 200 pair\*_1, 199 pair\*_2, 198 "
                             r"gt_\*\.txt; expected 200 pairs"):
        DL.fetch_srif(raw, tmp_path / "dl", local_archive=bad, progress=False)
    assert not raw.exists() and _hidden(tmp_path) == []  # nothing half installed
    # Same counts but different ids is refused too.
    shifted = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(srif_zip)) as src, zipfile.ZipFile(shifted, "w") as z:
        for m in src.infolist():
            name = m.filename.replace("Optical-Depth/gt_5.txt", "Optical-Depth/gt_205.txt")
            z.writestr(name, src.read(m))
    odd = _write(tmp_path / "odd.zip", shifted.getvalue())
    with pytest.raises(DL.DownloadError, match="SRIF set Optical-Depth"):
        DL.fetch_srif(raw, tmp_path / "dl", local_archive=odd, progress=False)
    # An archive without the sets.
    with pytest.raises(DL.DownloadError, match="holds no dataset/ folder with the SRIF sets"):
        DL.fetch_srif(raw, tmp_path / "dl", local_archive=_write(tmp_path / "x.zip", _coco_zip(
            "val2014")), progress=False)
    assert not raw.exists()


def test_srif_offline_message_then_local_file(srif_zip, tmp_path, monkeypatch, capsys):
    url = f"{_dead_url()}/LJY-RS/SRIF/zip/refs/heads/main"
    monkeypatch.setattr(DL, "SRIF_ARCHIVE", DL.Archive("SRIF-main.zip", url))
    raw, dl = tmp_path / "SRIF", tmp_path / "dl"
    argv = ["srif", "--dest", str(raw), "--downloads", str(dl), "--no-progress"]
    assert DL.main(argv) == 2
    err = capsys.readouterr().err
    for text in (f"cannot download SRIF-main.zip from {url}", f"put it at {dl / 'SRIF-main.zip'}",
                 f"curl -L -C - -o {dl / 'SRIF-main.zip'} {url}", "run the same command again",
                 "clone https://github.com/LJY-RS/SRIF", f"to {raw}/<set>/", "Optical-Infrared"):
        assert text in err
    assert "Traceback" not in err and not raw.exists()
    (dl / "SRIF-main.zip").write_bytes(srif_zip)  # put where the message says
    assert DL.main(argv) == 0
    assert DL.check_srif(raw)["Optical-Optical"] == 200


def test_published_srif_constants():
    assert DL.SRIF_ARCHIVE.url == "https://codeload.github.com/LJY-RS/SRIF/zip/refs/heads/main"
    assert DL.SRIF_SETS == ("Optical-Map", "Optical-SAR", "Optical-Infrared", "Optical-Depth",
                            "Nighttime", "Optical-Optical")
    assert DL.SRIF_PAIRS == 200
