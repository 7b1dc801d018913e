"""Read the prepared cache: a torch `Dataset` of cases and a loader of whole arrays.

A prepared case is ``{"image": float32 [1,D,H,W] in [-1, 1], "mask": int64 [D,H,W],
"meta": {"id": ..., "source": ...}}``. Choose the ids with `Manifest.split_ids`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synthmed.data.manifest import Manifest, load_manifest
from synthmed.errors import UserError


def _as_manifest(manifest: Manifest | str | os.PathLike) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def load_case_arrays(manifest: Manifest, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [1,D,H,W], mask uint8 [D,H,W]) of one cached case.

    Raises:
        UserError: naming the cache file when it is missing or unreadable.
    """
    path = manifest.cache_path(case_id)
    try:
        with np.load(path) as z:
            return z["image"], z["mask"]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: cannot read cached case {case_id!r} ({e}); run `synthmed prepare` again") from e


class PreparedDataset(Dataset):
    """The cached cases `ids` of a prepared folder, one dict per case (see the module docstring)."""

    def __init__(self, manifest: Manifest | str | os.PathLike, ids: list[str]):
        self.manifest = _as_manifest(manifest)
        self.ids = list(ids)
        self.entries = [self.manifest.case(i) for i in self.ids]  # fails early on unknown ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        image, mask = load_case_arrays(self.manifest, entry["id"])
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),  # [1,D,H,W]
            "mask": torch.from_numpy(mask.astype(np.int64)),  # [D,H,W]
            "meta": {"id": entry["id"], "source": entry["source"]},
        }


def load_arrays(manifest: Manifest | str | os.PathLike, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All cases `ids` stacked: (images float32 [N,1,D,H,W], masks int64 [N,D,H,W])."""
    manifest = _as_manifest(manifest)
    if not ids:
        shape = manifest.preprocessing["shape"]
        return np.zeros((0, 1, *shape), np.float32), np.zeros((0, *shape), np.int64)
    pairs = [load_case_arrays(manifest, i) for i in ids]
    images = np.stack([p[0] for p in pairs]).astype(np.float32, copy=False)
    masks = np.stack([p[1] for p in pairs]).astype(np.int64)
    return images, masks
