"""Pretrained weights: a cache folder, a download, and a sha256 check before anything is loaded.

The cache is ``$SYNTHMED_WEIGHTS`` when set, else the platform cache (``$XDG_CACHE_HOME/synthmed/weights``,
``~/.cache/synthmed/weights``, or ``%LOCALAPPDATA%/synthmed/weights`` on Windows).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from synthmed.fileio import sha256_file
from synthmed.metrics.extractors.base import WeightsUnavailable

WEIGHTS_ENV = "SYNTHMED_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class WeightsSpec:
    file_name: str
    url: str
    # Full sha256, or the 8-hex prefix that the publisher put in the file name (torch.hub's
    # check_hash convention). Empty when the publisher gives no hash at all: the hash of the first
    # download is then recorded next to the file (<name>.sha256) and every later load is checked
    # against it, so a cached file that changes is refused.
    sha256: str


def weights_dir() -> Path:
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "synthmed" / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synthmed" / "weights"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def expected_sha256(spec: WeightsSpec, path: Path) -> str:
    """The pinned hash, or the one recorded at first download (empty when neither exists)."""
    if spec.sha256:
        return spec.sha256.lower()
    sidecar = _sidecar(path)
    return sidecar.read_text().strip().lower() if sidecar.is_file() else ""


def _hash_matches(path: Path, expected: str) -> bool:
    return sha256_file(path).startswith(expected)


def fetch_weights(spec: WeightsSpec, download: bool = True) -> Path:
    """Path of the verified weights file, downloading it into `weights_dir()` when missing.

    Raises:
        WeightsUnavailable: missing and not downloadable (offline, or `download` False), or the
            file's sha256 does not match (a bad cached file is never loaded).
    """
    path = weights_dir() / spec.file_name
    if path.is_file():
        expected = expected_sha256(spec, path)
        if not expected:
            raise WeightsUnavailable(f"{path}: no sha256 to check it against ({_sidecar(path).name} missing); "
                                     "delete the file to download it again")
        if not _hash_matches(path, expected):
            raise WeightsUnavailable(f"{path}: sha256 does not match {expected}; delete the file to download it again")
        return path
    if not download:
        raise WeightsUnavailable(f"weights {spec.file_name} not in {path.parent} (set {WEIGHTS_ENV} or allow the download)")
    try:
        _download(spec, path)
    except OSError as e:
        raise WeightsUnavailable(f"weights {spec.file_name} missing from {path.parent} and download failed ({e}); "
                                 f"fetch {spec.url} there by hand") from None
    return path


def _download(spec: WeightsSpec, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if not digest.hexdigest().startswith(spec.sha256.lower()):
            raise OSError(f"downloaded file has sha256 {digest.hexdigest()}, expected {spec.sha256}")
        if not spec.sha256:
            _sidecar(path).write_text(digest.hexdigest() + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
