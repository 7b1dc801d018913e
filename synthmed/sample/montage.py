"""A montage PNG of image/mask pairs, one row per set (e.g. "real" above "synthetic")."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from synthmed.errors import UserError  # noqa: E402
from synthmed.fileio import atomic_savefig  # noqa: E402

# One colour per foreground label (label 1 gets the first); cycles after 10 labels.
LABEL_COLOURS = plt.get_cmap("tab10").colors
OVERLAY_ALPHA = 0.35
PANEL_INCHES = 1.8


def central_slice(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axial slice (last axis) through the mask centroid, or the middle one if the mask is empty.

    Args:
        image: ``[D, H, W]`` (or ``[H, W]`` for 2D data, returned as is).
        mask: same shape as ``image``.

    Returns:
        ``(image_slice, mask_slice)``, each ``[D, H]``.
    """
    if image.ndim == 2:
        return image, mask
    foreground = np.argwhere(mask > 0)
    k = int(round(foreground[:, -1].mean())) if len(foreground) else image.shape[-1] // 2
    return image[..., k], mask[..., k]


def _as_cases(title: str, images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images as ``[N, C, (D,) H, W]`` (a channel axis added when missing) and masks ``[N, (D,) H, W]``."""
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == masks.ndim:  # [N, (D,) H, W]: one channel
        images = images[:, None]
    if images.ndim != masks.ndim + 1 or images.shape[2:] != masks.shape[1:] or masks.ndim not in (3, 4) \
            or len(images) != len(masks):
        raise UserError(
            f"montage row {title!r}: expected images [N, C, (D,) H, W] and masks [N, (D,) H, W] with the "
            f"same spatial shape, got images {list(np.shape(images))} and masks {list(masks.shape)}"
        )
    return images, masks


def display_pair(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(pixels, mask, origin) of one case, ready for ``imshow(..., origin=origin)``.

    3D (``image [C, D, H, W]``): the central axial slice of channel 0, transposed so that array axis 0
    (R in RAS) runs left to right and axis 1 (A) upwards (origin "lower"). 2D (``image [C, H, W]``):
    as stored, row 0 at the top (origin "upper"), like any image viewer; 3 channels are shown as RGB,
    scaled to [0, 1] by their joint 0.5-99.5 percentiles; otherwise channel 0 in grey.
    """
    if mask.ndim == 3:
        pixels, mask_slice = central_slice(image[0], mask)
        return pixels.T, mask_slice.T, "lower"
    if image.shape[0] != 3:
        return image[0], mask, "upper"
    rgb = np.moveaxis(image, 0, -1).astype(np.float64)
    lo, hi = _percentile_range(rgb)
    return np.clip((rgb - lo) / (hi - lo), 0.0, 1.0), mask, "upper"


def _percentile_range(pixels: np.ndarray) -> tuple[float, float]:
    finite = pixels[np.isfinite(pixels)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def label_colour(label: int) -> tuple[float, float, float]:
    """The one colour of a foreground label in every figure (label 1 gets tab10's first)."""
    return LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]


def label_rgb(mask: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` image of a 2D label mask: background black, each label its fixed `label_colour`."""
    out = np.zeros((*mask.shape, 3))
    for label in np.unique(mask):
        if label > 0:
            out[mask == label] = label_colour(label)
    return out


def _draw_panel(ax: plt.Axes, image: np.ndarray, mask: np.ndarray) -> None:
    pixels, mask_slice, origin = display_pair(image, mask)
    if pixels.ndim == 3:  # RGB, already in [0, 1]
        ax.imshow(pixels, origin=origin, interpolation="nearest")
    else:
        lo, hi = _percentile_range(pixels)
        ax.imshow(pixels, cmap="gray", vmin=lo, vmax=hi, origin=origin, interpolation="nearest")
    for label in np.unique(mask_slice):
        if label <= 0:
            continue
        colour = label_colour(label)
        region = mask_slice == label
        ax.imshow(np.ma.masked_where(~region, region), cmap=ListedColormap([colour]), alpha=OVERLAY_ALPHA,
                  origin=origin, interpolation="nearest")
        if region.any() and not region.all():
            # no `origin` here: contour's default puts Z[i, j] at (j, i), where imshow draws that pixel either way
            ax.contour(region.astype(float), levels=[0.5], colors=[colour], linewidths=0.8)


def save_montage(
    path: str | os.PathLike,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    n_cols: int = 6,
    labels: dict[str, str] | None = None,
) -> Path:
    """Save a grid of central axial slices with the masks overlaid, one row per set.

    Each panel shows one case: for 3D, the axial slice (last array axis, S in RAS) through the mask
    centroid (the middle slice when the mask is empty); for 2D, the image as stored (row 0 on top),
    RGB in colour (see `display_pair`); grey levels scaled to the panel's own 0.5-99.5 percentiles,
    with every foreground label as a translucent fill plus a contour in its own colour. The row title
    ("real", "synthetic", ...) is written on the left. The PNG is written to a temporary name and
    renamed, so a reader never sees a half-written file.

    Args:
        path: output file; the format follows its suffix (``.png`` normally).
        rows: ``(title, images, masks)`` per row; ``images`` ``[N, C, D, H, W]`` (channel 0 is shown)
            or ``[N, D, H, W]``, in any intensity range; ``masks`` ``[N, D, H, W]`` integer labels.
            2D data (``[N, C, H, W]`` and ``[N, H, W]``) works too; C = 3 is drawn as RGB.
        n_cols: at most this many cases per row (the first ones).
        labels: optional manifest labels (str(int) -> name) for a colour legend.

    Returns:
        ``path`` as a Path.

    Raises:
        UserError: no rows, ``n_cols < 1``, or images and masks of a row do not match.
    """
    if not rows:
        raise UserError("save_montage: no rows to draw")
    if n_cols < 1:
        raise UserError(f"save_montage: n_cols must be at least 1, got {n_cols}")
    cases = [(title, *_as_cases(title, images, masks)) for title, images, masks in rows]
    n_rows = len(cases)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(PANEL_INCHES * n_cols + 0.6, PANEL_INCHES * n_rows), squeeze=False
    )
    try:
        for r, (title, images, masks) in enumerate(cases):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(images):
                    _draw_panel(ax, images[c], masks[c])
                else:  # fewer cases than columns: a blank panel (kept as axes so the row title shows)
                    for spine in ax.spines.values():
                        spine.set_visible(False)
            shown = min(len(images), n_cols)
            count = f"n={len(images)}" if shown == len(images) else f"{shown} of {len(images)}"
            axes[r, 0].set_ylabel(f"{title} ({count})", fontsize=11)
        if labels:
            from matplotlib.patches import Patch

            handles = [
                Patch(color=label_colour(int(v)), label=name)
                for v, name in sorted(labels.items(), key=lambda kv: int(kv[0]))
                if int(v) > 0
            ]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
        fig.tight_layout(rect=(0, 0.05 if labels else 0, 1, 1))

        path = atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path
