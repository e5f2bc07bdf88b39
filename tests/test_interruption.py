"""SIGKILL in the middle of work, then a rerun: no corrupt or half-written visible files, the
completed work kept, and the same end result as an uninterrupted run.

Training is covered in tests/test_train.py::TestKillAndResume (killed at a known step, and
killed from outside right after a checkpoint, possibly during the next save: same weights
after resuming). Here: data generation, a download, and an extraction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import deeplk.data as D
from deeplk.data import dlk_format as F
from deeplk.data import download as DL
from deeplk.data.loader import check_image_file

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    """SIGKILL `proc` as soon as `ready()` is true (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"ended before the kill: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "nothing happened in time"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_GENERATE = """
import sys
import deeplk.data as D
D.generate_dataset("demo_multimodal", sys.argv[1], num_train=int(sys.argv[2]), num_val=8,
                   seed=5, progress=False, workers=2)
"""


def test_kill_during_generation_then_rerun(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    n_train = 48
    labels = F.split_dirs(killed, "train2014")["label"]

    def some_written():
        try:
            return sum(1 for p in labels.iterdir() if not p.name.startswith(".")) >= 6
        except FileNotFoundError:
            return False

    proc = subprocess.Popen([sys.executable, "-c", _GENERATE, str(killed), str(n_train)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _kill_when(proc, some_written)

    # Every visible file is complete: images decode to full size, labels parse.
    complete = {p.name for p in labels.iterdir() if not p.name.startswith(".")}
    assert complete, "nothing was written before the kill"
    d = F.split_dirs(killed, "train2014")
    for kind, size in (("input", 192), ("template", 128)):
        for p in d[kind].iterdir():
            if not p.name.startswith("."):
                check_image_file(p, size, kind)
    for p in labels.iterdir():
        if not p.name.startswith("."):
            F.read_label(p)
    done = len(complete)
    assert done < n_train  # killed mid-way

    stats = D.generate_dataset("demo_multimodal", killed, num_train=n_train, num_val=8, seed=5,
                               progress=False, workers=2)
    assert stats["train2014"]["existing"] >= done  # completed samples kept, not rewritten
    assert stats["train2014"]["written"] == n_train - stats["train2014"]["existing"]
    D.generate_dataset("demo_multimodal", clean, num_train=n_train, num_val=8, seed=5,
                       progress=False, workers=1)
    assert _tree(killed) == _tree(clean)  # byte-identical, no temporary files left


# ---------------------------------------------------------------------- download, extraction


class _SlowHandler(BaseHTTPRequestHandler):
    """Serves ``server.data`` at any path in 1 KiB pieces with a pause (Range supported)."""

    def do_GET(self):  # noqa: N802
        data, start = self.server.data, 0
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            for k in range(start, len(data), 1024):
                self.wfile.write(data[k:k + 1024])
                time.sleep(self.server.pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


_DOWNLOAD = """
import sys
from deeplk.data import download as DL
archive = DL.Archive("a.zip", sys.argv[1], size=int(sys.argv[2]), md5=sys.argv[3])
DL.download_file(archive, sys.argv[4], progress=False)
"""


def _zip_bytes(n_files: int = 40) -> bytes:
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k in range(n_files):
            z.writestr(f"val2014/img_{k:03d}.jpg", rng.bytes(2048))
    return buf.getvalue()


def test_kill_during_download_then_resume(tmp_path):
    import hashlib

    data = _zip_bytes()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    srv.data, srv.ranges, srv.pause = data, [], 0.01
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/a.zip"
        md5 = hashlib.md5(data).hexdigest()
        part = tmp_path / "a.zip.part"
        proc = subprocess.Popen(
            [sys.executable, "-c", _DOWNLOAD, url, str(len(data)), md5, str(tmp_path)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _kill_when(proc, lambda: part.is_file() and part.stat().st_size >= 16 * 1024)
        have = part.stat().st_size
        assert 0 < have < len(data) and not (tmp_path / "a.zip").exists()
        assert part.read_bytes() == data[:have]  # what is there is right
        srv.pause = 0.0
        path = DL.download_file(DL.Archive("a.zip", url, size=len(data), md5=md5), tmp_path,
                                progress=False)
        assert srv.ranges[-1] == f"bytes={have}-"  # resumed, not restarted
        assert path.read_bytes() == data and not part.exists()
    finally:
        srv.shutdown()
        srv.server_close()


def test_extraction_debris_is_cleaned_on_rerun(tmp_path):
    # What a SIGKILL during extraction leaves: hidden temporary folders next to the target;
    # the target itself only ever appears complete (renamed into place).
    archive = tmp_path / "val2014.zip"
    archive.write_bytes(_zip_bytes(5))
    raw = tmp_path / "raw"
    (raw / ".val2014.extract-abc123" / "val2014").mkdir(parents=True)
    (raw / ".val2014.extract-abc123" / "val2014" / "img_000.jpg").write_bytes(b"half")
    (raw / ".val2014.staging-999").mkdir()
    unchecked = {"val2014": DL.Archive("val2014.zip", "http://unused/")}
    DL.fetch_mscoco(raw, ["val2014"], tmp_path, archives=unchecked,
                    local_archives={"val2014": archive}, progress=False)
    assert sorted(p.name for p in raw.iterdir()) == ["val2014"]
    assert len(list((raw / "val2014").iterdir())) == 5
