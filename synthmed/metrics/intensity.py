"""Intensity distributions in original units (HU for CT): 1-D Wasserstein distance of voxel values."""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from synthmed.errors import UserError

MAX_VOXELS = 200_000  # random voxels per set; enough for a 1-D distance and fast


def sample_voxels(images: np.ndarray, masks: np.ndarray | None = None, label: int | None = None,
                  max_voxels: int = MAX_VOXELS, seed: int = 0) -> np.ndarray:
    """Up to `max_voxels` random voxel values of channel 0 (inside `label` when given)."""
    values = np.asarray(images)[:, 0]
    if label is not None:
        values = values[np.asarray(masks) == label]
    values = values.ravel()
    if len(values) > max_voxels:
        values = np.random.default_rng(seed).choice(values, max_voxels, replace=False)
    return values.astype(np.float64)


def intensity_wasserstein(real: np.ndarray, synthetic: np.ndarray, real_masks: np.ndarray, synthetic_masks: np.ndarray,
                          labels: list[int], seed: int = 0) -> dict[str, dict[str, float | int | None]]:
    """Wasserstein distance of voxel values, whole images and per foreground label, in the images' units.

    Returns:
        ``{"all": {"value", "n_real_voxels", "n_synthetic_voxels"}, "label_1": {...}, ...}``;
        value None when a label is absent from one set.

    Raises:
        UserError: an image set is empty.
    """
    if len(real) == 0 or len(synthetic) == 0:
        raise UserError("intensity histogram: a set of images is empty")
    out = {}
    for key, label in [("all", None)] + [(f"label_{v}", v) for v in labels if v != 0]:
        r = sample_voxels(real, real_masks, label, seed=seed)
        s = sample_voxels(synthetic, synthetic_masks, label, seed=seed)
        value = float(wasserstein_distance(r, s)) if len(r) and len(s) else None
        out[key] = {"value": value, "n_real_voxels": int(len(r)), "n_synthetic_voxels": int(len(s))}
    return out
