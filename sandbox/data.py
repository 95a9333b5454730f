"""Data: the data root, the benchmark sets, reading images, the embedded default, and a verified downloader.

A data root holds ``benchmarks/<Set>/...``, ``train/<Set>/...``, ``weights/...`` and ``SHA256SUMS``. It is found
from a ``--data-root`` flag, else ``$SANDBOX_DATA`` (:func:`data_root`), and filled or repaired with::

    python -m sandbox data fetch --dest DIR [--sets Set12,BSD68 | --sets all] [--mirror URL]
    python -m sandbox data verify [--data-root DIR] [--sets ...]
    python -m sandbox data list [--data-root DIR]

:func:`fetch` downloads every file from its source repository at a pinned commit (:mod:`sandbox.data_sources`)
with pooch, which retries dropped connections (the transfer resumes) and moves a file into place only after its
sha256 matched the checksum embedded in this package. Without a data root, :func:`embedded_images`
gives scikit-image's bundled photographs, a smoke-test default whose numbers are not comparable to published tables.

    >>> from sandbox.data import data_root, list_images, read_image
    >>> root = data_root(required=True)
    >>> [read_image(p, gray=True).shape for p in list_images("Set12", root)][:2]
    [(256, 256), (256, 256)]
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from .data_sources import DEFAULT_MIRROR, SOURCES, set_of
from .errors import OptionError, SandboxError, UnknownNameError
from .utils import stderr_silenced, write_text_atomic

__all__ = [
    "ALL_SETS",
    "BENCHMARKS",
    "TRAIN_SETS",
    "WEIGHTS",
    "BenchmarkSet",
    "EMBEDDED_NOTE",
    "IMAGE_EXTENSIONS",
    "FetchReport",
    "VerifyReport",
    "data_root",
    "embedded_images",
    "embedded_split",
    "fetch",
    "list_images",
    "read_image",
    "read_image_bgr",
    "read_unchanged",
    "resolve_sets",
    "rgb_to_gray",
    "set_files",
    "verify",
]

IMAGE_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
FETCH_HINT = "python -m sandbox data fetch --dest DIR"


# --------------------------------------------------------------------------------------------------------- data root
def data_root(explicit: str | os.PathLike | None = None, required: bool = False) -> Path | None:
    """The data root: ``explicit`` (a ``--data-root`` flag), else ``$SANDBOX_DATA``, else ``None``.

    A root that is given but is not a directory raises :class:`SandboxError` naming it; with ``required=True`` an
    unset root raises too, saying how to set or fetch one.
    """
    if explicit is not None and str(explicit) != "":
        value, origin = explicit, "--data-root"
    elif os.environ.get("SANDBOX_DATA"):
        value, origin = os.environ["SANDBOX_DATA"], "$SANDBOX_DATA"
    elif required:
        raise SandboxError(
            f"no data root: set SANDBOX_DATA=DIR or pass --data-root DIR, or download one with `{FETCH_HINT}`"
        )
    else:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise SandboxError(f"data root {str(path)!r} (from {origin}) does not exist; fetch it with `{FETCH_HINT}`")
    if not path.is_dir():
        raise SandboxError(f"data root {str(path)!r} (from {origin}) is not a directory")
    return path.resolve()


# ---------------------------------------------------------------------------------------------------- benchmark sets
@dataclass(frozen=True)
class BenchmarkSet:
    """An image set of a data root: ``folder`` is relative to the root; ``count`` is the canonical image count."""

    name: str
    folder: str
    color: bool
    count: int
    description: str
    use: str = ""  # the tasks it serves, for `python -m sandbox data list`


# fmt: off
BENCHMARKS: dict[str, BenchmarkSet] = {s.name: s for s in (
    BenchmarkSet("Set12", "benchmarks/Set12", False, 12, "12 gray images, 7 x 256x256 and 5 x 512x512 (DnCNN)",
                 "gray denoising"),
    BenchmarkSet("BSD68", "benchmarks/BSD68", False, 68, "68 gray BSDS test images, 481x321 (DnCNN)",
                 "gray denoising"),
    BenchmarkSet("CBSD68", "benchmarks/CBSD68", True, 68, "68 color BSDS test images, 481x321 (FFDNet)",
                 "color denoising"),
    BenchmarkSet("Kodak24", "benchmarks/Kodak24", True, 24, "24 color Kodak images, full 768x512",
                 "color denoising (SwinIR/Restormer/DRUNet tables)"),
    BenchmarkSet("Kodak24_crop500", "benchmarks/Kodak24_crop500", True, 24, "Kodak24, centre 500x500 crops (FFDNet)",
                 "color denoising (FFDNet paper tables)"),
    BenchmarkSet("McMaster", "benchmarks/McMaster", True, 18, "18 color 500x500 TIFF images (FFDNet)",
                 "color denoising"),
    BenchmarkSet("LIVE1", "benchmarks/LIVE1", True, 29, "29 color BMP images, mostly 768x512 (DnCNN)",
                 "JPEG artifact reduction (color; gray uses the Y channel)"),
    BenchmarkSet("Classic5", "benchmarks/Classic5", False, 5, "5 gray 512x512 BMP images (DnCNN)",
                 "gray JPEG artifact reduction"),
)}

TRAIN_SETS: dict[str, BenchmarkSet] = {s.name: s for s in (
    BenchmarkSet("BSD400", "train/BSD400", False, 400, "400 gray 180x180 BSDS crops (DnCNN Train400)",
                 "training: gray denoising"),
    BenchmarkSet("CBSD432", "train/CBSD432", True, 432, "432 color BSDS500 JPEGs, BSDS500 minus CBSD68",
                 "training: color denoising and JPEG"),
)}
# fmt: on

ALL_SETS: dict[str, BenchmarkSet] = {**BENCHMARKS, **TRAIN_SETS}
WEIGHTS = "weights"


def _unknown(kind: str, name: object, choices: Iterable[str]) -> UnknownNameError:
    """``unknown set 'set12'; did you mean 'Set12'? sets: ...`` (close matches are found case-insensitively)."""
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    close = [lower[c] for c in difflib.get_close_matches(str(name).lower(), list(lower), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}; {hint}{kind}s: {', '.join(choices)}")


def _benchmark(set_name: str) -> BenchmarkSet:
    if set_name not in ALL_SETS:
        raise _unknown("set", set_name, ALL_SETS)
    return ALL_SETS[set_name]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and p.name[0] != "."
    )


def list_images(set_name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The image files (png, bmp, tif, tiff, jpg, jpeg) of a set under ``root``, sorted by name.

    ``root`` defaults to :func:`data_root` (required). An unknown set name raises :class:`UnknownNameError` with close
    matches; a missing or empty folder raises :class:`SandboxError` naming it and the ``data fetch`` command.
    """
    bench = _benchmark(set_name)
    root = data_root(root, required=True)
    folder = root / bench.folder
    files = _image_files(folder)
    if not files:
        state = "is missing" if not folder.exists() else "has no images (" + ", ".join(IMAGE_EXTENSIONS) + ")"
        raise SandboxError(
            f"set {bench.name}: {str(folder)!r} {state}; fetch it with "
            f"`python -m sandbox data fetch --sets {bench.name} --dest {root}`"
        )
    return files


# ----------------------------------------------------------------------------------------------------------- reading
def _cv2():
    try:
        import cv2
    except ImportError:
        raise SandboxError("reading images needs OpenCV: pip install opencv-python") from None
    try:  # decoding failures become our one-line errors; OpenCV's own log lines would only add noise
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    except AttributeError:
        pass
    return cv2


def imread(path: str | os.PathLike, flags: int) -> np.ndarray:
    """``cv2.imread`` with one-line errors: cv2 returns None (and its decoders may print to stderr) instead of
    raising; what the decoders print is discarded."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise SandboxError(f"image {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise SandboxError(f"image {str(path)!r} is not readable (permissions)")
    with stderr_silenced():  # libpng prints its own error line for a corrupt file
        img = cv2.imread(str(path), flags)
    if img is None or img.size == 0:
        raise SandboxError(f"image {str(path)!r} could not be decoded (corrupt, truncated or not an image)")
    return img


def read_image(path: str | os.PathLike, gray: bool, order: str = "rgb") -> np.ndarray:
    """An image file as uint8: gray (H, W), or color (H, W, 3) in RGB order (``order="bgr"``: OpenCV's order).

    Gray reads with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``: a color file is converted while decoding with the
    BT.601 weights 0.299/0.587/0.114 in the decoder's own fixed point (within 1 of :func:`rgb_to_gray` for PNG, BMP
    and TIFF; JPEG gives libjpeg's decoded Y channel). Color reads with ``cv2.IMREAD_COLOR`` (a gray file is
    replicated to 3 channels, an alpha channel dropped, 16-bit scaled to 8-bit) and is flipped to RGB unless
    ``order="bgr"``. A file that OpenCV cannot decode raises :class:`SandboxError` naming it. (A truncated JPEG can
    decode with a gray tail and only a libjpeg warning; ``python -m sandbox data verify`` catches those.)
    """
    if order not in ("rgb", "bgr"):
        raise OptionError(f"order={order!r} is not one of 'rgb', 'bgr'")
    cv2 = _cv2()
    if gray:
        return imread(path, cv2.IMREAD_GRAYSCALE)
    img = imread(path, cv2.IMREAD_COLOR)
    return img if order == "bgr" else np.ascontiguousarray(img[..., ::-1])


def read_image_bgr(path: str | os.PathLike) -> np.ndarray:
    """A color image (H, W, 3) uint8 in OpenCV's BGR order (the order the evaluation protocol draws noise on)."""
    return read_image(path, gray=False, order="bgr")


def read_unchanged(path: str | os.PathLike) -> np.ndarray:
    """The file as stored (``cv2.IMREAD_UNCHANGED``): (H, W) for a gray file, (H, W, 3|4) **BGR(A)** for a color one,
    the file's bit depth kept. Use it to tell a gray source from a color one (e.g. gray JPEG from a color source goes
    through the BT.601 Y channel)."""
    return imread(path, _cv2().IMREAD_UNCHANGED)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 gray (H, W) with the BT.601 luma weights 0.299/0.587/0.114.

    This is ``cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)``, the conversion the evaluation protocol applies to color arrays
    (OpenCV's fixed point differs by 1 on rare ties between OpenCV versions). Without OpenCV it computes OpenCV 5's
    formula, (9798 R + 19235 G + 3735 B + 2^14) >> 15. ``cv2.imread(IMREAD_GRAYSCALE)`` of a color file converts in
    the decoder instead (within 1 of this for PNG, BMP and TIFF; JPEG gives libjpeg's decoded Y).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise OptionError(f"rgb_to_gray expects uint8 (H, W, 3), got {rgb.dtype} {tuple(rgb.shape)}")
    try:
        import cv2
    except ImportError:
        c = rgb.astype(np.uint32)
        return ((c[..., 0] * 9798 + c[..., 1] * 19235 + c[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


# -------------------------------------------------------------------------------------------------- embedded default
EMBEDDED_NOTE = (
    "embedded default: scikit-image's bundled photographs, not a benchmark; numbers on it are NOT comparable to "
    f"published tables (for those set SANDBOX_DATA or run `{FETCH_HINT}`)"
)

# (name, color source, split). Natural photographs only: no microscopy, astronomy, documents, synthetic or
# motion-blurred images. camera, coins, moon, brick, grass and gravel are gray-only sources: they are in the gray
# lists only (replicating them to 3 channels would put gray content into color results). Each image is in exactly
# one split, so training and evaluation on the embedded default never share an image.
EMBEDDED: tuple[tuple[str, bool, str], ...] = (
    ("camera", False, "eval"),
    ("astronaut", True, "eval"),
    ("chelsea", True, "eval"),
    ("coins", False, "eval"),
    ("coffee", True, "train"),
    ("rocket", True, "train"),
    ("motorcycle", True, "train"),
    ("moon", False, "train"),
    ("brick", False, "train"),
    ("grass", False, "train"),
    ("gravel", False, "train"),
)


@lru_cache(maxsize=None)
def _embedded_source(name: str) -> np.ndarray:
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise SandboxError(f"scikit-image's {name!r} is {img.dtype}, expected uint8")
    img.flags.writeable = False  # the cache hands out copies
    return img


def embedded_images(color: bool | None, split: str | None = None) -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled natural photographs as (name, uint8 image), in a fixed order.

    ``color=False``: every image gray (H, W), color sources converted with :func:`rgb_to_gray` (BT.601);
    ``color=True``: the color sources only, RGB (H, W, 3) (gray-only sources such as ``camera`` are left out, not
    replicated); ``color=None``: each image as its source is (RGB or gray). ``split`` ``"train"`` or ``"eval"`` keeps
    one side of :func:`embedded_split`; ``None`` gives both. Needs no data root and no download; numbers on these
    images are not comparable to published tables (:data:`EMBEDDED_NOTE`).
    """
    if split not in (None, "train", "eval"):
        raise OptionError(f"split={split!r} is not one of None, 'train', 'eval'")
    out = []
    for name, is_color, side in EMBEDDED:
        if (color and not is_color) or (split is not None and side != split):
            continue
        img = _embedded_source(name)
        out.append((name, rgb_to_gray(img) if color is False and img.ndim == 3 else img.copy()))
    return out


def embedded_split(
    color: bool | None = None,
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(train, eval) lists of :func:`embedded_images` (same ``color`` modes; default: each image as its source is).

    No image is in both: evaluate on the eval list only, so that training and evaluation never share an image.
    """
    return embedded_images(color, "train"), embedded_images(color, "eval")


# ------------------------------------------------------------------------------------------------- sets of the files
def resolve_sets(sets: str | Iterable[str] | None = None) -> list[str]:
    """Canonical set names from ``"Set12,BSD68"``, a list, ``"all"`` or ``None`` (all); ``weights`` is all weights."""
    items = [sets] if isinstance(sets, str) else list(sets or ["all"])
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    choices = [*ALL_SETS, WEIGHTS]
    if not names or "all" in names:
        return choices
    out = []
    for n in names:
        if n not in choices:
            raise _unknown("set", n, [*choices, "all"])
        if n not in out:
            out.append(n)
    return out


def set_files(sets: str | Iterable[str] | None = None) -> list[str]:
    """Data-root paths of every file of the chosen sets, in SHA256SUMS order."""
    chosen = set(resolve_sets(sets))
    return [rel for rel in SOURCES if set_of(rel) in chosen]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------------ verify
@dataclass
class VerifyReport:
    """Files of the chosen sets under ``root``: ``ok`` (right sha256), ``missing``, ``corrupt`` (wrong sha256)."""

    root: Path
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.corrupt


def verify(root: str | os.PathLike, sets: str | Iterable[str] | None = None) -> VerifyReport:
    """Check every expected file of ``sets`` (default: all) under ``root`` against the embedded sha256."""
    root = Path(root)
    if not root.is_dir():
        raise SandboxError(f"data root {str(root)!r} does not exist; fetch it with `{FETCH_HINT}`")
    report = VerifyReport(root)
    for rel in set_files(sets):
        path = root / rel
        if not path.is_file():
            report.missing.append(rel)
        elif _sha256(path) != SOURCES[rel].sha256:
            report.corrupt.append(rel)
        else:
            report.ok.append(rel)
    return report


# ------------------------------------------------------------------------------------------------------------- fetch
CHUNK = 1 << 14  # bytes per read: a connection cut mid-read loses at most this much of the part
TIMEOUT_S = 60.0
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}  # statuses worth another attempt; any other fails at once
USER_AGENT = "mixer-sandbox-data-fetch"


@dataclass
class FetchReport:
    """What :func:`fetch` did. ``downloaded`` files all verified; ``replaced`` and ``refetched`` are subsets of it (an
    existing file with the wrong sha256 replaced; downloaded more than once because an attempt was cut off or its
    copy failed the checksum)."""

    dest: Path
    files: list[str] = field(default_factory=list)  # every file of the chosen sets
    present: list[str] = field(default_factory=list)  # already there with the right sha256: nothing downloaded
    downloaded: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    refetched: list[str] = field(default_factory=list)
    bytes: int = 0  # bytes received, the attempts that failed included


class _Progress:
    """Two tqdm bars (files, bytes) when ``enabled`` and tqdm is installed, and the byte count of ``report``.

    The downloader calls ``update(n)`` per chunk received and ``skip(n)`` for the bytes a resumed download already
    had (they move the bar, not the count of bytes received).
    """

    def __init__(self, report: FetchReport, enabled: bool, files: int, nbytes: int | None):
        self.report, self.bars = report, []
        if enabled and files:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bars = [
                tqdm(total=files, desc="files", unit="file", position=0, leave=True),
                tqdm(total=nbytes, desc="bytes", unit="B", unit_scale=True, unit_divisor=1024, position=1, leave=True),
            ]

    def update(self, n: int) -> None:
        self.report.bytes += n
        if self.bars:
            self.bars[1].update(n)

    def skip(self, n: int) -> None:
        if self.bars and n:
            self.bars[1].update(n)

    def file_done(self) -> None:
        if self.bars:
            self.bars[0].update(1)

    def close_bars(self) -> None:
        for bar in self.bars:
            bar.close()


class _Downloader:
    """The downloader pooch calls for one file (``downloader=`` of ``Pooch.fetch``): an HTTP GET that resumes.

    The body is appended to ``part`` (``<file>.part`` beside the file), which outlives a dropped connection and a
    killed process: the next attempt, pooch's retry or the next ``fetch``, asks for the rest with a ``Range`` header
    (a server that ignores it sends the whole file, which is written from the start). When the body is complete,
    ``part`` becomes pooch's output file, and pooch checks its sha256 and moves it into place; a copy that fails the
    check is deleted by pooch, so its retry starts from nothing. A status no retry can cure (404, 403, ...) and a
    malformed URL raise :class:`SandboxError` at once, which pooch does not retry; the attempts are counted.
    """

    def __init__(self, progress: _Progress, part: Path):
        self.progress, self.part, self.attempts = progress, part, 0
        self.headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}

    def __call__(self, url: str, output_file, pooch_instance, check_only: bool = False):
        import requests

        if check_only:  # pooch asks whether the URL exists
            return requests.head(url, headers=self.headers, timeout=TIMEOUT_S, allow_redirects=True).ok
        self.attempts += 1
        try:
            self._get(url)
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status in RETRY_HTTP:
                raise  # pooch retries it
            reason = e.response.reason if e.response is not None else ""
            raise SandboxError(f"download failed: {url} answered HTTP {status} {reason}".rstrip()) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
            raise SandboxError(f"download failed: {url!r} is not a valid URL (check --mirror)") from None
        os.replace(self.part, output_file)

    def _get(self, url: str) -> None:
        import requests

        have = self.part.stat().st_size if self.part.is_file() else 0
        headers = {**self.headers, "Range": f"bytes={have}-"} if have else self.headers
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as r:
            if r.status_code == 416 and have:  # the part is as long as the file, or longer: start again
                self.part.unlink()
                return self._get(url)
            r.raise_for_status()
            resumed = have > 0 and r.status_code == 206
            self.progress.skip(have if resumed else 0)
            self.part.parent.mkdir(parents=True, exist_ok=True)
            with open(self.part, "ab" if resumed else "wb") as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    self.progress.update(len(chunk))


def _reason(e: BaseException) -> str:
    """An exception in a few words: its type, then the system's reason if it has one (``ConnectionError: Connection
    refused``), else the first line of its message."""
    text = str(e).strip()
    system = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)  # requests nests the socket error in a long message
    text = system.group(1).strip() if system else (text.splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _write_sums(dest: Path, verified: Iterable[str]) -> None:
    """Merge ``verified`` files into ``dest/SHA256SUMS`` (kept in the embedded order); atomic, skipped if unchanged."""
    sums = dest / "SHA256SUMS"
    keep = set(verified)
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2 and parts[1] in SOURCES and SOURCES[parts[1]].sha256 == parts[0].lower():
                if (dest / parts[1]).is_file():
                    keep.add(parts[1])
    text = "".join(f"{SOURCES[rel].sha256}  {rel}\n" for rel in SOURCES if rel in keep)
    if sums.is_file() and sums.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(sums, text)


def _pooch_for(dest: Path, rels: list[str], mirror: str, retries: int):
    """A ``pooch.Pooch`` over ``dest`` whose registry holds ``rels`` with their embedded sha256 and source URLs."""
    try:
        import pooch
    except ImportError:
        raise SandboxError("downloading needs pooch: pip install pooch (mixer-sandbox[restoration] has it)") from None
    return pooch.create(
        path=dest,
        base_url=mirror + "/",
        registry={rel: f"sha256:{SOURCES[rel].sha256}" for rel in rels},
        urls={rel: SOURCES[rel].url(mirror) for rel in rels},
        retry_if_failed=retries,
    )


def fetch(
    dest: str | os.PathLike,
    sets: str | Iterable[str] | None = None,
    mirror: str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> FetchReport:
    """Download the files of ``sets`` (default: all; ``"weights"``: all weight files) into ``dest``, verified.

    pooch does the bookkeeping (``pooch.create`` over ``dest`` with each file's ``sha256:`` from the embedded
    checksums): a file already present with the right sha256 is skipped; a missing one, or one with the wrong
    sha256, is downloaded and moved into place only after its sha256 matched. A dropped connection, a time-out, a
    transient HTTP status or a copy that fails its checksum is retried ``retries`` times (pooch waits 1, 2, ... s
    between attempts). The transfer (:class:`_Downloader`) resumes: an attempt cut off, here or in an earlier run,
    continues from its ``<file>.part`` with a ``Range`` request; a copy that failed its checksum starts again. Any
    other failure raises :class:`SandboxError` naming the file. ``mirror`` defaults to ``$SANDBOX_DATA_MIRROR``,
    else ``https://raw.githubusercontent.com``. ``dest/SHA256SUMS`` lists the verified files.
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise OptionError(f"retries={retries!r} is not valid; expected an integer >= 0")
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise SandboxError(f"--dest {str(dest)!r} is not a directory")
    report = FetchReport(dest, files=set_files(sets))
    mirror = (mirror or os.environ.get("SANDBOX_DATA_MIRROR") or DEFAULT_MIRROR).rstrip("/")
    todo: list[str] = []
    for rel in report.files:
        path = dest / rel
        if path.is_file():
            if _sha256(path) == SOURCES[rel].sha256:
                report.present.append(rel)
                continue
            report.replaced.append(rel)
        todo.append(rel)
    if not todo:
        _write_sums(dest, report.present)
        return report
    store = _pooch_for(dest, todo, mirror, retries)  # a one-line error if pooch is not installed
    import pooch

    sizes = [SOURCES[rel].size for rel in todo]
    bar = _Progress(report, progress, len(todo), None if None in sizes else sum(sizes))
    for folder in sorted({(dest / rel).parent for rel in todo}):
        _remove_stale_temps(folder)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch logs "Downloading file ..." per file at INFO; the bars say it already
    try:
        for rel in todo:
            _fetch_one(store, rel, report, bar)
            bar.file_done()
    finally:
        logger.setLevel(level)
        bar.close_bars()
        if dest.is_dir():
            _write_sums(dest, report.present + report.downloaded)
    return report


_POOCH_TEMP = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.NamedTemporaryFile's names (no data file is named so)
STALE_TEMP_S = 60.0  # a temporary file untouched this long is no live download's (those write every chunk)


def _remove_stale_temps(folder: Path) -> None:
    """Delete the temporary files of pooch's that killed downloads left in ``folder`` (pooch removes its own on any
    error, but a killed process cannot)."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.iterdir():
        if _POOCH_TEMP.fullmatch(p.name) and p.is_file() and now - p.stat().st_mtime > STALE_TEMP_S:
            p.unlink(missing_ok=True)


def _times(n: int, what: str) -> str:
    return f"{n} {what}" + "s" * (n != 1)


def _fetch_one(store, rel: str, report: FetchReport, bar: _Progress) -> None:
    """Download ``rel`` through ``store`` (a ``pooch.Pooch``), recording it in ``report``; one-line errors."""
    import requests

    url = store.get_url(rel)
    downloader = _Downloader(bar, report.dest / (rel + ".part"))  # resumes a part an interrupted run left
    try:
        store.fetch(rel, downloader=downloader)
    except ValueError:  # pooch's checksum mismatch, after its retries
        raise SandboxError(
            f"{rel}: the file from {url} does not match its sha256 {SOURCES[rel].sha256[:16]}... (downloaded "
            f"{_times(downloader.attempts, 'time')}); the mirror serves different bytes"
        ) from None
    except requests.RequestException as e:
        tries = _times(downloader.attempts, "attempt")
        raise SandboxError(f"download failed: {url} ({_reason(e)}; gave up after {tries})") from None
    except OSError as e:
        raise SandboxError(f"cannot write {str(report.dest / rel)!r}: {_reason(e)}") from None
    report.downloaded.append(rel)
    if downloader.attempts > 1:
        report.refetched.append(rel)
