"""Preprocess one checked case with MONAI transforms on MetaTensors, so the affine is tracked.

Order: intensity mapping to [-1, 1] (on raw values) -> reorientation to RAS -> resampling to a
target spacing (bilinear image, nearest mask) -> crop with a margin (`CROP_MODES`: ``foreground``
the mask's bounding box, ``nonzero`` the bounding box of the image's nonzero raw values, e.g. the
body or a skull-stripped brain, as nnU-Net's crop to nonzero; ``none`` no crop) ->
pad/crop (image padded with -1, the mapped background; mask with 0) or resize (trilinear image,
nearest mask; this changes the spacing, which the affine records) to a target shape.

The first steps are also used on their own (`orient_and_resample`, `crop_to_foreground`) to cut 2D
slices from volumes (see `slices`).

Intensity mapping is linear from [lo, hi] to [-1, 1] with clipping: `intensity_to_unit` and its
inverse `intensity_to_original` (used by the sampler). `lo`/`hi` are a fixed CT window, or per-case
percentiles for MRI; both are stored per case in the manifest. A multi-channel image ([C,D,H,W]) maps
each channel with its own mode and range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CropForeground, Orientation, Resize, ResizeWithPadOrCrop, Spacing

SHAPE_MODES = ("pad_crop", "resize")
CROP_MODES = ("foreground", "nonzero", "none")  # mask bounding box, image's nonzero region, no crop
INTENSITY_MODES = ("window", "percentile")


def intensity_to_unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly to [-1, 1], clipping values outside; float32."""
    if not hi > lo:
        raise ValueError(f"intensity range needs hi > lo, got lo={lo}, hi={hi}")
    y = (np.asarray(x, dtype=np.float64) - lo) / (hi - lo) * 2.0 - 1.0
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def intensity_to_original(x_m11: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of `intensity_to_unit`: [-1, 1] back to [lo, hi] (physical units, e.g. HU); float32."""
    x = np.clip(np.asarray(x_m11, dtype=np.float64), -1.0, 1.0)
    return ((x + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)


def affine_spacing(affine: np.ndarray) -> list[float]:
    """Voxel size in mm along each array axis (norms of the affine's first three columns)."""
    return [float(v) for v in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)]


def channels_to_unit(image: np.ndarray, lo: float | Sequence[float], hi: float | Sequence[float]) -> np.ndarray:
    """``[*S]`` or ``[C,*S]`` raw values -> ``[C,*S]`` in [-1, 1], channel c mapped from [lo[c], hi[c]]
    (`lo`/`hi` one number for every channel, or one per channel)."""
    channels = image[None] if image.ndim == 3 else image
    los, his = np.broadcast_to(lo, (len(channels),)), np.broadcast_to(hi, (len(channels),))
    return np.stack([intensity_to_unit(c, float(a), float(b)) for c, a, b in zip(channels, los, his)])


@dataclass
class PreprocessedCase:
    image: np.ndarray  # float32 [C,D,H,W] in [-1, 1]
    mask: np.ndarray  # uint8 [D,H,W]
    affine: np.ndarray  # 4x4 after preprocessing
    spacing: list[float]  # mm, from the affine
    lo: float | list[float]  # raw intensity mapped to -1 (one per channel for several channels)
    hi: float | list[float]  # raw intensity mapped to +1
    foreground_lost_voxels: int  # labelled voxels cut by the final crop
    notes: list[str]  # what happened that the manifest should record (e.g. empty mask, no crop)


def intensity_range(
    image: np.ndarray, mode: str, window: tuple[float, float], percentiles: tuple[float, float]
) -> tuple[float, float]:
    """(lo, hi) to map to [-1, 1]: the window, or the case's percentiles."""
    if mode == "window":
        return float(window[0]), float(window[1])
    if mode == "percentile":
        lo, hi = np.percentile(image, percentiles)
        if not hi > lo:  # a constant image: keep the map defined
            hi = lo + 1.0
        return float(lo), float(hi)
    raise ValueError(f"unknown intensity mode {mode!r}; valid: {INTENSITY_MODES}")


def channel_ranges(
    image: np.ndarray, modes: str | Sequence[str], window: tuple[float, float], percentiles: tuple[float, float]
) -> tuple[float | list[float], float | list[float]]:
    """`intensity_range` of a [D,H,W] image (floats), or of each channel of a [C,D,H,W] one with its
    own mode (lists)."""
    if image.ndim == 3:
        return intensity_range(image, modes if isinstance(modes, str) else modes[0], window, percentiles)
    per_channel = [modes] * len(image) if isinstance(modes, str) else list(modes)
    ranges = [intensity_range(c, m, window, percentiles) for c, m in zip(image, per_channel)]
    return [r[0] for r in ranges], [r[1] for r in ranges]


def orient_and_resample(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    lo: float | Sequence[float],
    hi: float | Sequence[float],
    spacing: tuple[float, float, float] | None,
) -> tuple[MetaTensor, MetaTensor]:
    """Intensity [lo, hi] -> [-1, 1] (per channel, see `channels_to_unit`), reorientation to RAS,
    resampling to `spacing` (None: kept).

    Returns:
        (image [C,D,H,W], mask [1,D,H,W] float labels) as MetaTensors carrying the new affine.
    """
    aff = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    img = MetaTensor(torch.from_numpy(channels_to_unit(image, lo, hi)), affine=aff.clone())
    msk = MetaTensor(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None], affine=aff.clone())
    # NIfTI world axes are RAS+; naming the labels keeps MONAI from guessing (and warning)
    orient = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    img, msk = orient(img), orient(msk)
    if spacing is not None:
        img = Spacing(pixdim=spacing, mode="bilinear", padding_mode="border")(img)
        msk = Spacing(pixdim=spacing, mode="nearest", padding_mode="zeros")(msk)
        assert img.shape[1:] == msk.shape[1:], (img.shape, msk.shape)
    return img, msk


def crop_to_foreground(
    img: MetaTensor, msk: MetaTensor, margin: int, keep_axis: int | None = None, region: MetaTensor | None = None
) -> tuple[MetaTensor, MetaTensor]:
    """Crop image and mask [1,D,H,W] to the bounding box of `region` > 0 (default: the mask) plus `margin`.

    `keep_axis` (0..2) is left whole: slices of a volume are cropped in-plane only. The region must
    hold some nonzero voxel.
    """
    cropper = CropForeground(select_fn=lambda x: x > 0, margin=margin, allow_smaller=True)
    start, end = cropper.compute_bounding_box(msk if region is None else region)
    start, end = np.array(start, dtype=int), np.array(end, dtype=int)
    if keep_axis is not None:
        start[keep_axis], end[keep_axis] = 0, int(msk.shape[1 + keep_axis])
    return cropper.crop_pad(img, start, end), cropper.crop_pad(msk, start, end)


def orient_and_resample_labels(
    labels: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float] | None
) -> MetaTensor:
    """A label array [D,H,W] reoriented and resampled (nearest) as `orient_and_resample` does the mask."""
    _, out = orient_and_resample(
        np.zeros(labels.shape, np.float32), labels, affine, lo=0.0, hi=1.0, spacing=spacing
    )
    return out


def crop_case(
    img: MetaTensor,
    msk: MetaTensor,
    crop: str,
    margin: int,
    nonzero: MetaTensor | None = None,
    keep_axis: int | None = None,
) -> tuple[MetaTensor, MetaTensor, list[str]]:
    """Crop by `crop` (one of `CROP_MODES`; `nonzero`: the image's nonzero raw voxels, oriented like
    `msk`, needed for ``crop="nonzero"``); returns (image, mask, notes for the manifest)."""
    if crop not in CROP_MODES:
        raise ValueError(f"unknown crop {crop!r}; valid: {CROP_MODES}")
    if crop == "none":
        return img, msk, []
    region = msk if crop == "foreground" else nonzero
    assert region is not None
    if not (region > 0).any():
        what = "empty mask" if crop == "foreground" else "image all zero"
        return img, msk, [f"{what}: {crop} crop skipped"]
    img, msk = crop_to_foreground(img, msk, margin, keep_axis=keep_axis, region=region)
    return img, msk, []


def preprocess_case(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    spacing: tuple[float, float, float] | None,
    shape: tuple[int, int, int],
    shape_mode: str = "pad_crop",
    intensity_mode: str | Sequence[str] = "window",
    window: tuple[float, float] = (-1024.0, 600.0),
    percentiles: tuple[float, float] = (0.5, 99.5),
    margin: int = 4,
    crop: str = "foreground",
) -> PreprocessedCase:
    """Preprocess one case.

    Args:
        image: float32 [D,H,W] or [C,D,H,W] raw intensities.
        mask: integer [D,H,W] labels.
        affine: 4x4 voxel-to-world (RAS+ mm, NIfTI convention) of both.
        spacing: target voxel size in mm, or None to keep the spacing.
        shape: target [D,H,W].
        shape_mode: "pad_crop" (centred pad/crop) or "resize" (changes the spacing).
        intensity_mode: "window" (fixed `window`) or "percentile" (per-case `percentiles`); for a
            [C,D,H,W] image, one mode per channel (lo/hi are then lists).
        window: (lo, hi) raw values mapped to -1 and 1 in window mode.
        percentiles: (lower, upper) percentiles mapped to -1 and 1 in percentile mode.
        margin: voxels kept around the crop's bounding box.
        crop: "foreground" (the mask's bounding box), "nonzero" (the image's nonzero voxels) or "none".
    """
    if shape_mode not in SHAPE_MODES:
        raise ValueError(f"unknown shape mode {shape_mode!r}; valid: {SHAPE_MODES}")
    lo, hi = channel_ranges(image, intensity_mode, window, percentiles)
    img, msk = orient_and_resample(image, mask, affine, lo=lo, hi=hi, spacing=spacing)
    nonzero_voxels = image != 0 if image.ndim == 3 else np.any(image != 0, axis=0)  # any channel
    nonzero = orient_and_resample_labels(nonzero_voxels.astype(np.uint8), affine, spacing) if crop == "nonzero" else None
    img, msk, notes = crop_case(img, msk, crop, margin, nonzero)
    fg_before = int((msk > 0).sum())

    if shape_mode == "pad_crop":
        img = ResizeWithPadOrCrop(spatial_size=shape, mode="constant", value=-1.0)(img)
        msk = ResizeWithPadOrCrop(spatial_size=shape, mode="constant", value=0)(msk)
    else:
        img = Resize(spatial_size=shape, mode="trilinear", align_corners=False)(img)
        msk = Resize(spatial_size=shape, mode="nearest")(msk)
    # only a crop cuts foreground; resize rescales it (a voxel count at another spacing means nothing)
    lost = fg_before - int((msk > 0).sum()) if shape_mode == "pad_crop" else 0
    out_affine = np.asarray(img.affine, dtype=np.float64)
    image_out = np.clip(img.detach().cpu().numpy().astype(np.float32), -1.0, 1.0)
    mask_out = np.rint(msk[0].detach().cpu().numpy()).astype(np.uint8)
    return PreprocessedCase(
        image=image_out,
        mask=mask_out,
        affine=out_affine,
        spacing=affine_spacing(out_affine),
        lo=lo,
        hi=hi,
        foreground_lost_voxels=lost,
        notes=notes,
    )
