"""Post-processing of generated pairs: network units back to physical units, mask clean-up."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from synthmed.errors import UserError

INTENSITY_MODES = ("window", "percentile")


def intensity_range(intensity: dict[str, Any]) -> tuple[float, float]:
    """The physical range ``(lo, hi)`` that the network range [-1, 1] stands for.

    Args:
        intensity: the ``preprocessing.intensity`` entry of a prepared manifest, either
            ``{"mode": "window", "lo": ..., "hi": ...}`` (fixed window, e.g. HU for CT) or
            ``{"mode": "percentile", "lower_pct", "upper_pct", "reference_lo", "reference_hi"}``.
            In percentile mode every real case was mapped with its own percentiles, so there is no
            single true range; ``reference_lo`` / ``reference_hi`` (the median per-case range of
            the real data) are used, which puts synthetic images on the scale of a typical case.

    Raises:
        UserError: unknown mode, missing keys, or ``hi <= lo``.
    """
    mode = intensity.get("mode")
    if mode == "window":
        keys = ("lo", "hi")
    elif mode == "percentile":
        keys = ("reference_lo", "reference_hi")
    else:
        raise UserError(
            f"preprocessing.intensity.mode: unknown mode {mode!r}; expected one of {list(INTENSITY_MODES)}"
        )
    missing = [k for k in keys if intensity.get(k) is None]
    if missing:
        raise UserError(f"preprocessing.intensity ({mode} mode): missing {', '.join(missing)}")
    lo, hi = float(intensity[keys[0]]), float(intensity[keys[1]])
    if not hi > lo:
        raise UserError(f"preprocessing.intensity: {keys[1]} ({hi}) must be greater than {keys[0]} ({lo})")
    return lo, hi


def images_to_original_units(images_m11: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Map network images from [-1, 1] back to physical units, linearly onto ``[lo, hi]``.

    Values are clipped to [-1, 1] first, so the result stays inside ``[lo, hi]``.
    ``-1 -> lo`` and ``1 -> hi``; see :func:`intensity_range` for where ``lo``/``hi`` come from
    (window mode: the window; percentile mode: the median per-case range of the real data).

    Args:
        images_m11: images of any shape (e.g. ``[N, C, D, H, W]``), nominally in [-1, 1].
        intensity: the ``preprocessing.intensity`` dict of the manifest.

    Returns:
        float32 array of the same shape, in original units.
    """
    lo, hi = intensity_range(intensity)
    x = np.clip(np.asarray(images_m11, dtype=np.float64), -1.0, 1.0)
    return ((x + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def images_to_network_units(images: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`images_to_original_units`: ``[lo, hi] -> [-1, 1]`` (clipped), float32."""
    lo, hi = intensity_range(intensity)
    x = np.asarray(images, dtype=np.float64)
    return np.clip((x - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def clean_mask(mask: np.ndarray, min_size: int | None = None, keep_largest: bool = False) -> np.ndarray:
    """Remove small or stray connected components from a label mask, one foreground label at a time.

    Components are 26-connected (full 3D neighbourhood; 8-connected in 2D). Removed voxels become
    background (0); every other voxel keeps its label. With both options, small components are
    dropped first, then only the largest remaining one of each label is kept.

    Args:
        mask: integer label mask ``[D, H, W]`` (or ``[H, W]``).
        min_size: drop components with fewer than this many voxels (None: keep all sizes).
        keep_largest: keep only the largest component of each foreground label.

    Returns:
        A new mask with the same shape and dtype.

    Raises:
        UserError: ``mask`` is not an integer array, or ``min_size`` is negative.
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise UserError(f"clean_mask: mask must hold integer labels, got dtype {mask.dtype}")
    if min_size is not None and min_size < 0:
        raise UserError(f"clean_mask: min_size must be >= 0, got {min_size}")
    out = mask.copy()
    if not min_size and not keep_largest:
        return out
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    for label in np.unique(mask):
        if label == 0:
            continue
        components, n = ndimage.label(mask == label, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sizes[0] = 0
        keep = sizes > 0
        if min_size:
            keep &= sizes >= min_size
        if keep_largest and keep.any():
            largest = int(np.argmax(np.where(keep, sizes, -1)))
            keep[:] = False
            keep[largest] = True
        keep[0] = False
        drop = (components > 0) & ~keep[components]
        out[drop] = 0
    return out
