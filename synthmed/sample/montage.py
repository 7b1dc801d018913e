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
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == masks.ndim + 1:  # [N, C, ...]: show the first channel
        images = images[:, 0]
    if images.shape != masks.shape or masks.ndim not in (3, 4):
        raise UserError(
            f"montage row {title!r}: expected images [N, C, (D,) H, W] and masks [N, (D,) H, W] with the "
            f"same spatial shape, got images {list(np.shape(images))} and masks {list(masks.shape)}"
        )
    return images, masks


def _draw_panel(ax: plt.Axes, image: np.ndarray, mask: np.ndarray) -> None:
    image_slice, mask_slice = central_slice(image, mask)
    finite = image_slice[np.isfinite(image_slice)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    # Transpose and origin="lower": array axis 0 (R in RAS) runs left to right, axis 1 (A) upwards.
    ax.imshow(image_slice.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    for label in np.unique(mask_slice):
        if label <= 0:
            continue
        colour = LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]
        region = (mask_slice == label).T
        ax.imshow(
            np.ma.masked_where(~region, region),
            cmap=ListedColormap([colour]),
            alpha=OVERLAY_ALPHA,
            origin="lower",
            interpolation="nearest",
        )
        if region.any() and not region.all():
            ax.contour(region.astype(float), levels=[0.5], colors=[colour], linewidths=0.8, origin="lower")


def save_montage(
    path: str | os.PathLike,
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    n_cols: int = 6,
    labels: dict[str, str] | None = None,
) -> Path:
    """Save a grid of central axial slices with the masks overlaid, one row per set.

    Each panel shows one case: the axial slice (last array axis, S in RAS) through the mask centroid
    (the middle slice when the mask is empty), in grayscale scaled to its own 0.5-99.5 percentiles,
    with every foreground label as a translucent fill plus a contour in its own colour. The row title
    ("real", "synthetic", ...) is written on the left. The PNG is written to a temporary name and
    renamed, so a reader never sees a half-written file.

    Args:
        path: output file; the format follows its suffix (``.png`` normally).
        rows: ``(title, images, masks)`` per row; ``images`` ``[N, C, D, H, W]`` (channel 0 is shown)
            or ``[N, D, H, W]``, in any intensity range; ``masks`` ``[N, D, H, W]`` integer labels.
            2D data (``[N, C, H, W]`` and ``[N, H, W]``) works too.
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
                Patch(color=LABEL_COLOURS[(int(v) - 1) % len(LABEL_COLOURS)], label=name)
                for v, name in sorted(labels.items(), key=lambda kv: int(kv[0]))
                if int(v) > 0
            ]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
        fig.tight_layout(rect=(0, 0.05 if labels else 0, 1, 1))

        path = atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path
