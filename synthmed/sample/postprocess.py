"""Post-processing of generated pairs: network units back to physical units, mask clean-up."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from synthmed.errors import UserError

INTENSITY_MODES = ("window", "percentile")


def channel_intensities(intensity: dict[str, Any]) -> list[dict[str, Any]]:
    """The intensity entry of each image channel: ``intensity["channels"]`` for a multi-channel
    manifest (mode ``per_channel``), else ``[intensity]``."""
    if intensity.get("mode") == "per_channel":
        channels = intensity.get("channels")
        if not isinstance(channels, list) or not channels:
            raise UserError("preprocessing.intensity (per_channel mode): missing the 'channels' list")
        return channels
    return [intensity]


def intensity_range(intensity: dict[str, Any], channel: int = 0) -> tuple[float, float]:
    """The physical range ``(lo, hi)`` that the network range [-1, 1] stands for (in `channel`).

    Args:
        intensity: the ``preprocessing.intensity`` entry of a prepared manifest, either
            ``{"mode": "window", "lo": ..., "hi": ...}`` (fixed window, e.g. HU for CT) or
            ``{"mode": "percentile", "lower_pct", "upper_pct", "reference_lo", "reference_hi"}``.
            In percentile mode every real case was mapped with its own percentiles, so there is no
            single true range; ``reference_lo`` / ``reference_hi`` (the median per-case range of
            the real data) are used, which puts synthetic images on the scale of a typical case.
            Multi-channel manifests hold ``{"mode": "per_channel", "channels": [entry, ...]}``.
        channel: the image channel whose range is wanted.

    Raises:
        UserError: unknown mode, missing keys, or ``hi <= lo``.
    """
    channels = channel_intensities(intensity)
    if not 0 <= channel < len(channels):
        raise UserError(f"preprocessing.intensity: no channel {channel} (the images have {len(channels)})")
    intensity = channels[channel]
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


def check_image_channels(images: np.ndarray, intensity: dict[str, Any], where: str, channel_axis: int = 1) -> None:
    """Raises: UserError naming `where` when multi-channel images lack the manifest's channel count."""
    n = len(channel_intensities(intensity))
    found = images.shape[channel_axis] if images.ndim > channel_axis else 0
    if n > 1 and found != n:
        raise UserError(f"{where}: images have {found} channel(s); the manifest's images have {n}")


def _map(x: np.ndarray, lo: float, hi: float, to_original: bool) -> np.ndarray:
    if to_original:
        return ((np.clip(x, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)
    return np.clip((x - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def _per_channel(images: np.ndarray, intensity: dict[str, Any], channel_axis: int, to_original: bool) -> np.ndarray:
    """Map each channel along `channel_axis` with its own range (`to_original`: [-1, 1] -> [lo, hi])."""
    x = np.asarray(images, dtype=np.float64)
    n = len(channel_intensities(intensity))
    if n == 1:
        return _map(x, *intensity_range(intensity), to_original)
    if x.ndim <= channel_axis or x.shape[channel_axis] != n:
        raise UserError(f"images of shape {list(x.shape)} lack the manifest's {n} channels on axis {channel_axis}")
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(n):
        index = (slice(None),) * channel_axis + (c,)
        out[index] = _map(x[index], *intensity_range(intensity, c), to_original)
    return out


def images_to_original_units(images_m11: np.ndarray, intensity: dict[str, Any], channel_axis: int = 1) -> np.ndarray:
    """Map network images from [-1, 1] back to physical units, linearly onto ``[lo, hi]``.

    Values are clipped to [-1, 1] first, so the result stays inside ``[lo, hi]``.
    ``-1 -> lo`` and ``1 -> hi``; see :func:`intensity_range` for where ``lo``/``hi`` come from
    (window mode: the window; percentile mode: the median per-case range of the real data).

    Args:
        images_m11: images of any shape (e.g. ``[N, C, D, H, W]``), nominally in [-1, 1].
        intensity: the ``preprocessing.intensity`` dict of the manifest.
        channel_axis: the axis of the image channels (1 for ``[N, C, ...]``, 0 for one ``[C, ...]``
            image); used when the manifest maps each channel with its own range.

    Returns:
        float32 array of the same shape, in original units.
    """
    return _per_channel(images_m11, intensity, channel_axis, to_original=True)


def images_to_network_units(images: np.ndarray, intensity: dict[str, Any], channel_axis: int = 1) -> np.ndarray:
    """Inverse of :func:`images_to_original_units`: ``[lo, hi] -> [-1, 1]`` (clipped), float32."""
    return _per_channel(images, intensity, channel_axis, to_original=False)


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
