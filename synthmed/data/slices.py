"""2D cases from 3D volumes: one case per slice, or one slice mosaic per volume.

A volume first goes through the 3D preprocessing (`preprocess.orient_and_resample`: intensity
window/percentiles to [-1, 1], RAS orientation, optional resampling to a spacing), then is cropped
in-plane to its mask's bounding box (or the image's nonzero region, or not at all: ``crop``) plus a
margin (the whole slicing axis is kept; no crop when that region is empty). Slicing axes are named in RAS: ``sagittal`` (axis 0, x), ``coronal`` (axis 1, y),
``axial`` (axis 2, z).

Slice orientation (neurological, as most viewers show it): of the two in-plane RAS axes (p, q) in
order, columns run along +p and rows along -q, so anterior (axial) or superior (coronal, sagittal)
is at the top. The slice spacing is [spacing_q, spacing_p] in mm.

Mosaic (the layout of the thesis, section 3.4.2, for 2D GANs): the central ``rows x cols`` slices of
a volume (all slices when it has fewer; the remaining tiles are blank: image -1, mask 0), each padded
or cropped (or resized) to one tile, tiled row by row from the top left in increasing slice order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.data.preprocess import affine_spacing, crop_case, orient_and_resample, orient_and_resample_labels
from synthmed.data.preprocess2d import FittedImage, fit_to_shape

SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # RAS array axis of each slicing direction


@dataclass
class PreparedVolume:
    """A volume after the 3D preprocessing and the in-plane crop, ready to slice."""

    image: np.ndarray  # float32 [X,Y,Z] in [-1, 1] (RAS axes)
    mask: np.ndarray  # uint8 [X,Y,Z]
    spacing: list[float]  # mm per RAS axis
    notes: list[str]


@dataclass
class Slice2D:
    index: int  # position along the slicing axis (after resampling)
    fitted: FittedImage  # image [1,H,W], mask [H,W], spacing [sy, sx] mm, pixels lost to pad_crop


def prepare_volume(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    lo: float,
    hi: float,
    spacing: tuple[float, float, float] | None,
    axis: int,
    margin: int,
    crop: str = "foreground",
) -> PreparedVolume:
    """3D preprocessing, then an in-plane crop to the foreground (the slicing `axis` kept whole)."""
    img, msk = orient_and_resample(image, mask, affine, lo=lo, hi=hi, spacing=spacing)
    nonzero = orient_and_resample_labels((image != 0).astype(np.uint8), affine, spacing) if crop == "nonzero" else None
    img, msk, notes = crop_case(img, msk, crop, margin, nonzero, keep_axis=axis)
    return PreparedVolume(
        image=np.clip(img[0].detach().cpu().numpy().astype(np.float32), -1.0, 1.0),
        mask=np.rint(msk[0].detach().cpu().numpy()).astype(np.uint8),
        spacing=affine_spacing(np.asarray(img.affine, dtype=np.float64)),
        notes=notes,
    )


def slice_to_display(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice `index` along RAS `axis` of [X,Y,Z] as a 2D [rows, cols] array (see the module docstring)."""
    plane = np.take(array, index, axis=axis)  # [p, q]
    return np.ascontiguousarray(plane.T[::-1, :])


def in_plane_spacing(spacing: list[float], axis: int) -> tuple[float, float]:
    """(sy, sx) in mm of slices along `axis`: rows follow the second in-plane axis, columns the first."""
    p, q = [spacing[a] for a in range(3) if a != axis]
    return q, p


def select_slices(
    mask: np.ndarray, axis: int, foreground_only: bool, max_slices: int | None
) -> list[int]:
    """Slice indices along `axis`: all, or those with foreground; at most `max_slices`, evenly spaced."""
    n = mask.shape[axis]
    if foreground_only:
        other = tuple(a for a in range(3) if a != axis)
        indices = np.flatnonzero((mask > 0).any(axis=other)).tolist()
    else:
        indices = list(range(n))
    if max_slices is not None and len(indices) > max_slices:
        picks = np.round(np.linspace(0, len(indices) - 1, max_slices)).astype(int)
        indices = [indices[i] for i in picks]
    return indices


def central_slices(indices: list[int], count: int) -> list[int]:
    """The `count` central entries of `indices` (all of them when there are fewer)."""
    if len(indices) <= count:
        return list(indices)
    start = (len(indices) - count) // 2
    return list(indices[start : start + count])


def slices_of_volume(
    volume: PreparedVolume, axis: int, indices: list[int], shape: tuple[int, int], shape_mode: str
) -> list[Slice2D]:
    """The chosen slices of `volume`, each fitted to `shape` by `shape_mode`."""
    spacing = in_plane_spacing(volume.spacing, axis)
    out = []
    for i in indices:
        image = slice_to_display(volume.image, axis, i)[None]
        mask = slice_to_display(volume.mask, axis, i)
        out.append(Slice2D(i, fit_to_shape(image, mask, shape, shape_mode, spacing)))
    return out


def mosaic_of_volume(
    volume: PreparedVolume,
    axis: int,
    indices: list[int],
    grid: tuple[int, int],
    tile: tuple[int, int],
    shape_mode: str,
) -> tuple[np.ndarray, np.ndarray, list[int], list[float], int]:
    """Tile the central rows x cols of `indices` into one image.

    Returns:
        (image float32 [1, rows*th, cols*tw], mask uint8 [rows*th, cols*tw], slice indices used in
        tile order, spacing [sy, sx] of a tile pixel in mm, labelled pixels lost to pad_crop).
    """
    rows, cols = grid
    th, tw = tile
    used = central_slices(indices, rows * cols)
    image = np.full((1, rows * th, cols * tw), -1.0, np.float32)
    mask = np.zeros((rows * th, cols * tw), np.uint8)
    spacing = [float(s) for s in in_plane_spacing(volume.spacing, axis)]
    lost = 0
    for k, s in enumerate(slices_of_volume(volume, axis, used, tile, shape_mode)):
        r, c = divmod(k, cols)
        image[:, r * th : (r + 1) * th, c * tw : (c + 1) * tw] = s.fitted.image
        mask[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = s.fitted.mask
        spacing, lost = s.fitted.spacing, lost + s.fitted.foreground_lost
    return image, mask, used, spacing, lost
