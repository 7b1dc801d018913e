"""Bring one 2D image/mask pair to the target shape.

Shape modes (``--shape-mode``):
- ``resize``: scale each axis to the target (the aspect ratio may change); images bilinear with
  antialiasing (so downscaling averages instead of aliasing), masks nearest neighbour
  (``nearest-exact``: the source pixel whose centre is nearest);
- ``pad_resize``: pad the shorter side (centred; image with -1, mask with 0) to a square, then resize:
  the aspect ratio is kept;
- ``pad_crop``: centred pad or crop without scaling (pixels keep their size).

Images are mapped to [-1, 1] before, so padding uses -1 (the mapped lower end of the range).
`FittedImage.spacing` is the size of an output pixel in input pixels (or in mm for slices of volumes,
when the input spacing is given in mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SHAPE_MODES_2D = ("resize", "pad_resize", "pad_crop")


@dataclass
class FittedImage:
    image: np.ndarray  # float32 [C,H,W] in [-1, 1]
    mask: np.ndarray  # uint8 [H,W]
    spacing: list[float]  # [sy, sx]: output pixel size, in the unit of the input spacing
    foreground_lost: int  # labelled pixels cut away by pad_crop (0 for the resizing modes)


def pad_or_crop_2d(array: np.ndarray, shape: tuple[int, int], value: float) -> np.ndarray:
    """Centred pad (with `value`) or crop of the last two axes of `array` to `shape`."""
    out = array
    for axis, target in zip((-2, -1), shape):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
        elif n < target:
            before = (target - n) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, target - n - before)
            out = np.pad(out, widths, mode="constant", constant_values=value)
    return out


def pad_to_square(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred padding of the shorter side: image [C,H,W] with -1, mask [H,W] with 0."""
    side = max(mask.shape)
    return pad_or_crop_2d(image, (side, side), -1.0), pad_or_crop_2d(mask, (side, side), 0)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing: the input pixel whose centre
    is nearest to the output pixel's centre (torch's "nearest-exact")."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_pair(image: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image [C,H,W] bilinear (antialiased), mask [H,W] nearest-exact, to `shape`."""
    if tuple(mask.shape) == tuple(shape):
        return image.astype(np.float32, copy=False), mask
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    # antialias only helps when shrinking; bilinear upsampling is the same either way
    antialias = shape[0] < mask.shape[0] or shape[1] < mask.shape[1]
    img = F.interpolate(img, size=shape, mode="bilinear", align_corners=False, antialias=antialias)[0]
    rows, cols = nearest_indices(mask.shape[0], shape[0]), nearest_indices(mask.shape[1], shape[1])
    return img.clamp(-1.0, 1.0).numpy(), mask[rows][:, cols]


def fit_to_shape(
    image: np.ndarray,
    mask: np.ndarray,
    shape: tuple[int, int],
    mode: str,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> FittedImage:
    """Bring image [C,H,W] (in [-1, 1]) and mask [H,W] to `shape` by `mode` (see the module docstring).

    Args:
        image: float32 [C,H,W] in [-1, 1].
        mask: integer [H,W] labels.
        shape: target (H, W).
        mode: "resize", "pad_resize" or "pad_crop".
        spacing: input pixel size (sy, sx); the output spacing is derived from it.
    """
    if mode not in SHAPE_MODES_2D:
        raise ValueError(f"unknown 2D shape mode {mode!r}; valid: {SHAPE_MODES_2D}")
    mask = np.asarray(mask).astype(np.uint8)
    lost = 0
    if mode == "pad_crop":
        fg_before = int((mask > 0).sum())
        image = pad_or_crop_2d(image, shape, -1.0)
        mask = pad_or_crop_2d(mask, shape, 0)
        lost = fg_before - int((mask > 0).sum())
        out_spacing = [float(spacing[0]), float(spacing[1])]
    else:
        if mode == "pad_resize":
            image, mask = pad_to_square(image, mask)
        in_shape = mask.shape
        image, mask = resize_pair(image, mask, shape)
        out_spacing = [float(spacing[i]) * in_shape[i] / shape[i] for i in range(2)]
    return FittedImage(np.asarray(image, dtype=np.float32), np.asarray(mask, dtype=np.uint8), out_spacing, lost)
