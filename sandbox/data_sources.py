"""Where every file of a data root comes from: repository, commit and path, with its sha256 and size.

A data root (``$SANDBOX_DATA``) holds ``benchmarks/<Set>/...``, ``train/<Set>/...`` and ``weights/...``. Each file
is a byte-for-byte copy of a git blob in a public repository at a pinned commit, so it can be fetched from
``{mirror}/{repo}/{commit}/{path}`` (default mirror ``https://raw.githubusercontent.com``) and checked against the
checksum embedded in this package (``data_sha256.txt``, the data folder's ``SHA256SUMS``; ``data_sizes.txt`` has the
byte counts). :data:`RULES` maps a folder of the data root to a folder of a source repository; it is derived from
the data folder's ``MANIFEST.md``, and its ``basis`` column says which part the manifest states and which part is
inferred (file names assumed unchanged, the ``specifics`` folder renamed ``specifics_gray``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "DEFAULT_MIRROR",
    "REPOS",
    "RULES",
    "SOURCES",
    "SourceRule",
    "Source",
    "set_of",
    "mirror_url",
]

DEFAULT_MIRROR = "https://raw.githubusercontent.com"

#: The snapshot of each source repository (MANIFEST.md, "Source commits").
REPOS: dict[str, str] = {
    "cszn/DnCNN": "e93b27812d3ff523a3a79d19e5e50d233d7a8d0a",
    "cszn/FFDNet": "e787f46df2f374ff3591186706229cb9a0591fea",
    "cszn/KAIR": "fc1732f4a4514e42ce15e5b3a1e18c828af47a1e",
    "Magauiya/Extended_SURE": "1bcec3b61d7c3687f0fc906d684cc7d29e59aab4",
    "Zelex/images": "0b8a89db599a384124fb991b85d40cfd63c73d58",
    "zhengdihan/Unsupervised_denoising": "dadd26a2981901153f465549a31d1c458c703464",
    "richzhang/PerceptualSimilarity": "082bb24f84c091ea94de2867d34c4544f68e0963",
}


@dataclass(frozen=True)
class SourceRule:
    """Files under ``local`` (a folder of the data root) are ``remote`` + the same file name in ``repo``."""

    local: str
    repo: str
    remote: str
    basis: str  # what MANIFEST.md states and what is inferred


# fmt: off
RULES: tuple[SourceRule, ...] = (
    SourceRule("benchmarks/Set12/", "cszn/DnCNN", "testsets/Set12/", "stated (01.png..12.png)"),
    SourceRule("benchmarks/BSD68/", "cszn/DnCNN", "testsets/BSD68/", "stated (test001..test068.png)"),
    SourceRule("benchmarks/CBSD68/", "cszn/FFDNet", "testsets/CBSD68/", "folder stated; file names as BSDS ids"),
    SourceRule("benchmarks/Kodak24/", "Zelex/images", "kodak/", "stated (kodim01..24.png)"),
    SourceRule("benchmarks/Kodak24_crop500/", "cszn/FFDNet", "testsets/Kodak24/",
               "folder stated; file names inferred (kodimNN.png)"),
    SourceRule("benchmarks/McMaster/", "cszn/FFDNet", "testsets/McMaster/", "stated (1.tif..18.tif)"),
    SourceRule("benchmarks/LIVE1/", "cszn/DnCNN", "testsets/LIVE1/", "folder stated; file names inferred"),
    SourceRule("benchmarks/Classic5/", "cszn/DnCNN", "testsets/classic5/",
               "folder stated (lower case); names stated, .bmp extension inferred"),
    SourceRule("train/BSD400/", "cszn/DnCNN", "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400/",
               "stated (test_001..test_400.png)"),
    SourceRule("train/CBSD432/", "Magauiya/Extended_SURE", "Dataset/CBSD432/", "folder stated; file names inferred"),
    SourceRule("weights/pytorch/kair_model_zoo/", "cszn/KAIR", "model_zoo/", "stated"),
    SourceRule("weights/pytorch/kair_release_mirror/", "zhengdihan/Unsupervised_denoising", "model_zoo/",
               "folder stated; file names inferred"),
    SourceRule("weights/pytorch/dncnn_repo_sigma25/", "cszn/DnCNN", "TrainingCodes/dncnn_pytorch/models/DnCNN_sigma25/",
               "stated"),
    SourceRule("weights/dncnn_matconvnet/specifics_gray/", "cszn/DnCNN", "model/specifics/",
               "inferred from the manifest's note on cszn/DnCNN model/specifics/sigma=*.mat"),
    SourceRule("weights/dncnn_matconvnet/", "cszn/DnCNN", "model/", "inferred from the manifest's note on model/"),
    SourceRule("weights/ffdnet_matconvnet/", "cszn/FFDNet", "models/", "folder stated; file names inferred"),
    SourceRule("weights/lpips_linear_v0.1/", "richzhang/PerceptualSimilarity", "lpips/weights/v0.1/",
               "folder stated; file names inferred"),
)
# fmt: on


@dataclass(frozen=True)
class Source:
    """One file of a data root: where it comes from and what it must hash to."""

    repo: str
    commit: str
    path: str  # path in the repository
    sha256: str
    size: int | None  # bytes; None when unknown

    def url(self, mirror: str | None = None) -> str:
        """``{mirror}/{repo}/{commit}/{path}``; ``mirror`` defaults to ``$SANDBOX_DATA_MIRROR`` or GitHub's raw host."""
        base = (mirror or os.environ.get("SANDBOX_DATA_MIRROR") or DEFAULT_MIRROR).rstrip("/")
        return f"{base}/{self.repo}/{self.commit}/{quote(self.path, safe='/=')}"


def mirror_url(rel: str, mirror: str | None = None) -> str:
    """The download URL of the data-root file ``rel`` (e.g. ``benchmarks/Set12/01.png``)."""
    return SOURCES[rel].url(mirror)


def set_of(rel: str) -> str:
    """The set a data-root path belongs to: ``benchmarks/Set12/01.png`` -> ``Set12``; ``weights/...`` -> ``weights``."""
    parts = rel.split("/")
    if parts[0] == "weights":
        return "weights"
    if parts[0] in ("benchmarks", "train") and len(parts) >= 3:
        return parts[1]
    raise ValueError(f"{rel!r} is not under benchmarks/<Set>/, train/<Set>/ or weights/")


def _rule(rel: str) -> SourceRule:
    matches = [r for r in RULES if rel.startswith(r.local)]
    if not matches:
        raise ValueError(f"no source rule for {rel!r}")
    return max(matches, key=lambda r: len(r.local))  # the most specific folder wins


def _read_table(name: str) -> list[tuple[str, str]]:
    """(first column, path) pairs of a ``value  path`` text file shipped beside this module."""
    rows = []
    for line in (Path(__file__).with_name(name)).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            value, path = line.split(maxsplit=1)
            rows.append((value, path.strip().lstrip("*")))  # "*" marks binary mode in sha256sum output
    return rows


def _build_sources() -> dict[str, Source]:
    sizes = {path: int(n) for n, path in _read_table("data_sizes.txt")}
    out = {}
    for sha, rel in _read_table("data_sha256.txt"):
        rule = _rule(rel)
        remote = rule.remote + rel[len(rule.local) :]
        out[rel] = Source(rule.repo, REPOS[rule.repo], remote, sha.lower(), sizes.get(rel))
    return out


#: Every file of a complete data root (the data folder's SHA256SUMS), in that file's order.
SOURCES: dict[str, Source] = _build_sources()
