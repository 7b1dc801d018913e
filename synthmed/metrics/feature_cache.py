"""A disk cache of real-set features, so that evaluating many synthetic sets against one real set
extracts the real features once.

An entry is keyed by the SHA-256 of every image's content as handed to the extractor (the decoded
voxels of its files, in order; any change to a file changes it) and by the extractor's identity: its
class, ``version`` and `describe()` (weights, grey levels, ...). Extractors fitted on the data
(``needs_fit``, the autoencoder) are never cached: their features depend on the fit. Entries are
``.npz`` files written atomically; an unreadable entry is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from synthmed.errors import UserError
from synthmed.metrics.extractors.base import FeatureExtractor

CACHE_ENV = "SYNTHMED_CACHE"  # root of synthmed's caches; features go to $SYNTHMED_CACHE/features


def default_cache_dir() -> Path:
    """``$SYNTHMED_CACHE/features``, else ``$XDG_CACHE_HOME/synthmed/features`` or ``~/.cache/synthmed/features``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "features"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthmed" / "features"


def extractor_identity(extractor: FeatureExtractor) -> dict:
    """What makes two extractors give the same features: class, version and described options."""
    cls = type(extractor)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "version": cls.version, "describe": extractor.describe()}


def content_hash(images: np.ndarray) -> str:
    """SHA-256 over the shape, dtype and bytes of every image, in order."""
    h = hashlib.sha256(f"{images.dtype.str}{list(images.shape)}".encode())
    for image in images:
        h.update(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest())
    return h.hexdigest()


class FeatureCache:
    """Features by (extractor identity, image content); ``folder=None`` disables it."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = None if folder is None else Path(folder)
        self.hits = 0
        self.misses = 0
        if self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"--cache-dir {self.folder}: cannot create the feature cache ({e.strerror})") from None

    def features(self, extractor: FeatureExtractor, images: np.ndarray,
                 compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The views `compute()` returns for `images`, from the cache when an entry exists."""
        if self.folder is None or extractor.needs_fit:
            return compute()
        identity = json.dumps(extractor_identity(extractor), sort_keys=True, default=str)
        key = hashlib.sha256((identity + content_hash(images)).encode()).hexdigest()
        path = self.folder / extractor.name / f"{key}.npz"
        cached = self._read(path)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        views = compute()
        self._write(path, views)
        return views

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray] | None:
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError):  # missing or damaged: recompute
            return None

    @staticmethod
    def _write(path: Path, views: dict[str, np.ndarray]) -> None:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **views)
            os.replace(tmp, path)
        except OSError:  # a cache that cannot be written costs time, not results
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
