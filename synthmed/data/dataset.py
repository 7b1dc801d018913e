"""Read the prepared cache: one case (`load_case_arrays`) or many stacked (`load_arrays`).

A prepared case is an image float32 [C,*S] in [-1, 1] and a mask of labels [*S], with S = (D, H, W)
and C = 1 for 3D volumes, S = (H, W) and C = 1 or 3 (``preprocessing.channels``) for 2D. Choose the
ids with `Manifest.split_ids`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from tokenize import TokenError

import numpy as np

from synthmed.data.manifest import Manifest, load_manifest
from synthmed.errors import UserError


def _as_manifest(manifest: Manifest | str | os.PathLike) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def load_case_arrays(manifest: Manifest, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [C,*S], mask uint8 [*S]) of one cached case (S = (D,H,W) or (H,W)).

    Raises:
        UserError: naming the cache file when it is missing, truncated or otherwise unreadable.
    """
    path = manifest.cache_path(case_id)
    try:
        with np.load(path) as z:
            return z["image"], z["mask"]
    except (OSError, KeyError, ValueError, EOFError, SyntaxError, TokenError, zipfile.BadZipFile, zlib.error) as e:
        # a truncated or damaged .npz raises BadZipFile, EOFError, zlib.error or, in its header, TokenError
        problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise UserError(f"{path}: cannot read cached case {case_id!r} ({problem}); the prepared folder is damaged, "
                        "run `synthmed prepare` again") from None


def load_arrays(manifest: Manifest | str | os.PathLike, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All cases `ids` stacked: (images float32 [N,C,*S], masks int64 [N,*S]), 2D and 3D alike."""
    manifest = _as_manifest(manifest)
    if not ids:
        shape = manifest.preprocessing["shape"]
        channels = int(manifest.preprocessing.get("channels", 1))
        return np.zeros((0, channels, *shape), np.float32), np.zeros((0, *shape), np.int64)
    pairs = [load_case_arrays(manifest, i) for i in ids]
    images = np.stack([p[0] for p in pairs]).astype(np.float32, copy=False)
    masks = np.stack([p[1] for p in pairs]).astype(np.int64)
    return images, masks
