"""Data root, benchmark listing and reading, the embedded default, and the verified, resumable downloader.

The downloader is tested against a loopback HTTP mirror (``{repo}/{commit}/{path}``) that supports Range requests
and can serve a file corrupted once or drop a connection mid-body once. The mirror serves the real files of the shared
data folder (``$SANDBOX_DATA``, else ``../shared/data`` beside the checkout); without that folder it serves synthetic
bytes with the embedded checksums patched to match, so the downloader is tested everywhere. Tests that read the real
benchmark images skip without the shared folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sandbox import data, data_sources
from sandbox.__main__ import main as cli_main
from sandbox.data_sources import SOURCES
from sandbox.errors import SandboxError, UnknownNameError

SHARED = (
    Path(os.environ["SANDBOX_DATA"])
    if os.environ.get("SANDBOX_DATA")
    else Path(__file__).resolve().parents[2] / "shared" / "data"
)
HAVE_SHARED = (SHARED / "benchmarks" / "Set12").is_dir() and (SHARED / "benchmarks" / "CBSD68").is_dir()
needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=f"shared data folder not found at {SHARED}")

SET12 = [rel for rel in SOURCES if rel.startswith("benchmarks/Set12/")]
WEIGHT = "weights/lpips_linear_v0.1/alex.pth"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch):
    import pooch.core

    monkeypatch.setattr(pooch.core, "time", SimpleNamespace(sleep=lambda seconds: None))  # pooch's wait between tries
    monkeypatch.setattr(data, "TIMEOUT_S", 10.0)


# ------------------------------------------------------------------------------------------------------- the mirror
@pytest.fixture
def source_bytes(monkeypatch) -> dict[str, bytes]:
    """Data-root path -> bytes for Set12 and one weight file: the shared files, or synthetic ones with patched sums."""
    out = {}
    rng = np.random.default_rng(0)
    for rel in [*SET12, WEIGHT]:
        if HAVE_SHARED:
            out[rel] = (SHARED / rel).read_bytes()
        else:
            blob = rng.integers(0, 256, int(rng.integers(20_000, 60_000)), dtype=np.uint8).tobytes()
            src = dataclasses.replace(SOURCES[rel], sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
            monkeypatch.setitem(SOURCES, rel, src)
            out[rel] = blob
    return out


class Mirror:
    """A loopback mirror: files at ``{repo}/{commit}/{path}``, Range support, one-shot faults, a request log."""

    def __init__(self, files: dict[str, bytes]):
        self.files = {self.path_of(rel): body for rel, body in files.items()}
        self.corrupt_once: set[str] = set()  # url paths served with wrong bytes on their next request
        self.corrupt_always: set[str] = set()
        self.drop_once: set[str] = set()  # url paths whose next response stops half-way through the body
        self.status_once: dict[str, int] = {}  # url path -> an error status answered to its next request
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (url path, Range header)
        self.lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                with mirror.lock:
                    mirror.requests.append((path, self.headers.get("Range")))
                    corrupt = path in mirror.corrupt_always or path in mirror.corrupt_once
                    mirror.corrupt_once.discard(path)
                    drop = path in mirror.drop_once
                    mirror.drop_once.discard(path)
                    status = mirror.status_once.pop(path, None)
                if status is not None:
                    self.send_error(status)
                    return
                from urllib.parse import unquote

                body = mirror.files.get(unquote(path))
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if corrupt:
                    body = bytes([body[0] ^ 0xFF]) + body[1:-1] + bytes([body[-1] ^ 0xFF])
                start, rng = 0, self.headers.get("Range")
                if rng and not mirror.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if drop:  # full Content-Length announced, half the body sent, connection closed
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def path_of(self, rel: str) -> str:
        s = SOURCES[rel]
        return f"/{s.repo}/{s.commit}/{s.path}"

    def requests_for(self, rel: str) -> list[str | None]:
        return [r for p, r in self.requests if p == self.path_of(rel)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(source_bytes):
    m = Mirror(source_bytes)
    yield m
    m.close()


def _flip(path: Path, at: int = 100) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x01
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------------------------------------------------- fetch
def _leftovers(dest: Path) -> list[Path]:
    """Files of ``dest`` that are no data file: partial downloads, pooch's temporary files."""
    return [p for p in dest.rglob("*") if p.is_file() and p.name != "SHA256SUMS" and str(p.relative_to(dest))
            not in SOURCES]  # fmt: skip


def test_fetch_set12_retries_and_verifies(mirror, source_bytes, tmp_path):
    dest = tmp_path / "root"
    corrupt, dropped, busy, partial, stale = SET12[2], SET12[6], SET12[7], SET12[4], SET12[8]
    mirror.corrupt_once.add(mirror.path_of(corrupt))
    mirror.drop_once.add(mirror.path_of(dropped))
    mirror.status_once[mirror.path_of(busy)] = 503
    (dest / "benchmarks" / "Set12").mkdir(parents=True)
    half = len(source_bytes[partial]) // 2
    (dest / (partial + ".part")).write_bytes(source_bytes[partial][:half])  # an interrupted earlier run
    (dest / stale).write_bytes(source_bytes[stale])
    _flip(dest / stale)  # complete but corrupt

    report = data.fetch(dest, "Set12", mirror=mirror.url, progress=False)

    assert data.verify(dest, "Set12").passed
    assert sorted(report.downloaded) == sorted(set(SET12))  # every file (the stale one replaced)
    assert report.refetched == [corrupt, dropped, busy]  # a failed checksum, a cut connection, a 503: one more try
    assert report.replaced == [stale]
    for rel in (corrupt, busy):
        assert mirror.requests_for(rel) == [None, None]  # a failed checksum or a 503: the retry starts from nothing
    first, second = mirror.requests_for(dropped)
    assert first is None and second.startswith("bytes=") and second != "bytes=0-"  # the cut transfer resumes
    assert mirror.requests_for(partial) == [f"bytes={half}-"]  # and so does the part an earlier run left
    assert not _leftovers(dest)
    # every byte received once, plus the corrupt copy; the part's first half was not asked for again
    assert report.bytes == sum(len(source_bytes[r]) for r in SET12) + len(source_bytes[corrupt]) - half
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{SOURCES[r].sha256}  {r}" for r in SET12]

    n = len(mirror.requests)
    again = data.fetch(dest, "Set12", mirror=mirror.url, progress=False)
    assert again.downloaded == [] and sorted(again.present) == sorted(SET12) and again.bytes == 0
    assert len(mirror.requests) == n  # nothing asked of the server


def test_fetch_replaces_a_garbage_partial_file(mirror, source_bytes, tmp_path):
    rel = SET12[1]
    part = tmp_path / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 5000)  # not a prefix of the file
    report = data.fetch(tmp_path, "Set12", mirror=mirror.url, progress=False)
    assert rel in report.downloaded and report.refetched == [rel]  # resumed, failed its checksum, fetched again
    assert mirror.requests_for(rel) == ["bytes=5000-", None]
    assert (tmp_path / rel).read_bytes() == source_bytes[rel] and not _leftovers(tmp_path)


def test_fetch_restarts_a_part_longer_than_the_file(mirror, source_bytes, tmp_path):
    """A part as long as the file or longer gets 416 for its Range request: it is dropped and the file fetched whole."""
    rel = SET12[3]
    part = tmp_path / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(source_bytes[rel] + b"extra")
    report = data.fetch(tmp_path, "Set12", mirror=mirror.url, progress=False)
    assert rel in report.downloaded and report.refetched == []
    assert mirror.requests_for(rel) == [f"bytes={len(source_bytes[rel]) + 5}-", None]
    assert (tmp_path / rel).read_bytes() == source_bytes[rel] and not _leftovers(tmp_path)


def test_fetch_removes_stale_temporary_files_of_killed_downloads(mirror, tmp_path):
    folder = tmp_path / "benchmarks" / "Set12"
    folder.mkdir(parents=True)
    stale, live = folder / "tmpab12_d34", folder / "tmpzz99zz99"  # pooch streams into such names
    stale.write_bytes(b"half a download")
    live.write_bytes(b"another process's download")
    os.utime(stale, (1e9, 1e9))  # untouched for years
    data.fetch(tmp_path, "Set12", mirror=mirror.url, progress=False)
    assert not stale.exists() and live.exists()


def test_fetch_persistent_mismatch_names_the_file(mirror, tmp_path):
    rel = SET12[3]
    mirror.corrupt_always.add(mirror.path_of(rel))
    match = rf"{rel}: the file from {mirror.url}\S+ does not match its sha256 \w+\.\.\. \(downloaded 2 times\)"
    with pytest.raises(SandboxError, match=match) as e:
        data.fetch(tmp_path, "Set12", mirror=mirror.url, retries=1, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / rel).exists() and not _leftovers(tmp_path)
    assert len(mirror.requests_for(rel)) == 2
    # the files fetched before the failure are kept and listed
    listed = [line.split()[1] for line in (tmp_path / "SHA256SUMS").read_text().splitlines()]
    assert listed == SET12[:3]


def test_fetch_network_errors_are_one_line(mirror, tmp_path, monkeypatch):
    missing = next(rel for rel in SOURCES if rel.startswith("weights/") and rel != WEIGHT)
    with pytest.raises(SandboxError, match=r"download failed: http://127\.0\.0\.1:\d+/\S+ answered HTTP 404") as e:
        data.fetch(tmp_path, "weights", mirror=mirror.url, progress=False)
    assert SOURCES[missing].path in str(e.value) and "\n" not in str(e.value)
    assert len(mirror.requests_for(missing)) == 1  # a 404 is not retried
    url = mirror.url
    mirror.close()  # nothing listens there any more
    gave_up = rf"download failed: {url}/cszn/DnCNN/\S+ \(.*gave up after 2 attempts\)"
    with pytest.raises(SandboxError, match=gave_up) as e:
        data.fetch(tmp_path / "b", "Set12", mirror=url, retries=1, progress=False)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("SANDBOX_DATA_MIRROR", "nota://mirror")
    with pytest.raises(SandboxError, match="download failed: 'nota://mirror/\\S+' is not a valid URL"):
        data.fetch(tmp_path / "c", "Set12", retries=0, progress=False)


def test_fetch_progress_bars_count_files_and_bytes(mirror, source_bytes, tmp_path, capsys):
    data.fetch(tmp_path, "Set12", mirror=mirror.url, progress=True)
    err = capsys.readouterr().err
    assert "files: 100%" in err and "12/12" in err and "bytes: 100%" in err  # bytes: the embedded sizes, all received


def test_fetch_weights_through_the_cli(mirror, source_bytes, tmp_path, monkeypatch, capsys):
    for rel in [r for r in SOURCES if r.startswith("weights/") and r != WEIGHT]:
        monkeypatch.delitem(SOURCES, rel)  # the mirror holds one weight file
    assert data.set_files("weights") == [WEIGHT]
    assert mirror.path_of(WEIGHT).endswith("richzhang/PerceptualSimilarity/" + SOURCES[WEIGHT].commit
                                           + "/lpips/weights/v0.1/alex.pth")  # fmt: skip
    monkeypatch.setenv("SANDBOX_DATA_MIRROR", mirror.url)  # the --mirror default
    assert cli_main(["data", "fetch", "--sets", "weights", "--dest", str(tmp_path), "--quiet"]) == 0
    assert "1 files ok" in capsys.readouterr().out
    assert (tmp_path / WEIGHT).read_bytes() == source_bytes[WEIGHT]
    assert cli_main(["data", "verify", "--data-root", str(tmp_path), "--sets", "weights"]) == 0
    assert "1 files ok" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------- verify
@needs_shared
def test_verify_shared_set12_ok():
    report = data.verify(SHARED, "Set12")
    assert report.passed and report.ok == SET12


def test_verify_reports_corrupt_and_missing(source_bytes, tmp_path, capsys):
    for rel in SET12:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(source_bytes[rel])
    assert data.verify(tmp_path, ["Set12"]).passed
    _flip(tmp_path / SET12[1], at=len(source_bytes[SET12[1]]) // 2)
    (tmp_path / SET12[3]).unlink()
    report = data.verify(tmp_path, "Set12")
    assert report.corrupt == [SET12[1]] and report.missing == [SET12[3]] and len(report.ok) == 10
    assert cli_main(["data", "verify", "--data-root", str(tmp_path), "--sets", "Set12"]) == 1
    out = capsys.readouterr().out
    assert f"| {SET12[1]} | corrupt" in out and f"| {SET12[3]} | missing" in out
    assert "data fetch --sets Set12" in out
    report = data.verify(tmp_path, "Set12,BSD68")
    assert len(report.missing) == 1 + 68


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths in the command line")
def test_cli_exit_codes(tmp_path):
    (tmp_path / SET12[0]).parent.mkdir(parents=True)
    (tmp_path / SET12[0]).write_bytes(b"not the file")
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "sandbox", "data", *a], capture_output=True, text=True,
                                    cwd=ROOT, env=env, timeout=120)  # fmt: skip
    r = run("verify", "--data-root", str(tmp_path), "--sets", "Set12")
    assert r.returncode == 1 and "corrupt" in r.stdout and "missing" in r.stdout
    r = run("verify", "--sets", "Set12")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SANDBOX_DATA" in r.stderr
    assert "data fetch --dest DIR" in r.stderr


def test_data_list(tmp_path, capsys):
    (tmp_path / "benchmarks" / "Set12").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "benchmarks" / "Set12" / f"{i:02d}.png").write_bytes(b"x")
    assert cli_main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Set12 | gray | 12 | partial (3/12) | gray denoising |" in out
    assert "| CBSD68 | color | 68 | no |" in out and "| weights | - | 18 files | no |" in out


# ---------------------------------------------------------------------------------------------------- the sources
def test_sources_cover_every_file_with_pinned_commits():
    assert len(SOURCES) == 1098
    for rel, src in SOURCES.items():
        assert len(src.commit) == 40 and int(src.commit, 16) >= 0 and len(src.sha256) == 64
        assert src.repo in data_sources.REPOS and src.size and src.size > 0
        assert data_sources.set_of(rel) in [*data.ALL_SETS, "weights"]
    counts = {name: len(data.set_files([name])) for name in data.ALL_SETS}
    assert counts == {name: s.count for name, s in data.ALL_SETS.items()}
    assert len(data.set_files("weights")) == 18 and len(data.set_files("all")) == len(data.set_files(None)) == 1098
    s = SOURCES["benchmarks/Set12/01.png"]
    assert (s.repo, s.commit, s.path) == (
        "cszn/DnCNN",
        "e93b27812d3ff523a3a79d19e5e50d233d7a8d0a",
        "testsets/Set12/01.png",
    )
    assert (
        SOURCES["train/BSD400/test_001.png"].path == "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400/test_001.png"
    )
    assert SOURCES["benchmarks/Kodak24/kodim07.png"].path == "kodak/kodim07.png"
    assert SOURCES["benchmarks/Classic5/lena.bmp"].path == "testsets/classic5/lena.bmp"
    assert SOURCES["weights/dncnn_matconvnet/specifics_gray/sigma=25.mat"].path == "model/specifics/sigma=25.mat"
    assert SOURCES["weights/dncnn_matconvnet/GD_Gray_Blind.mat"].path == "model/GD_Gray_Blind.mat"
    assert SOURCES["weights/pytorch/kair_release_mirror/ffdnet_color.pth"].repo == "zhengdihan/Unsupervised_denoising"
    assert s.url() == ("https://raw.githubusercontent.com/cszn/DnCNN/e93b27812d3ff523a3a79d19e5e50d233d7a8d0a/"
                       "testsets/Set12/01.png")  # fmt: skip
    assert s.url("http://m/") == "http://m/cszn/DnCNN/e93b27812d3ff523a3a79d19e5e50d233d7a8d0a/testsets/Set12/01.png"


@needs_shared
def test_embedded_checksums_match_the_shared_folder():
    shared = (SHARED / "SHA256SUMS").read_text().split()
    assert dict(zip(shared[1::2], shared[::2])) == {rel: s.sha256 for rel, s in SOURCES.items()}
    assert all((SHARED / rel).stat().st_size == s.size for rel, s in list(SOURCES.items())[::37])


def test_resolve_sets():
    assert data.resolve_sets(None)[-1] == "weights" and data.resolve_sets("all") == data.resolve_sets(None)
    assert data.resolve_sets("Set12, BSD68,Set12") == ["Set12", "BSD68"]
    with pytest.raises(UnknownNameError, match="unknown set 'bsd86'; did you mean 'BSD68'"):
        data.resolve_sets("Set12,bsd86")


# -------------------------------------------------------------------------------------------------------- data root
def test_data_root_precedence_and_errors(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.delenv("SANDBOX_DATA", raising=False)
    assert data.data_root() is None
    with pytest.raises(SandboxError, match=r"set SANDBOX_DATA=DIR or pass --data-root DIR.*data fetch --dest DIR"):
        data.data_root(required=True)
    monkeypatch.setenv("SANDBOX_DATA", str(b))
    assert data.data_root() == b.resolve() and data.data_root(required=True) == b.resolve()
    assert data.data_root(a) == a.resolve() and data.data_root(str(a)) == a.resolve()  # the flag wins
    with pytest.raises(SandboxError, match=r"data root '.*nope' \(from --data-root\) does not exist"):
        data.data_root(tmp_path / "nope")
    monkeypatch.setenv("SANDBOX_DATA", str(tmp_path / "gone"))
    with pytest.raises(SandboxError, match=r"'.*gone' \(from \$SANDBOX_DATA\) does not exist"):
        data.data_root()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SandboxError, match="is not a directory"):
        data.data_root(tmp_path / "file")


# ------------------------------------------------------------------------------------------------- listing, reading
@needs_shared
def test_list_and_read_shared_images():
    import cv2

    files = data.list_images("Set12", SHARED)
    assert [p.name for p in files] == [f"{i:02d}.png" for i in range(1, 13)]
    img = data.read_image(files[0], gray=True)
    assert img.dtype == np.uint8 and img.shape == (256, 256)
    assert np.array_equal(img, cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE))
    rgb = data.read_image(files[0], gray=False)  # a gray file read as color: replicated
    assert rgb.shape == (256, 256, 3) and np.array_equal(rgb[..., 0], rgb[..., 2]) and np.array_equal(rgb[..., 1], img)

    files = data.list_images("CBSD68", SHARED)
    assert len(files) == 68
    bgr = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    rgb = data.read_image(files[0], gray=False)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.flags.c_contiguous
    assert np.array_equal(rgb, bgr[..., ::-1]) and np.array_equal(data.read_image_bgr(files[0]), bgr)
    assert np.array_equal(data.read_image(files[0], gray=False, order="bgr"), bgr)
    assert data.read_unchanged(data.list_images("Classic5", SHARED)[0]).ndim == 2
    assert data.read_unchanged(data.list_images("LIVE1", SHARED)[0]).shape[2] == 3
    assert [p.suffix for p in data.list_images("McMaster", SHARED)] == [".tif"] * 18


def test_read_image_errors_and_formats(tmp_path):
    import cv2

    bad = tmp_path / "noise.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for fn in (lambda p: data.read_image(p, gray=True), lambda p: data.read_image(p, gray=False), data.read_unchanged):
        with pytest.raises(SandboxError, match=r"image '.*noise\.png' could not be decoded"):
            fn(bad)
    with pytest.raises(SandboxError, match=r"image '.*absent\.png' does not exist"):
        data.read_image(tmp_path / "absent.png", gray=True)
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for ext in (".png", ".bmp", ".tif"):
        cv2.imwrite(str(tmp_path / f"c{ext}"), rgb[..., ::-1])
        assert np.array_equal(data.read_image(tmp_path / f"c{ext}", gray=False), rgb)
        gray = data.read_image(tmp_path / f"c{ext}", gray=True).astype(int)
        diff = np.abs(gray - data.rgb_to_gray(rgb))
        assert diff.max() <= 1  # the decoder's own BT.601 fixed point
    with pytest.raises(SandboxError, match="order='yuv'"):
        data.read_image(tmp_path / "c.png", gray=False, order="yuv")


def test_list_images_errors(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown set 'set12'; did you mean 'Set12'\?.*sets: Set12, BSD68"):
        data.list_images("set12", tmp_path)
    with pytest.raises(SandboxError, match=r"'.*benchmarks/BSD68' is missing; .*data fetch --sets BSD68 --dest"):
        data.list_images("BSD68", tmp_path)
    (tmp_path / "train" / "BSD400").mkdir(parents=True)
    (tmp_path / "train" / "BSD400" / "notes.txt").write_text("x")
    with pytest.raises(SandboxError, match=r"has no images .*data fetch --sets BSD400"):
        data.list_images("BSD400", tmp_path)
    folder = tmp_path / "benchmarks" / "Set12"
    folder.mkdir(parents=True)
    for name in ("b.PNG", "a.bmp", "c.png.part", ".hidden.png", "d.jpeg"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in data.list_images("Set12", tmp_path)] == ["a.bmp", "b.PNG", "d.jpeg"]


# --------------------------------------------------------------------------------------------------------- embedded
def test_embedded_default_needs_no_data(monkeypatch):
    monkeypatch.delenv("SANDBOX_DATA", raising=False)
    gray, color, native = data.embedded_images(False), data.embedded_images(True), data.embedded_images(None)
    assert all(img.dtype == np.uint8 and img.ndim == 2 for _, img in gray) and len(gray) == len(native)
    assert all(img.ndim == 3 and img.shape[2] == 3 for _, img in color)
    names = [n for n, _ in color]
    assert "camera" not in names and {"astronaut", "chelsea", "coffee"} <= set(names)
    assert [n for n, img in native if img.ndim == 3] == names
    for color_mode in (False, True, None):
        train, evaluation = data.embedded_split(color_mode)
        tn, en = {n for n, _ in train}, {n for n, _ in evaluation}
        assert train and evaluation and not tn & en
        assert tn | en == {n for n, _ in data.embedded_images(color_mode)}
    assert "not comparable" in data.EMBEDDED_NOTE.lower()
    assert "\n" not in data.EMBEDDED_NOTE
    gray[0][1][:] = 0  # callers get copies
    assert data.embedded_images(False)[0][1].any()


def test_rgb_to_gray_matches_opencv(monkeypatch):
    import cv2

    rgb = dict(data.embedded_images(True))["astronaut"]
    gray = data.rgb_to_gray(rgb)
    assert np.array_equal(gray, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert np.array_equal(dict(data.embedded_images(False))["astronaut"], gray)
    monkeypatch.setitem(sys.modules, "cv2", None)  # the fallback without OpenCV: within 1 on rare ties
    assert np.abs(data.rgb_to_gray(rgb).astype(int) - gray).max() <= 1
    with pytest.raises(SandboxError, match="needs OpenCV"):
        data.read_image("x.png", gray=True)
